"""nnpes export: the artefact runs without the model's code and gives the model's numbers.

One module fixture exports a tiny DeepSets potential with a ZBL term once, through the CLI;
every test reads that export (symbolic shapes: structures of any size, no re-export).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import ase.build
import jax
import numpy as np
import pytest
from helpers import TINY_CUTOFF, TINY_MODELS

import nnpes
from nnpes.cli import main
from nnpes.data.graph import species_indices
from nnpes.data.io import matrix_to_voigt
from nnpes.data.neighbors import neighbor_list
from nnpes.electrostatics import Electrostatics
from nnpes.errors import ModelError
from nnpes.export import export
from nnpes.exported import METADATA_FILE, ExportedPotential, program_file
from nnpes.zbl import ZBL

E0 = {1: -13.6, 8: -432.1, 29: -1000.3}  # eV


@pytest.fixture(scope="module")
def source():
    potential = nnpes.Potential.create(
        TINY_MODELS["deepsets"](), [1, 8, 29], TINY_CUTOFF, seed=3, scale=0.3, e0=E0, label_keys={"energy": "REF_e"}
    )
    zbl = ZBL.for_potential(potential.atomic_numbers, potential.cutoff, inner_radius=0.5, outer_radius=1.5)
    return potential.replace(terms=(zbl,))


@pytest.fixture(scope="module")
def paths(source, tmp_path_factory):
    """(model directory, export directory): the model saved, then exported by `nnpes export`."""
    root = tmp_path_factory.mktemp("export")
    source.save(root / "model")
    assert main(["export", str(root / "model"), str(root / "out")]) == 0
    return root / "model", root / "out"


def structures() -> dict:
    """A periodic Cu cell (8 atoms, rattled, one O) and a water molecule: two sizes, both kinds."""
    cu = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
    cu.numbers[5] = 8
    cu.rattle(0.15, seed=1)
    return {"periodic": cu, "molecule": ase.build.molecule("H2O")}


def evaluate(potential, atoms, dtype: str) -> dict:
    """Interaction energy (E − Σ E0), total energy (eV), forces (eV/Å) and stress (eV/Å³)
    through the ASE calculator."""
    atoms = atoms.copy()
    atoms.calc = nnpes.Calculator(potential, dtype=dtype)
    energy = atoms.get_potential_energy()
    out = {"interaction": energy - potential.reference_energy(atoms.numbers), "energy": energy}
    out["forces"] = atoms.get_forces()
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


@pytest.fixture(scope="module")
def results(source, paths) -> dict:
    """{(which, dtype, structure): results} for the source model and its export."""
    exported = nnpes.load(paths[1])
    return {
        (which, dtype, name): evaluate(potential, atoms, dtype)
        for which, potential in (("source", source), ("export", exported))
        for dtype in ("float32", "float64")
        for name, atoms in structures().items()
    }


def relative(a, b) -> float:
    """max |a − b| / max |b|."""
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def test_cli_writes_the_programs_and_their_metadata(paths, source):
    out = paths[1]
    meta = json.loads((out / METADATA_FILE).read_text())
    for dtype in ("float32", "float64"):
        for name in ("site_energies", "energy_forces_stress"):
            assert (out / program_file(name, dtype)).stat().st_size > 0
            assert meta["programs"][name]["files"][dtype] == program_file(name, dtype)
    assert meta["format"] == "nnpes-export" and meta["dtypes"] == ["float32", "float64"]
    assert meta["atomic_numbers"] == [1, 8, 29] and meta["cutoff_a"] == TINY_CUTOFF
    assert meta["e0_ev"] == pytest.approx([E0[1], E0[8], E0[29]], rel=1e-7)
    assert meta["family"] == "deepsets" and meta["terms"] == ["zbl"] and meta["nnpes_version"] == nnpes.__version__
    forces = meta["programs"]["energy_forces_stress"]["outputs"][1]
    assert forces == {"name": "forces", "shape": ["N", 3], "dtype": "float", "unit": "eV/Å", "meaning": "-dE/dR"}
    assert meta["programs"]["site_energies"]["inputs"][0]["shape"] == ["E", 3]
    stablehlo = meta["stablehlo"]  # the bare module for users outside Python: a platform index, then every input
    assert (out / stablehlo["files"]["float64"]).read_bytes().startswith(b"ML\xefR")  # MLIR bytecode
    inputs = [item["name"] for item in meta["programs"]["energy_forces_stress"]["inputs"]]
    assert stablehlo["main_arguments"] == ["platform_index", *inputs] and inputs[0] == "positions"


def test_loaded_export_describes_the_source(paths, source):
    exported = nnpes.load(paths[1])
    assert isinstance(exported, ExportedPotential) and exported.dtypes == ("float32", "float64")
    assert exported.atomic_numbers == source.atomic_numbers and exported.cutoff == source.cutoff
    assert exported.label_key("energy") == "REF_e" and exported.model.family == "deepsets"
    np.testing.assert_array_equal(np.asarray(exported.e0), np.asarray(source.e0))


@pytest.mark.parametrize("name", ["periodic", "molecule"])
def test_float64_export_equals_the_model_to_1e_12(results, name):
    got, want = results["export", "float64", name], results["source", "float64", name]
    for key in want:
        assert relative(got[key], want[key]) < 1e-12, key


@pytest.mark.parametrize("name", ["periodic", "molecule"])
def test_float32_export_equals_the_model_within_float32_round_off(results, name):
    """Energies agree to 1e-6 relative. Forces and stress to 1e-6 of their largest component,
    or, where cancellation makes the model's own float32 error larger than that (two XLA
    compilations of one float32 function round differently), within that error: this random
    tiny model's forces (~0.04 eV/Å) are differences of much larger pair terms. A trained
    model meets 1e-6 outright (the test below)."""
    got, want = results["export", "float32", name], results["source", "float32", name]
    exact = results["source", "float64", name]
    assert relative(got["interaction"], want["interaction"]) < 1e-6
    assert relative(got["energy"], want["energy"]) < 1e-6
    for key in ("forces", "stress") if "stress" in want else ("forces",):
        own_error = relative(want[key], exact[key])
        assert relative(got[key], want[key]) < max(1e-6, 2.0 * own_error), key


TRAINED = os.path.join(os.path.dirname(__file__), "regression", "quickstart_model")  # configs/quickstart.yaml


def two_ethanols_in_a_box():
    """Two shipped ethanol frames in a periodic 7 × 6 × 6.5 Å box: the molecules see each other
    and their images (forces, and a stress)."""
    from importlib import resources

    import ase.io

    frames = ase.io.read(resources.files("nnpes.data") / "files" / "ethanol_test.xyz", index=":2")
    box = frames[0].copy()
    other = frames[1].copy()
    other.positions += [3.0, 0.0, 0.0]
    box += other
    box.cell, box.pbc = np.diag([7.0, 6.0, 6.5]), True
    box.center()
    return box


def test_a_trained_model_exports_to_1e_6_in_float32(tmp_path):
    """The acceptance criterion on a trained model (the regression quickstart NequIP): float32
    energy, forces and stress of the export within 1e-6 relative of the source model's."""
    source = nnpes.load(TRAINED)
    export(source, tmp_path / "out", dtypes="float32")
    exported = nnpes.load(tmp_path / "out")
    assert isinstance(exported, ExportedPotential)
    atoms = two_ethanols_in_a_box()
    got, want = evaluate(exported, atoms, "float32"), evaluate(source, atoms, "float32")
    assert np.abs(want["forces"]).max() > 1.0  # eV/Å: forces of a real structure, not round-off
    for key in want:
        assert relative(got[key], want[key]) < 1e-6, (key, relative(got[key], want[key]))


def test_the_energy_forces_stress_program_equals_the_model(paths, results):
    """The whole-structure program (for users outside Python), float64, with padding pairs."""
    atoms = structures()["periodic"]
    pairs = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, TINY_CUTOFF)
    pad = 7  # capacity beyond the pairs: masked edges
    program = jax.export.deserialize(
        bytearray((paths[1] / program_file("energy_forces_stress", "float64")).read_bytes())
    )
    energy, forces, stress, interaction = program.call(
        np.asarray(atoms.positions),
        np.asarray(atoms.cell.array),
        species_indices(atoms.numbers, (1, 8, 29)),
        np.r_[pairs.senders, np.arange(pad)].astype(np.int32),
        np.r_[pairs.receivers, np.zeros(pad)].astype(np.int32),
        np.r_[pairs.shifts, np.ones((pad, 3))].astype(np.int32),
        np.r_[np.ones(len(pairs.senders)), np.zeros(pad)].astype(bool),
    )
    want = results["source", "float64", "periodic"]
    got = {"energy": energy, "forces": forces, "stress": matrix_to_voigt(stress)}
    for key in got:
        assert relative(got[key], want[key]) < 1e-12, key
    # the calculator's interaction energy is a difference of totals: it is known to 1e-12 of the total
    assert abs(interaction - want["interaction"]) < 1e-12 * abs(want["energy"])


SCRIPT = """
import json, sys
import ase.build, jax, jax.numpy as jnp, numpy as np
import nnpes
from jax_md import space

potential = nnpes.load(sys.argv[1])
atoms = ase.build.molecule("H2O")
atoms.calc = nnpes.Calculator(potential)
out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().tolist()}
neighbor_fn, energy_fn = nnpes.md.energy_neighbor_list(potential, space.free()[0], None, atoms.numbers)
R = jnp.asarray(atoms.positions, jnp.float32)
energy, grad = jax.jit(jax.value_and_grad(energy_fn))(R, neighbor_fn.allocate(R))
out |= {"jaxmd_energy": float(energy), "jaxmd_forces": (-np.asarray(grad, np.float64)).tolist()}
out["models_imported"] = [m for m in sys.modules if m.startswith("nnpes.models")]
print(json.dumps(out))
"""


def test_a_fresh_process_evaluates_the_export_without_model_code(paths, results):
    """Calculator and jax-md adaptor in a new interpreter (float32): nnpes.models is never imported."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(paths[1])], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["models_imported"] == []
    want, exact = results["source", "float32", "molecule"], results["source", "float64", "molecule"]
    tolerance = max(1e-6, 2.0 * relative(want["forces"], exact["forces"]))
    assert abs(out["energy"] - want["energy"]) < 1e-6 * abs(want["interaction"])
    assert relative(out["forces"], want["forces"]) < tolerance
    assert out["jaxmd_energy"] == pytest.approx(want["energy"], rel=1e-6)  # a float32 total: E0 dominates
    assert relative(out["jaxmd_forces"], want["forces"]) < tolerance


def test_export_refuses_an_existing_path_that_is_not_an_export(paths, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["export", str(paths[0]), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an export" in err and "notes.txt" in err
    assert (out / "notes.txt").read_text() == "keep me"


def _copy(paths, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(paths[1], copy)
    return copy


def _one_line_error(path, *words):
    with pytest.raises(ModelError) as error:
        nnpes.load(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and all(w in message for w in words), message


def test_a_corrupt_program_is_one_line_naming_the_file(paths, tmp_path):
    copy = _copy(paths, tmp_path)
    (copy / program_file("site_energies", "float64")).write_bytes(b"\x00not a program" * 10)
    _one_line_error(copy, "site_energies.float64.jax", "not a serialised jax.export program")


def test_corrupt_or_foreign_metadata_is_one_line(paths, tmp_path):
    copy = _copy(paths, tmp_path)
    (copy / METADATA_FILE).write_text("{")
    _one_line_error(copy, METADATA_FILE, "not valid JSON")
    (copy / METADATA_FILE).write_text(json.dumps({"format": "something-else"}))
    _one_line_error(copy, METADATA_FILE, "not an nnpes export")


def test_an_export_without_float64_refuses_float64(paths, tmp_path):
    copy = _copy(paths, tmp_path)
    meta = json.loads((copy / METADATA_FILE).read_text())
    meta["dtypes"] = ["float32"]
    (copy / METADATA_FILE).write_text(json.dumps(meta))
    for name in ("site_energies", "energy_forces_stress"):
        os.remove(copy / program_file(name, "float64"))
    exported = nnpes.load(copy)
    with pytest.raises(ModelError, match="no float64 program"):
        nnpes.Calculator(exported, dtype="float64")


def test_models_with_latent_charges_are_refused(source, tmp_path):
    charged = source.replace(terms=(Electrostatics(),))
    with pytest.raises(ModelError, match="latent charges"):
        export(charged, tmp_path / "out")
    assert not (tmp_path / "out").exists()
