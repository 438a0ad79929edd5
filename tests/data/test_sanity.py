"""Unit-mistake warnings (nnpes/data/sanity.py): silent on real data, exactly one line naming
the file for kbar stress, kcal/mol energies and kcal/mol/Å forces. Host-side only."""

from __future__ import annotations

import glob
import warnings
from importlib import resources

import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from nnpes.data.io import read_frames
from nnpes.data.sanity import (
    EV_IN_KCAL_PER_MOL,
    EV_PER_A3_IN_KBAR,
    energy_bound,
    unit_warnings,
    warn_units,
)
from nnpes.errors import LabelWarning

PACKAGED = sorted(glob.glob(str(resources.files("nnpes.data") / "files" / "*.xyz")))
ETHANOL = str(resources.files("nnpes.data") / "files" / "ethanol_test.xyz")


def scaled_copy(src: str, dst, n: int = 10, energy=1.0, forces=1.0, stress=1.0) -> str:
    """The first n frames of src with each label multiplied by a factor (a unit mistake)."""
    images = ase.io.read(src, index=f":{n}")
    for a in images:
        results = {"energy": a.get_potential_energy() * energy, "forces": a.get_forces() * forces}
        if "stress" in a.calc.results:
            results["stress"] = a.get_stress() * stress
        a.calc = SinglePointCalculator(a, **results)
    ase.io.write(dst, images, format="extxyz")
    return str(dst)


def copper_with_stress(path, stress_ev_a3: float = 0.01) -> str:
    """Three strained fcc Cu cells with energies (eV), small forces and a stress (eV/Å³)."""
    images = []
    for i, a in enumerate((3.55, 3.6, 3.65)):
        atoms = ase.build.bulk("Cu", "fcc", a=a, cubic=True)
        voigt = np.full(6, stress_ev_a3 * (i - 1) + 0.002)
        atoms.calc = SinglePointCalculator(atoms, energy=-3.7 * len(atoms), forces=np.zeros((4, 3)), stress=voigt)
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return str(path)


@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: p.rsplit("/", 1)[-1])
def test_packaged_files_raise_no_unit_warning(path):
    assert unit_warnings(read_frames(path)) == []


def test_shared_ci_files_raise_no_unit_warning(shared_data):
    paths = sorted((shared_data / "ci").glob("*.xyz"))
    assert paths
    for path in paths:
        assert unit_warnings(read_frames(path)) == [], path.name


def test_plausible_stress_raises_no_warning(tmp_path):
    assert unit_warnings(read_frames(copper_with_stress(tmp_path / "cu.xyz"))) == []


def test_kbar_stress_gives_one_warning_naming_file(tmp_path):
    ok = copper_with_stress(tmp_path / "cu.xyz")
    path = scaled_copy(ok, tmp_path / "cu_kbar.xyz", stress=EV_PER_A3_IN_KBAR)
    (line,) = unit_warnings(read_frames(path))
    assert path in line and "kbar" in line and "eV/Å³" in line and "\n" not in line


def test_kbar_copy_of_shared_stress_file_gives_one_warning(tmp_path, shared_data):
    path = scaled_copy(shared_data / "ci" / "si_small.xyz", tmp_path / "si_kbar.xyz", stress=EV_PER_A3_IN_KBAR)
    (line,) = unit_warnings(read_frames(path))
    assert path in line and "kbar" in line


def test_kcal_per_mol_energies_give_one_warning_naming_file(tmp_path):
    path = scaled_copy(ETHANOL, tmp_path / "ethanol_kcal.xyz", energy=EV_IN_KCAL_PER_MOL)
    (line,) = unit_warnings(read_frames(path))
    assert path in line and "kcal/mol" in line and "10 of 10 energies" in line and "\n" not in line


def test_kcal_per_mol_forces_give_one_warning_naming_file(tmp_path):
    path = scaled_copy(ETHANOL, tmp_path / "ethanol_kcal_forces.xyz", forces=EV_IN_KCAL_PER_MOL)
    (line,) = unit_warnings(read_frames(path))
    assert path in line and "kcal/mol/Å" in line and "RMS" in line and "\n" not in line


def test_warnings_are_grouped_per_file(tmp_path):
    good = read_frames(scaled_copy(ETHANOL, tmp_path / "good.xyz", n=3))
    bad = read_frames(scaled_copy(ETHANOL, tmp_path / "bad.xyz", n=3, forces=EV_IN_KCAL_PER_MOL))
    (line,) = unit_warnings(good + bad)
    assert "bad.xyz" in line and "good.xyz" not in line


def test_warn_units_issues_label_warnings(tmp_path):
    path = scaled_copy(ETHANOL, tmp_path / "kcal.xyz", n=2, energy=EV_IN_KCAL_PER_MOL)
    with pytest.warns(LabelWarning, match="kcal.xyz"):
        lines = warn_units(read_frames(path))
    assert len(lines) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_units(read_frames(ETHANOL)) == []


def test_energy_bound_holds_for_all_electron_atoms():
    # all-electron total energies, eV: H -13.6, O -2041 (from the isolated atoms of 3BPA)
    assert 13.6 < energy_bound([1]) < 13.6 * EV_IN_KCAL_PER_MOL
    assert 2041.0 < energy_bound([8]) < 2041.0 * EV_IN_KCAL_PER_MOL
