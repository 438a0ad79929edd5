"""Labelling with a reference calculator (nnpes.learn.label): EMT, a user's module, failures."""

from __future__ import annotations

import sys

import ase.build
import numpy as np
import pytest
from ase.calculators.emt import EMT

from nnpes.errors import ConfigError
from nnpes.learn.label import LabellingWarning, label, make_calculator


def _cluster(seed: int):
    atoms = ase.build.bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_emt_labels_are_emt_energies_and_forces():
    structures = [_cluster(s) for s in range(2)]
    structures[0].info["learn_origin"] = "T300_0:4"
    out = label(structures, make_calculator("emt"), ["a", "b"])
    for atoms, labelled in zip(structures, out):
        atoms.calc = EMT()
        assert labelled.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(labelled.get_forces(), atoms.get_forces(), atol=1e-12)
    assert out[0].info["learn_origin"] == "T300_0:4"  # where it came from travels with the label


def test_periodic_labels_carry_stress():
    cell = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True)
    (labelled,) = label([cell], make_calculator("emt"), ["cell"])
    assert labelled.get_stress().shape == (6,)


class _Flaky(EMT):
    """EMT that fails on the second structure it sees and returns NaN forces on the third."""

    calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        type(self).calls += 1
        if self.calls == 2:
            raise RuntimeError("SCF did not converge\nafter 250 iterations")
        super().calculate(atoms, properties, system_changes)
        if self.calls == 3:
            self.results["forces"] = self.results["forces"] * np.nan


def test_failed_frames_are_one_warning_line_each_and_skipped():
    structures = [_cluster(s) for s in range(4)]
    names = [f"md frame {i}" for i in range(4)]
    with pytest.warns(LabellingWarning) as record:
        out = label(structures, _Flaky(), names)
    assert len(out) == 2
    messages = [str(w.message) for w in record if w.category is LabellingWarning]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert "md frame 1" in messages[0] and "SCF did not converge" in messages[0] and "skipped" in messages[0]
    assert "md frame 2" in messages[1] and "non-finite" in messages[1]


def test_implausibly_large_forces_are_skipped():
    squeezed = _cluster(0)
    squeezed.positions[1] = squeezed.positions[0] + [0.9, 0.0, 0.0]
    with pytest.warns(LabellingWarning, match="max_force_ev_a"):
        assert label([squeezed], make_calculator("emt"), ["squeezed"], max_force_ev_a=20.0) == []


def test_user_calculator_module_attribute(tmp_path):
    (tmp_path / "my_reference.py").write_text(
        "from ase.calculators.emt import EMT\n\ndef make(scale=1.0):\n    return EMT()\n\nNOT_A_CALCULATOR = 3\n"
    )
    calc = make_calculator("my_reference:make", {"scale": 2.0}, search_path=[str(tmp_path)])
    assert isinstance(calc, EMT)
    assert str(tmp_path) not in sys.path  # the import path is restored
    with pytest.raises(ConfigError, match="label.calculator: my_reference:NOT_A_CALCULATOR is not an ASE calculator"):
        make_calculator("my_reference:NOT_A_CALCULATOR", search_path=[str(tmp_path)])
    with pytest.raises(ConfigError, match="has no attribute 'missing'"):
        make_calculator("my_reference:missing", search_path=[str(tmp_path)])
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        make_calculator("no_such_module_xyz:Calc")


def test_missing_tblite_is_one_line_telling_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite", None)  # import tblite fails as if not installed
    monkeypatch.setitem(sys.modules, "tblite.ase", None)
    with pytest.raises(ConfigError) as err:
        make_calculator("tblite")
    assert "\n" not in str(err.value) and 'pip install "nnpes[learn]"' in str(err.value)


def test_tblite_gfn2_labels_ethanol_when_installed():
    pytest.importorskip("tblite.ase")
    ethanol = ase.build.molecule("CH3CH2OH")
    (labelled,) = label([ethanol], make_calculator("tblite"), ["ethanol"])
    assert -320 < labelled.get_potential_energy() < -300  # GFN2-xTB total energy of ethanol, eV
    forces = labelled.get_forces()
    assert forces.shape == (9, 3) and np.abs(forces.sum(axis=0)).max() < 1e-6  # no net force on a molecule
