"""Files → frames (nnpes/data/io.py): bad files fail with one line naming the file and frame;
labels convert correctly (virial → stress, Voigt → 3×3). Host-side: no model is compiled."""

from __future__ import annotations

from importlib import resources

import ase
import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from nnpes.data.graph import (
    frame_to_graph,
    species_indices,
)
from nnpes.data.io import MIN_DISTANCE_A, FoundKeys, frame_from_atoms, keys_found, label_keys_found, read_frames
from nnpes.errors import DataError, ModelError

pytestmark = pytest.mark.usefixtures("debug_nans")


# -- helpers -------------------------------------------------------------------------------------
def water(energy=-14.0, forces=None, shift=0.0) -> ase.Atoms:
    atoms = ase.build.molecule("H2O")
    atoms.positions += shift
    forces = np.zeros((3, 3)) if forces is None else forces
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def write_with_bad_frame(path, bad: ase.Atoms, index: int = 2, n: int = 4) -> str:
    """An extxyz file of n good water frames with `bad` at position `index`."""
    frames = [water(shift=0.01 * i) for i in range(n)]
    frames[index] = bad
    ase.io.write(path, frames, format="extxyz")
    return str(path)


def assert_one_line_error(err, *fragments):
    message = str(err.value)
    assert "\n" not in message, f"error spans several lines: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


# -- bad input -------------------------------------------------------------------------------------
def _nan_positions():
    atoms = water()
    atoms.positions[1, 2] = np.nan
    return atoms


def _inf_positions():
    atoms = water()
    atoms.positions[0, 0] = np.inf
    return atoms


BAD_FRAMES = {
    "nan_positions": (_nan_positions, "positions"),
    "inf_positions": (_inf_positions, "positions"),
    "nan_energy": (lambda: water(energy=np.nan), "energy"),
    "inf_energy": (lambda: water(energy=np.inf), "energy"),
    "nan_forces": (lambda: water(forces=np.array([[0, 0, 0], [0, np.nan, 0], [0, 0, 0]])), "forces"),
    "inf_forces": (lambda: water(forces=np.array([[0, 0, -np.inf], [0, 0, 0], [0, 0, 0]])), "forces"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_non_finite_values_raise_naming_file_and_frame(tmp_path, case):
    make, what = BAD_FRAMES[case]
    path = write_with_bad_frame(tmp_path / f"{case}.xyz", make())
    with pytest.raises(DataError) as err:
        read_frames(path)
    assert_one_line_error(err, path, "frame 2", what)


def test_wrong_forces_shape_raises(tmp_path):
    path = tmp_path / "forces2.xyz"
    path.write_text(
        '2\nProperties=species:S:1:pos:R:3:forces:R:2 energy=-1.0 pbc="F F F"\n'
        "H 0.0 0.0 0.0 0.1 0.2\nH 0.0 0.0 0.74 -0.1 -0.2\n"
    )
    with pytest.raises(DataError) as err:
        read_frames(path)
    assert_one_line_error(err, str(path), "frame 0", "shape (2, 2)", "(2, 3)")


def test_missing_required_label_raises_naming_label_and_key(tmp_path):
    frames = [water() for _ in range(3)]
    no_forces = ase.build.molecule("H2O")
    no_forces.calc = SinglePointCalculator(no_forces, energy=-14.0)
    frames[1] = no_forces
    path = str(tmp_path / "missing.xyz")
    ase.io.write(path, frames, format="extxyz")
    read_frames(path, require=("energy",))  # energy is everywhere: fine
    with pytest.raises(DataError) as err:
        read_frames(path, require=("energy", "forces"))
    assert_one_line_error(err, path, "frame 1", "'forces'")


def write_ref_keys_copy(path, n: int = 3) -> str:
    """Ethanol frames with labels under MACE-style keys: info REF_energy, arrays REF_forces."""
    images = ase.io.read(resources.files("nnpes.data") / "files" / "ethanol_test.xyz", index=f":{n}")
    for a in images:
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces()
        a.calc = None
    ase.io.write(path, images, format="extxyz")
    return str(path)


def test_missing_labels_are_listed_at_once_with_the_keys_the_frame_has(tmp_path):
    path = write_ref_keys_copy(tmp_path / "ref.xyz")
    with pytest.raises(DataError) as err:
        read_frames(path, require=("energy", "forces"))  # as training reads
    assert_one_line_error(
        err,
        f"{path}: frame 0: labels 'energy' (key 'energy'), 'forces' (key 'forces') are missing",
        "info keys [REF_energy, ",
        "per-atom keys [REF_forces]",
        "data.energy_key/data.forces_key",
        "--energy-key/--forces-key",
    )
    frames = read_frames(path, energy_key="REF_energy", forces_key="REF_forces", require=("energy", "forces"))
    assert len(frames) == 3 and frames[0].forces.shape == (9, 3)


def test_missing_stress_names_stress_and_virial_keys(tmp_path):
    path = str(tmp_path / "cu.xyz")
    ase.io.write(path, ase.build.bulk("Cu", "fcc", a=3.6, cubic=True), format="extxyz")
    with pytest.raises(DataError) as err:
        read_frames(path, require=("stress",), stress_key="REF_stress")
    assert_one_line_error(err, "label 'stress' (key 'REF_stress' or 'virial') is missing", "--stress-key/--virial-key")


def test_label_keys_found_lists_info_per_atom_and_calculator_keys():
    atoms = water()
    atoms.info["REF_energy"] = -1.0
    atoms.arrays["REF_forces"] = np.zeros((3, 3))
    found = label_keys_found(atoms)
    assert found == FoundKeys(info=("REF_energy",), per_atom=("REF_forces",), calculator=("energy", "forces"))
    assert str(found) == "info keys [REF_energy], per-atom keys [REF_forces], calculator keys [energy, forces]"
    assert str(label_keys_found(ase.build.molecule("H2O"))) == "no info, per-atom or calculator keys"


def test_frames_remember_the_keys_their_file_offered(tmp_path):
    path = write_ref_keys_copy(tmp_path / "ref.xyz", n=2)
    frames = read_frames(path)
    assert "REF_energy" in frames[0].found_keys.info and frames[1].found_keys.per_atom == ("REF_forces",)
    cu = frame_from_atoms(ase.build.bulk("Cu"), source="mem")
    assert keys_found(frames + [cu]).all() == tuple(sorted({*frames[0].found_keys.info, "REF_forces"}))
    assert frame_to_graph(frames[0], 3.0, (1, 6, 8)).found_keys == frames[0].found_keys


def test_unknown_required_label_is_refused(tmp_path):
    path = str(tmp_path / "ok.xyz")
    ase.io.write(path, [water()], format="extxyz")
    with pytest.raises(DataError) as err:
        read_frames(path, require=("charges",))
    assert_one_line_error(err, "charges")


def test_labels_are_read_from_custom_keys(tmp_path):
    atoms = ase.build.molecule("H2O")
    atoms.info["REF_energy"] = -14.5
    atoms.arrays["REF_forces"] = np.arange(9.0).reshape(3, 3)
    path = str(tmp_path / "custom.xyz")
    ase.io.write(path, atoms, format="extxyz")
    (frame,) = read_frames(path, energy_key="REF_energy", forces_key="REF_forces", require=("energy", "forces"))
    assert frame.energy == -14.5
    np.testing.assert_array_equal(frame.forces, np.arange(9.0).reshape(3, 3))


def test_unknown_element_raises_naming_element_file_and_frame(tmp_path):
    frames = [water(), water()]
    frames[1] = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    path = str(tmp_path / "with_cu.xyz")
    ase.io.write(path, frames, format="extxyz")
    bad = read_frames(path)[1]
    with pytest.raises(ModelError) as err:
        frame_to_graph(bad, 3.0, atomic_numbers=(1, 8))
    assert_one_line_error(err, path, "frame 1", "Cu")


def test_species_lookup_names_every_unknown_element():
    with pytest.raises(ModelError) as err:
        species_indices(np.array([1, 8, 79, 29, 79]), (1, 8), "ase.Atoms")
    assert_one_line_error(err, "ase.Atoms", "Au", "Cu")


def test_dummy_element_raises(tmp_path):
    path = tmp_path / "dummy.xyz"
    path.write_text('2\nProperties=species:S:1:pos:R:3 pbc="F F F"\nH 0 0 0\nX 0 0 1\n')
    with pytest.raises(DataError) as err:
        read_frames(path)
    assert_one_line_error(err, str(path), "frame 0", "atomic numbers")


@pytest.mark.parametrize("periodic_image", [False, True])
def test_atoms_closer_than_min_distance_raise(tmp_path, periodic_image):
    if periodic_image:  # 0.02 Å and L − 0.03 Å along x are 0.05 Å apart through the boundary
        bad = ase.Atoms("Cu2", positions=[[0.02, 1.0, 1.0], [3.57, 1.0, 1.0]], cell=[3.6, 3.6, 3.6], pbc=True)
    else:
        bad = ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.5 * MIN_DISTANCE_A]])
    path = str(tmp_path / "close.xyz")
    ase.io.write(path, [water(), bad], format="extxyz")
    with pytest.raises(DataError) as err:
        read_frames(path)
    assert_one_line_error(err, path, "frame 1", "closer than")


@pytest.mark.parametrize(
    "cell", [np.zeros((3, 3)), np.array([[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]])], ids=["zero", "coplanar"]
)
def test_periodic_frame_with_singular_cell_raises(tmp_path, cell):
    bad = ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=cell, pbc=True)
    path = str(tmp_path / "singular.xyz")
    ase.io.write(path, [water(), water(), bad], format="extxyz")
    with pytest.raises(DataError) as err:
        read_frames(path)
    assert_one_line_error(err, path, "frame 2", "singular cell")


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.xyz"
    path.write_text("")
    with pytest.raises(DataError) as err:
        read_frames(path)
    assert_one_line_error(err, str(path))


def test_missing_file_raises(tmp_path):
    path = str(tmp_path / "nowhere.xyz")
    with pytest.raises(DataError) as err:
        read_frames(path)
    assert_one_line_error(err, path, "no such file")


def test_garbage_file_raises(tmp_path):
    path = tmp_path / "garbage.xyz"
    path.write_text("this is not\nan xyz file\n")
    with pytest.raises(DataError) as err:
        read_frames(path)
    assert_one_line_error(err, str(path))


# -- label conversion ----------------------------------------------------------------------------
def test_virial_converts_to_stress_with_ase_sign(tmp_path):
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    virial = np.array([[1.0, 0.2, 0.3], [0.2, 2.0, 0.4], [0.3, 0.4, 3.0]])  # eV
    atoms.info["virial"] = virial
    path = str(tmp_path / "virial.xyz")
    ase.io.write(path, atoms, format="extxyz")
    (frame,) = read_frames(path, require=("stress",))
    np.testing.assert_allclose(frame.stress, -virial / atoms.get_volume(), rtol=1e-12)


def test_virial_in_voigt_order_converts_to_stress(tmp_path):
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.info["virial"] = np.array([1.0, 2.0, 3.0, 0.4, 0.3, 0.2])  # xx yy zz yz xz xy
    frame = frame_from_atoms(atoms, source="mem")
    expected = -np.array([[1.0, 0.2, 0.3], [0.2, 2.0, 0.4], [0.3, 0.4, 3.0]]) / atoms.get_volume()
    np.testing.assert_allclose(frame.stress, expected, rtol=1e-12)


def test_stress_in_voigt_order_becomes_symmetric_matrix(tmp_path):
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    voigt = np.array([0.1, 0.2, 0.3, 0.04, 0.05, 0.06])
    atoms.calc = SinglePointCalculator(atoms, energy=-10.0, stress=voigt)
    path = str(tmp_path / "stress.xyz")
    ase.io.write(path, atoms, format="extxyz")
    (frame,) = read_frames(path)
    expected = np.array([[0.1, 0.06, 0.05], [0.06, 0.2, 0.04], [0.05, 0.04, 0.3]])
    np.testing.assert_allclose(frame.stress, expected, rtol=1e-12)
    np.testing.assert_allclose(frame.to_atoms().get_stress(), voigt, rtol=1e-12)  # and back


def test_virial_of_a_molecule_is_refused():
    atoms = ase.build.molecule("H2O")
    atoms.info["virial"] = np.eye(3)
    with pytest.raises(DataError) as err:
        frame_from_atoms(atoms, source="mol.xyz", index=3)
    assert_one_line_error(err, "mol.xyz", "frame 3", "virial")


def test_packaged_ethanol_frames_are_complete():
    for name in ("ethanol_train.xyz", "ethanol_test.xyz"):
        path = resources.files("nnpes.data") / "files" / name
        frames = read_frames(str(path), require=("energy", "forces"))
        assert len(frames) == 100
        assert all(f.n_atoms == 9 and not f.periodic for f in frames)


def test_shared_ci_files_read_with_stress(shared_data):
    frames = read_frames(shared_data / "ci" / "hfo2.xyz", require=("energy", "forces", "stress"))
    assert len(frames) == 10
    for f in frames:
        assert f.stress.shape == (3, 3) and np.allclose(f.stress, f.stress.T)
