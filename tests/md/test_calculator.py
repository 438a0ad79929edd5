"""nnpes.Calculator: the same numbers as physics.evaluate, compiled once per padded shape,
recomputed on every change that matters, and one-line refusals (close atoms, memory)."""

from __future__ import annotations

import ase
import ase.build
import jax
import numpy as np
import pytest
from helpers import TINY_MODELS

import nnpes
from nnpes import compilation
from nnpes.data.graph import batch_graphs, frame_to_graph
from nnpes.data.io import frame_from_atoms
from nnpes.errors import DataError, ModelError
from nnpes.memory import ENV_LIMIT
from nnpes.physics import evaluate

CUTOFF_A = 3.0


@pytest.fixture(scope="module")
def potential() -> nnpes.Potential:
    return nnpes.Potential.create(TINY_MODELS["nequip"](), [1, 6, 8, 29], CUTOFF_A, seed=3, avg_num_neighbors=6.0)


def copper_cell():
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    return atoms


def reference(potential, atoms) -> dict:
    """physics.evaluate on the batch the training code would build."""
    graph = frame_to_graph(frame_from_atoms(atoms, source="test"), potential.cutoff, potential.atomic_numbers)
    out = jax.device_get(evaluate(potential, batch_graphs([graph]), compute_stress=bool(np.all(atoms.pbc))))
    return {
        "energy": potential.total_energy(out["interaction_energy"][0], atoms.numbers),
        "forces": out["forces"][: len(atoms)],
        "stress": out.get("stress"),
    }


@pytest.mark.parametrize("make", [lambda: ase.build.molecule("CH3CH2OH"), copper_cell], ids=["ethanol", "copper"])
def test_calculator_gives_what_physics_evaluate_gives(potential, make):
    atoms = make()
    atoms.calc = nnpes.Calculator(potential)
    ref = reference(potential, atoms)
    np.testing.assert_allclose(atoms.get_potential_energy(), ref["energy"], rtol=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], rtol=1e-5, atol=1e-6)
    if atoms.pbc.all():
        from nnpes.data.io import matrix_to_voigt

        np.testing.assert_allclose(atoms.get_stress(), matrix_to_voigt(ref["stress"][0]), rtol=1e-5, atol=1e-7)


def test_calculator_compiles_once_per_padded_shape_and_shares_it(potential):
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.calc = nnpes.Calculator(potential)
    atoms.get_forces()
    before = compilation.count("energy_forces_stress")
    for k in range(5):  # MD-like: new positions, same padded shape
        atoms.positions[0] += 0.01 * (k + 1)
        atoms.get_forces()
    other = ase.build.molecule("CH3CH2OH")
    other.calc = nnpes.Calculator(potential)  # a second calculator of the same potential
    other.get_forces()
    assert compilation.count("energy_forces_stress") == before
    big = ase.build.molecule("CH3CH2OH") + ase.build.molecule("CH3CH2OH").copy()
    big.positions[9:] += 20.0  # twice the atoms: another bucket, one more compilation
    big.calc = nnpes.Calculator(potential)
    big.get_forces()
    assert compilation.count("energy_forces_stress") == before + 1


def test_calculator_recomputes_on_every_change_it_depends_on(potential):
    atoms = copper_cell()
    calc = nnpes.Calculator(potential)
    atoms.calc = calc
    e0, s0 = atoms.get_potential_energy(), atoms.get_stress()
    atoms.positions[1, 2] += 0.05
    e1 = atoms.get_potential_energy()
    assert e1 != e0
    atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)
    assert not np.allclose(atoms.get_stress(), s0)
    numbers = atoms.numbers.copy()
    numbers[0] = 8
    atoms.numbers = numbers  # a new element: the species are looked up again
    fresh = atoms.copy()
    fresh.calc = nnpes.Calculator(potential)
    assert atoms.get_potential_energy() == pytest.approx(fresh.get_potential_energy(), rel=1e-6)
    # nothing changed: the cached result is returned, no new calculation
    calls = []
    original = calc.calculate
    calc.calculate = lambda *a, **k: calls.append(1) or original(*a, **k)
    atoms.get_potential_energy()
    assert calls == []


def test_calculator_refuses_atoms_on_top_of_each_other_in_one_line(potential):
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.positions[3] = atoms.positions[2] + [0.02, 0.0, 0.0]
    atoms.calc = nnpes.Calculator(potential)
    with pytest.raises(DataError) as err:
        atoms.get_forces()
    assert "\n" not in str(err.value) and "closer than" in str(err.value) and "ase.Atoms" in str(err.value)


def test_calculator_refuses_a_structure_too_large_for_the_memory_in_one_line(potential, monkeypatch):
    monkeypatch.setenv(ENV_LIMIT, "0.0001")  # 100 KiB: no program fits
    atoms = copper_cell() * (2, 2, 1)  # a shape not compiled before in this module
    atoms.calc = nnpes.Calculator(potential)
    with pytest.raises(ModelError) as err:
        atoms.get_forces()
    message = str(err.value)
    assert "\n" not in message and "GiB" in message and f"{len(atoms)} atoms" in message
    monkeypatch.delenv(ENV_LIMIT)
    assert np.all(np.isfinite(atoms.get_forces()))  # with the machine's memory it runs
