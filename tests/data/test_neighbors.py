"""Neighbour lists (nnpes/data/neighbors.py) match a brute-force all-pairs search and ASE, in
molecules, small triclinic cells and mixed boundary conditions."""

from __future__ import annotations

import itertools

import ase
import ase.build
import ase.io
import numpy as np
import pytest
from ase.neighborlist import neighbor_list as ase_neighbor_list

from nnpes.data.neighbors import neighbor_list

pytestmark = pytest.mark.usefixtures("debug_nans")


# -- neighbour lists -----------------------------------------------------------------------------
def brute_force_pairs(positions, cell, pbc, cutoff) -> set:
    """Every (i, j, shift) with |R_j − R_i + shift·cell| < cutoff, by looping over all images."""
    pbc = np.asarray(pbc, bool)
    reach = np.zeros(3, int)
    if pbc.any():
        volume = abs(np.linalg.det(cell))
        for k in range(3):
            if pbc[k]:  # images up to the cutoff over the spacing of lattice planes, plus one
                height = volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
                reach[k] = int(np.ceil(cutoff / height)) + 1
    pairs = set()
    for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
        offset = np.asarray(shift) @ cell if pbc.any() else np.zeros(3)
        d = positions[None, :, :] - positions[:, None, :] + offset  # d[i, j] = R_j − R_i + offset
        close = np.linalg.norm(d, axis=-1) < cutoff
        for i, j in zip(*np.nonzero(close)):
            if i != j or any(shift):
                pairs.add((int(i), int(j), tuple(int(s) for s in shift)))
    return pairs


def nnpes_pairs(atoms, cutoff) -> set:
    nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    return {(int(i), int(j), tuple(int(s) for s in shift)) for i, j, shift in zip(nl.receivers, nl.senders, nl.shifts)}


def _triclinic_small_cell():
    cell = np.array([[2.8, 0.0, 0.0], [0.9, 2.6, 0.0], [0.4, -0.7, 3.1]])
    frac = np.random.default_rng(0).random((3, 3))
    return ase.Atoms("CuOH", scaled_positions=frac, cell=cell, pbc=True)


def _mixed_pbc_slab():
    slab = ase.build.fcc111("Cu", size=(2, 2, 2), vacuum=4.0, a=3.6)
    slab.rattle(0.05, seed=2)
    slab.pbc = (True, True, False)
    return slab


NEIGHBOR_CASES = {
    "molecule": lambda: ase.build.molecule("CH3CH2OH"),
    "triclinic_cell_smaller_than_2rc": _triclinic_small_cell,
    "mixed_pbc_slab": _mixed_pbc_slab,
    "one_atom_fcc_cell": lambda: ase.build.bulk("Cu", "fcc", a=3.6),
}


@pytest.mark.parametrize("case", sorted(NEIGHBOR_CASES))
def test_neighbor_list_matches_brute_force_and_ase(case):
    atoms = NEIGHBOR_CASES[case]()
    cutoff = 4.0
    if atoms.pbc.any():
        assert min(atoms.cell.cellpar()[:3][atoms.pbc]) < 2 * cutoff  # several images per pair
    ours = nnpes_pairs(atoms, cutoff)
    assert ours == brute_force_pairs(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    i, j, shifts = ase_neighbor_list("ijS", atoms, cutoff)
    assert ours == {(int(a), int(b), tuple(int(s) for s in c)) for a, b, c in zip(i, j, shifts)}
    assert len(ours) > len(atoms)


def test_neighbor_list_edge_vectors_follow_the_documented_convention():
    atoms = _triclinic_small_cell()
    cutoff = 4.0
    nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    r = atoms.positions[nl.senders] - atoms.positions[nl.receivers] + nl.shifts @ atoms.cell.array
    assert np.all(np.linalg.norm(r, axis=1) < cutoff)
    # every edge has its reverse (j → i with the opposite shift)
    edges = {(int(s), int(t), tuple(int(x) for x in k)) for s, t, k in zip(nl.senders, nl.receivers, nl.shifts)}
    assert all((t, s, tuple(-x for x in k)) in edges for s, t, k in edges)


def test_small_molecule_pairs_match_the_cell_list_at_the_size_limit():
    """Up to SMALL_MOLECULE atoms a molecule's pairs come from a distance matrix, beyond from
    vesin: both give the brute-force pairs, on either side of the limit."""
    from nnpes.data.neighbors import SMALL_MOLECULE

    rng = np.random.default_rng(4)
    for n in (SMALL_MOLECULE, SMALL_MOLECULE + 1):
        atoms = ase.Atoms(f"C{n}", positions=rng.random((n, 3)) * 9.0)
        assert nnpes_pairs(atoms, 3.0) == brute_force_pairs(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)
