"""The one table of ensembles, shared by the jax-md and the ASE backends.

Each :class:`Ensemble` entry knows how to build jax-md's (init, step) pair, how to build ASE's
dynamics object, how to start jax-md's state (its init signature and the 3N − 3 degrees of
freedom of a thermostat chain), whether it needs a periodic cell and how to read the box of a
state. The table is keyed by (ensemble, thermostat); the thermostat is None for an ensemble
that has one way only. Adding an ensemble or a thermostat is one entry here: the config's
allowed values, the CLI's choices and both backends read this table.

jax-md and ASE's integrators are imported inside the builders (importing jax-md takes seconds,
and the CLI reads this table to list its choices).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from nnpes.errors import ConfigError
from nnpes.md.units import BAR, FS, KB
from nnpes.md.velocities import degrees_of_freedom

if TYPE_CHECKING:
    from nnpes.md.config import MDConfig


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """How both backends run one ensemble.

    Attributes:
        jaxmd: (options, energy_fn, shift_fn) → jax-md (init_fn, apply_fn).
        ase: (atoms, options) → an ASE dynamics object (atoms already carry calculator and momenta).
        start: (init_fn, key, R, box, kT, n_atoms, **kwargs) → jax-md's initial state, its
            degrees of freedom fixed up.
        periodic: the ensemble needs a cell periodic in all directions.
        box: state → (3, 3) box for an ensemble whose box moves (None: the box is fixed).
    """

    jaxmd: Callable
    ase: Callable
    start: Callable
    periodic: bool = False
    box: Callable | None = None


def _times(options: MDConfig):
    """dt, kT, tau_t, tau_p in jax-md units."""
    return options.dt_fs * FS, options.temperature_k * KB, options.tau_t_fs * FS, options.tau_p_fs * FS


# --- NVE: velocity Verlet -------------------------------------------------------------------------


def _nve_jaxmd(options, energy_fn, shift_fn):
    from jax_md import simulate

    return simulate.nve(energy_fn, shift_fn, options.dt_fs * FS)


def _nve_ase(atoms, options):
    from ase.md.verlet import VelocityVerlet

    return VelocityVerlet(atoms, options.dt_fs * FS)


def _nve_start(init_fn, key, R, box, kT, n_atoms, **kwargs):
    return init_fn(key, R, kT, **kwargs)


# --- NVT, Langevin (BAOAB), centre-of-mass momentum removed every step -----------------------------


def _langevin_jaxmd(options, energy_fn, shift_fn):
    import jax.numpy as jnp
    from jax_md import simulate

    dt, kT, tau_t, _ = _times(options)
    init_fn, step_fn = simulate.nvt_langevin(energy_fn, shift_fn, dt, kT, gamma=1.0 / tau_t)

    def langevin_step(state, **kwargs):
        # Langevin noise kicks the centre of mass too; removing its momentum every step keeps
        # the 3N − 3 remaining degrees of freedom at T (a projection of a Gaussian stays Gaussian).
        state = step_fn(state, **kwargs)
        p, m = state.momentum, state.mass
        return state.set(momentum=p - m * jnp.sum(p, axis=0) / jnp.sum(jnp.broadcast_to(m, p[:, :1].shape)))

    return init_fn, langevin_step


def _langevin_ase(atoms, options):
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    atoms.set_constraint(FixCom())  # the centre of mass stays put: 3N − 3 degrees of freedom
    return Langevin(
        atoms,
        options.dt_fs * FS,
        temperature_K=options.temperature_k,
        friction=1.0 / (options.tau_t_fs * FS),
        fixcm=False,
        rng=np.random.default_rng(options.seed),
    )


def _langevin_start(init_fn, key, R, box, kT, n_atoms, **kwargs):
    return init_fn(key, R, **kwargs)


# --- NVT, Nosé–Hoover chain of 3 ------------------------------------------------------------------


def _nose_hoover_jaxmd(options, energy_fn, shift_fn):
    from jax_md import simulate

    dt, kT, tau_t, _ = _times(options)
    return simulate.nvt_nose_hoover(energy_fn, shift_fn, dt, kT, chain_length=3, tau=tau_t)


def _nose_hoover_ase(atoms, options):
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    return NoseHooverChainNVT(
        atoms, options.dt_fs * FS, temperature_K=options.temperature_k, tdamp=options.tau_t_fs * FS
    )


def _nose_hoover_start(init_fn, key, R, box, kT, n_atoms, **kwargs):
    state = init_fn(key, R, **kwargs)
    return state.set(chain=state.chain.set(degrees_of_freedom=degrees_of_freedom(n_atoms)))


# --- NPT, isotropic Nosé–Hoover (jax-md npt_nose_hoover, ASE IsotropicMTKNPT) ----------------------


def _npt_jaxmd(options, energy_fn, shift_fn):
    from jax_md import simulate

    dt, kT, tau_t, tau_p = _times(options)
    return simulate.npt_nose_hoover(
        energy_fn,
        shift_fn,
        dt,
        options.pressure_bar * BAR,
        kT,
        barostat_kwargs={"tau": tau_p},
        thermostat_kwargs={"tau": tau_t},
    )


def _npt_ase(atoms, options):
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    _, _, tau_t, tau_p = _times(options)
    return IsotropicMTKNPT(
        atoms,
        options.dt_fs * FS,
        temperature_K=options.temperature_k,
        pressure_au=options.pressure_bar * BAR,
        tdamp=tau_t,
        pdamp=tau_p,
    )


def _npt_start(init_fn, key, R, box, kT, n_atoms, **kwargs):
    state = init_fn(key, R, box, **kwargs)
    return state.set(thermostat=state.thermostat.set(degrees_of_freedom=degrees_of_freedom(n_atoms)))


def _npt_box(state):
    from jax_md import simulate

    return simulate.npt_box(state)


# --- the table ------------------------------------------------------------------------------------

ENSEMBLES: dict[tuple[str, str | None], Ensemble] = {
    ("nve", None): Ensemble(_nve_jaxmd, _nve_ase, _nve_start),
    ("nvt", "langevin"): Ensemble(_langevin_jaxmd, _langevin_ase, _langevin_start),
    ("nvt", "nose-hoover"): Ensemble(_nose_hoover_jaxmd, _nose_hoover_ase, _nose_hoover_start),
    ("npt", None): Ensemble(_npt_jaxmd, _npt_ase, _npt_start, periodic=True, box=_npt_box),
}

ENSEMBLE_NAMES = tuple(dict.fromkeys(name for name, _ in ENSEMBLES))  # ("nve", "nvt", "npt")
THERMOSTATS = tuple(dict.fromkeys(t for _, t in ENSEMBLES if t is not None))  # ("langevin", "nose-hoover")


def ensemble(options: MDConfig) -> Ensemble:
    """The table entry for the options' ensemble (and thermostat, where the ensemble has several)."""
    return ENSEMBLES.get((options.ensemble, options.thermostat)) or ENSEMBLES[(options.ensemble, None)]


def require_cell(options: MDConfig, periodic: bool, at: str = "ase.Atoms") -> bool:
    """``periodic``, after refusing an ensemble that needs a periodic cell in a structure without one
    (``at``: the structure, named in the error)."""
    if ensemble(options).periodic and not periodic:
        raise ConfigError(f"{at}: ensemble {options.ensemble} needs a cell periodic in all directions")
    return periodic
