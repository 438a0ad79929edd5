"""MD options (nnpes.md.config) are validated with one-line errors naming the key, and both
backends and the CLI take their ensembles from the one table (nnpes.md.ensembles)."""

from __future__ import annotations

import argparse

import numpy as np
import pydantic
import pytest
from md_models import random_gas

from nnpes.errors import ConfigError
from nnpes.md import MDConfig, MDOptions, run, run_ase, simulation
from nnpes.md.ensembles import ENSEMBLE_NAMES, ENSEMBLES, THERMOSTATS


def test_md_options_is_the_validated_config_with_the_same_fields_and_defaults():
    assert MDOptions is MDConfig
    options = MDOptions()
    assert options.model_dump() == {
        "ensemble": "nve",
        "thermostat": "langevin",
        "dt_fs": 0.5,
        "temperature_k": 300.0,
        "pressure_bar": 1.01325,
        "tau_t_fs": 100.0,
        "tau_p_fs": 1000.0,
        "seed": 0,
        "dtype": "float32",
        "skin_a": 1.0,
        "capacity_multiplier": 1.5,
        "every": 10,
        "max_temperature_k": None,
        "uncertainty_threshold_ev_a": None,
        "stop_on_uncertainty": False,
    }
    assert MDOptions(ensemble="nvt", dt_fs=0.5).ensemble == "nvt"
    assert options.replace(dt_fs=1.0).dt_fs == 1.0 and options.dt_fs == 0.5
    with pytest.raises(pydantic.ValidationError):
        options.dt_fs = 2.0  # frozen


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtt_fs": 1.0}, "md: unknown key 'dtt_fs'"),
        ({"dt_fs": -1.0}, "md: key 'dt_fs': Input should be greater than 0 (got -1.0)"),
        ({"every": 0}, "md: key 'every'"),
        ({"ensemble": "nvx"}, "md: key 'ensemble'"),
        ({"thermostat": "berendsen"}, "md: key 'thermostat'"),
        ({"ensemble": "nvt", "temperature_k": 0.0}, "md: key 'temperature_k': must be > 0 K for nvt"),
        ({"skin_a": -0.1}, "md: key 'skin_a'"),
    ],
)
def test_md_config_refuses_unknown_keys_and_bad_values_in_one_line_naming_the_key(kwargs, message):
    with pytest.raises(ConfigError) as err:
        MDConfig(**kwargs)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_overrides_are_validated_too(pair_potential):
    with pytest.raises(ConfigError, match="md: key 'dt_fs'"):
        MDOptions().replace(dt_fs=-1.0)
    with pytest.raises(ConfigError, match="md: unknown key 'dtt_fs'"):
        simulation(pair_potential, random_gas(8, 10.0), MDOptions(), dtt_fs=1.0)


def test_cli_and_config_choices_are_the_table_keys():
    from nnpes.cli import md as cli

    parser = argparse.ArgumentParser(prog="nnpes")
    md = cli.register(parser.add_subparsers(dest="command"))
    choices = {a.dest: tuple(a.choices) for a in md._actions if a.choices}
    assert choices["ensemble"] == ENSEMBLE_NAMES == tuple(dict.fromkeys(name for name, _ in ENSEMBLES))
    assert choices["thermostat"] == THERMOSTATS
    for name, thermostat in ENSEMBLES:
        MDConfig(ensemble=name, **({"thermostat": thermostat} if thermostat else {}))


@pytest.mark.parametrize("key", list(ENSEMBLES), ids=lambda k: "-".join(filter(None, k)))
def test_every_table_entry_runs_on_both_backends(pair_potential, key):
    ensemble, thermostat = key
    gas = random_gas(n_atoms=16, side=8.0, seed=2)
    options = MDOptions(
        ensemble=ensemble,
        thermostat=thermostat or "langevin",
        dt_fs=0.5,
        temperature_k=300.0,
        dtype="float64",
        skin_a=0.5,
        every=2,
        tau_t_fs=50.0,
        tau_p_fs=200.0,
    )
    jaxmd = run(simulation(pair_potential, gas, options), 4, chunk_steps=4)
    ase_result = run_ase(pair_potential, gas, 4, options)
    assert len(jaxmd.time_fs) == 3  # steps 0, 2, 4, recorded once each by both backends
    np.testing.assert_array_equal(ase_result.time_fs, jaxmd.time_fs)
    for result in (jaxmd, ase_result):
        assert result.ensemble == ensemble and result.time_fs[-1] == pytest.approx(2.0)
        assert np.all(np.isfinite(result.etot)) and np.all(np.isfinite(result.pressure_bar))
    assert (jaxmd.backend, ase_result.backend) == ("jax-md", "ase")
    # the same start: both backends agree on the step-0 frame (forces differ under Langevin,
    # where ASE's FixCom constraint removes the net force)
    np.testing.assert_allclose(jaxmd.epot[0], ase_result.epot[0], rtol=1e-10)
    np.testing.assert_allclose(jaxmd.ekin[0], ase_result.ekin[0], rtol=1e-10)
    np.testing.assert_allclose(jaxmd.pressure_bar[0], ase_result.pressure_bar[0], rtol=1e-6)


def test_periodic_only_ensembles_refuse_a_molecule_on_both_backends(pair_potential):
    molecule = random_gas(8, 10.0)
    molecule.pbc = False
    for key, entry in ENSEMBLES.items():
        if not entry.periodic:
            continue
        options = MDOptions(ensemble=key[0], dtype="float64")
        with pytest.raises(ConfigError, match="periodic"):
            simulation(pair_potential, molecule, options)
        with pytest.raises(ConfigError, match="periodic"):
            run_ase(pair_potential, molecule, 2, options)


def test_public_names_resolve_to_the_api_not_to_submodules():
    import types

    import nnpes.md
    import nnpes.md.ase_backend  # noqa: E401, F401  (submodules loaded first)
    import nnpes.md.driver
    import nnpes.md.loop

    for name in nnpes.md.__all__:
        assert not isinstance(getattr(nnpes.md, name), types.ModuleType), name
