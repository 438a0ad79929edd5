"""Physical laws for every model family: :class:`nnpes.testing.PhysicsLaws` run on a tiny
random-weight float64 potential per family (tests/helpers.py), plus this repository's own checks.

The potential is module-scoped, so each family's padded shapes compile once for the whole module.
"""

from __future__ import annotations

import ase.build
import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from helpers import TINY_CUTOFF, TINY_MODELS

import nnpes
from nnpes.errors import ModelError
from nnpes.models import FAMILIES, NequIP
from nnpes.testing import PhysicsLaws, ethanol

pytestmark = pytest.mark.usefixtures("debug_nans")

SPECIES = (1, 6, 8, 29)  # H, C, O, Cu: the roles of nnpes.testing's structures, one element each
E0 = {1: -1.5, 6: -2.0, 8: -3.0, 29: -4.0}  # eV; non-zero so reference energies are exercised


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def potential(request) -> nnpes.Potential:
    """A tiny float64 potential for H, C, O and Cu, one per family."""
    model = TINY_MODELS[request.param]()
    pot = nnpes.Potential.create(model, SPECIES, TINY_CUTOFF, seed=1, e0=E0, scale=0.5, avg_num_neighbors=6.0)
    return pot.astype(np.float64)


class TestLawsEveryFamily(PhysicsLaws):
    """Every law of :class:`nnpes.testing.PhysicsLaws`, for every family (the module's fixture)."""


def test_every_family_has_a_tiny_model():
    assert set(TINY_MODELS) == set(FAMILIES), "add a line to tests/helpers.py for every family in FAMILIES"


def test_calculator_refuses_stress_of_a_molecule(potential):
    atoms = ethanol(potential)
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


# -- acceptance: default NequIP with random weights ----------------------------------------------
# The default model is large for this test machine (≈ 30 s to initialise and compile each).
@pytest.mark.slow
def test_default_nequip_gives_finite_energy_and_forces_for_ethanol():
    potential = nnpes.Potential.create(NequIP(), [1, 6, 8], cutoff=5.0, avg_num_neighbors=8.0)
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.calc = nnpes.Calculator(potential)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert np.isfinite(energy)
    assert forces.shape == (9, 3) and np.all(np.isfinite(forces))
    assert np.abs(forces).max() > 0


@pytest.mark.slow
def test_default_nequip_gives_finite_energy_forces_stress_for_copper():
    potential = nnpes.Potential.create(NequIP(), [29], cutoff=5.0, avg_num_neighbors=40.0)
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.calc = nnpes.Calculator(potential)
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert np.isfinite(energy) and np.all(np.isfinite(forces)) and np.all(np.isfinite(stress))
    assert forces.shape == (32, 3) and stress.shape == (6,)
    # perfect fcc: forces vanish by symmetry and the stress is isotropic
    assert np.abs(forces).max() < 1e-3
    assert np.abs(stress[3:]).max() < 1e-5 and np.ptp(stress[:3]) < 1e-5


def test_hco_potential_refuses_copper_in_one_line_naming_the_element():
    potential = nnpes.Potential.create(TINY_MODELS["nequip"](), [1, 6, 8], cutoff=TINY_CUTOFF)
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = nnpes.Calculator(potential)
    with pytest.raises(ModelError) as err:
        atoms.get_potential_energy()
    message = str(err.value)
    assert "\n" not in message and "Cu" in message
