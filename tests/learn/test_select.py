"""Frame selection of active learning (nnpes.learn.select): uncertain, diverse, spread over runs."""

from __future__ import annotations

import ase.build
import numpy as np
from scipy.spatial.transform import Rotation

from nnpes.learn.select import Candidate, descriptor, distance, select


def _ethanol(seed: int, amplitude: float = 0.1):
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.rattle(amplitude, seed=seed)
    return atoms


def _candidates(trajectory: int, structures, sigmas) -> list[Candidate]:
    return [
        Candidate(trajectory, i, s, descriptor(a.numbers, a.positions))
        for i, (a, s) in enumerate(zip(structures, sigmas))
    ]


def test_descriptor_is_invariant_to_rotation_translation_and_permutation_of_like_atoms():
    atoms = _ethanol(0)
    moved = atoms.copy()
    moved.positions = Rotation.random(random_state=1).apply(atoms.positions) + [3.0, -1.0, 7.0]
    hydrogens = np.flatnonzero(moved.numbers == 1)
    order = np.arange(len(moved))
    order[hydrogens] = hydrogens[::-1]
    moved = moved[order]
    assert distance(descriptor(atoms.numbers, atoms.positions), descriptor(moved.numbers, moved.positions)) < 1e-12
    other = _ethanol(1)
    assert distance(descriptor(atoms.numbers, atoms.positions), descriptor(other.numbers, other.positions)) > 0.01


def test_descriptor_of_a_periodic_cell_uses_the_minimum_image():
    cell = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    shifted = cell.copy()
    shifted.positions += [3.5, 0.0, 0.0]  # wraps around: the same crystal
    d0 = descriptor(cell.numbers, cell.positions, cell.cell[:], cell.pbc)
    d1 = descriptor(shifted.numbers, shifted.positions, shifted.cell[:], shifted.pbc)
    assert distance(d0, d1) < 1e-12
    assert np.max(d0.distances) < 3.6  # minimum-image distances, not the 6.2 Å of the cell's diagonal


def test_descriptors_of_different_compositions_are_infinitely_apart():
    water, ethanol = ase.build.molecule("H2O"), ase.build.molecule("CH3CH2OH")
    assert (
        distance(descriptor(water.numbers, water.positions), descriptor(ethanol.numbers, ethanol.positions)) == np.inf
    )


def test_selection_skips_near_duplicates():
    base = _ethanol(0)
    duplicates = []
    for k in range(5):  # frames a few fs apart: the same structure within 0.001 Å
        atoms = base.copy()
        atoms.rattle(0.001, seed=10 + k)
        duplicates.append(atoms)
    distinct = [_ethanol(s, 0.15) for s in (1, 2)]
    pool = _candidates(0, duplicates + distinct, [1.0] * 7)
    chosen = select(pool, n=7, threshold=0.5, min_distance=0.02)
    assert sorted(chosen) == [0, 5, 6]  # one of the duplicates, both distinct frames
    for i in chosen:
        for j in chosen:
            if i != j:
                assert distance(pool[i].descriptor, pool[j].descriptor) >= 0.02


def test_selection_spreads_over_trajectories_most_uncertain_first():
    hot = _candidates(0, [_ethanol(s, 0.2) for s in range(10)], [5.0] * 10)  # one run far from the data
    warm = _candidates(1, [_ethanol(100 + s, 0.1) for s in range(3)], [1.0] * 3)
    pool = hot + warm
    chosen = select(pool, n=4, threshold=0.5, min_distance=0.01)
    assert [pool[i].trajectory for i in chosen] == [0, 1, 0, 1]  # turns, the most uncertain run first
    chosen = select(pool, n=8, threshold=0.5, min_distance=0.01, max_per_trajectory=2)
    assert [pool[i].trajectory for i in chosen].count(0) == 2 and len(chosen) == 4  # the cap, then nothing left


def test_selection_respects_the_threshold_and_counts_nan_as_above():
    structures = [_ethanol(s, 0.15) for s in range(4)]
    pool = _candidates(0, structures, [0.1, np.nan, 0.3, 0.9])
    assert sorted(select(pool, n=10, threshold=0.3)) == [1, 3]  # 0.3 is not above 0.3


def test_selection_order_time_or_sigma():
    pool = _candidates(0, [_ethanol(s, 0.15) for s in range(4)], [0.6, 0.9, 0.7, 2.0])
    assert select(pool, n=2, threshold=0.5, order="time") == [0, 1]
    assert select(pool, n=2, threshold=0.5, order="sigma") == [3, 1]


def test_selection_avoids_structures_already_labelled():
    structures = [_ethanol(s, 0.15) for s in range(3)]
    pool = _candidates(0, structures, [1.0, 1.0, 1.0])
    known = [descriptor(structures[1].numbers, structures[1].positions + 1e-4)]
    assert select(pool, n=3, threshold=0.5, min_distance=0.01, known=known) == [0, 2]
