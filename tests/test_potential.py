"""Potential persistence: save/load round trips exactly, the format is versioned, bad model
directories fail with one line, and saving is atomic."""

from __future__ import annotations

import json
import os

import ase.build
import flax.serialization
import jax
import numpy as np
import pytest
from helpers import TINY_CUTOFF, TINY_MODELS

import nnpes
from nnpes.errors import ModelError
from nnpes.potential import FORMAT_VERSION

pytestmark = pytest.mark.usefixtures("debug_nans")

# The same construction as the potentials of test_physics.py, so that in one pytest session the
# calculator below reuses the functions compiled there.
SPECIES = (1, 6, 8, 29)
E0 = {1: -1.5, 6: -2.0, 8: -3.0, 29: -4.0}


def make_potential(family: str, seed: int = 1) -> nnpes.Potential:
    return nnpes.Potential.create(
        TINY_MODELS[family](), SPECIES, TINY_CUTOFF, seed=seed, e0=E0, scale=0.5, avg_num_neighbors=6.0
    )


def cell() -> ase.Atoms:
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[0] = 8
    atoms.rattle(0.1, seed=1)
    return atoms


def predict(potential_or_dir):
    atoms = cell()
    atoms.calc = nnpes.Calculator(potential_or_dir, dtype="float64")
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()


@pytest.fixture(scope="module")
def potential() -> nnpes.Potential:
    return make_potential("nequip")


def no_temporary_dirs(parent) -> bool:
    return not [name for name in os.listdir(parent) if name.startswith((".tmp-model-", ".old-model-"))]


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_save_load_round_trip_gives_identical_energies(tmp_path, family):
    original = make_potential(family)
    original.save(tmp_path / "model")
    loaded = nnpes.load(tmp_path / "model")

    assert loaded.model == original.model
    assert loaded.atomic_numbers == original.atomic_numbers and loaded.cutoff == original.cutoff
    assert loaded.avg_num_neighbors == original.avg_num_neighbors and loaded.e0_method == original.e0_method
    np.testing.assert_array_equal(loaded.e0, original.e0)
    np.testing.assert_array_equal(loaded.scale, original.scale)
    same = jax.tree.map(lambda a, b: a.dtype == b.dtype and np.array_equal(a, b), loaded.params, original.params)
    assert all(jax.tree.leaves(same))

    e_orig, f_orig, s_orig = predict(original)
    e_load, f_load, s_load = predict(str(tmp_path / "model"))  # the calculator loads the directory itself
    assert abs(e_orig - e_load) == 0.0
    assert np.abs(f_orig - f_load).max() == 0.0 and np.abs(s_orig - s_load).max() == 0.0
    assert np.abs(f_orig).max() > 0


def test_saved_metadata_records_format_and_package_versions(tmp_path, potential):
    potential.save(tmp_path / "model")
    assert sorted(os.listdir(tmp_path / "model")) == ["params.msgpack", "potential.json"]
    meta = json.loads((tmp_path / "model" / "potential.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["nnpes_version"] == nnpes.__version__
    assert meta["family"] == "nequip"
    assert meta["atomic_numbers"] == list(SPECIES) and meta["cutoff_a"] == TINY_CUTOFF
    assert meta["e0_ev"] == [E0[z] for z in SPECIES]


def test_load_finds_the_model_inside_a_run_directory(tmp_path, potential):
    potential.save(tmp_path / "run" / "model")
    assert nnpes.load(tmp_path / "run").model == potential.model


def _break_json(d):
    (d / "potential.json").write_text("{not json")


def _old_format(d):
    meta = json.loads((d / "potential.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (d / "potential.json").write_text(json.dumps(meta))


def _unknown_family(d):
    meta = json.loads((d / "potential.json").read_text())
    meta["family"] = "transformer"
    meta["model_class"] = "no_such_package.models:Transformer"
    (d / "potential.json").write_text(json.dumps(meta))


def _weights_do_not_fit(d):
    meta = json.loads((d / "potential.json").read_text())
    meta["hyperparameters"]["channels"] += 1
    (d / "potential.json").write_text(json.dumps(meta))


def _bad_hyperparameter(d):
    meta = json.loads((d / "potential.json").read_text())
    meta["hyperparameters"]["num_layers"] = 0
    (d / "potential.json").write_text(json.dumps(meta))


def _no_params(d):
    (d / "params.msgpack").unlink()


def _truncated_params(d):
    data = (d / "params.msgpack").read_bytes()
    (d / "params.msgpack").write_bytes(data[: len(data) // 3])


BROKEN = {
    "empty_dir": (lambda d: [p.unlink() for p in d.iterdir()], "not a model directory"),
    "invalid_json": (_break_json, "potential.json"),
    "future_format": (_old_format, "format_version"),
    "unknown_family": (_unknown_family, "transformer"),
    "missing_params": (_no_params, "params.msgpack"),
    "truncated_params": (_truncated_params, "params.msgpack"),
    "weights_do_not_fit": (_weights_do_not_fit, "weights do not fit the hyper-parameters"),
    "bad_hyperparameter": (_bad_hyperparameter, "num_layers"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_loading_a_broken_model_directory_raises_one_line_model_error(tmp_path, potential, case):
    directory = tmp_path / "model"
    potential.save(directory)
    breaker, fragment = BROKEN[case]
    breaker(directory)
    with pytest.raises(ModelError) as err:
        nnpes.load(directory)
    message = str(err.value)
    assert "\n" not in message and str(directory) in message and fragment in message


def test_loading_a_missing_directory_raises_model_error(tmp_path):
    with pytest.raises(ModelError) as err:
        nnpes.load(tmp_path / "nothing-here")
    assert "\n" not in str(err.value) and "nothing-here" in str(err.value)


def test_saving_over_an_existing_model_replaces_it_and_leaves_no_temporary_dirs(tmp_path, potential):
    directory = tmp_path / "model"
    make_potential("nequip", seed=5).save(directory)
    (directory / "stale.txt").write_text("from an older save")
    potential.save(directory)
    assert sorted(os.listdir(directory)) == ["params.msgpack", "potential.json"]
    assert sorted(os.listdir(tmp_path)) == ["model"]
    reloaded = jax.tree.leaves(nnpes.load(directory).params)
    assert all(np.array_equal(a, b) for a, b in zip(reloaded, jax.tree.leaves(potential.params)))


def test_failed_save_keeps_the_previous_model_and_leaves_no_temporary_dirs(tmp_path, potential, monkeypatch):
    directory = tmp_path / "model"
    potential.save(directory)
    before = {name: (directory / name).read_bytes() for name in os.listdir(directory)}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(flax.serialization, "to_bytes", fail)
    with pytest.raises(OSError):
        make_potential("nequip", seed=5).save(directory)
    assert {name: (directory / name).read_bytes() for name in os.listdir(directory)} == before
    assert no_temporary_dirs(tmp_path), os.listdir(tmp_path)


@pytest.mark.parametrize("what", ["folder", "file"])
def test_saving_over_something_that_is_not_a_model_is_refused_and_leaves_it_alone(tmp_path, potential, what):
    target = tmp_path / "runs"
    if what == "folder":  # e.g. potential.save("runs") or a home directory: nothing in it may be lost
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    else:
        target.write_text("mine")
    with pytest.raises(ModelError) as err:
        potential.save(target)
    assert "\n" not in str(err.value) and "not overwritten" in str(err.value) and str(target) in str(err.value)
    assert (target / "notes.txt" if what == "folder" else target).read_text() == "mine"
    assert no_temporary_dirs(tmp_path), os.listdir(tmp_path)


def test_saving_into_an_empty_folder_is_fine(tmp_path, potential):
    (tmp_path / "model").mkdir()
    potential.save(tmp_path / "model")
    assert sorted(os.listdir(tmp_path / "model")) == ["params.msgpack", "potential.json"]
