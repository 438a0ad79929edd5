"""Host-side neighbour lists (vesin): molecules, periodic and mixed cells, small cells included."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class NeighborList(NamedTuple):
    """Directed pairs within the cutoff: the edge vector is
    r = positions[senders] − positions[receivers] + shifts @ cell (Å)."""

    senders: np.ndarray  # (E,) int32, the neighbour j
    receivers: np.ndarray  # (E,) int32, the centre i
    shifts: np.ndarray  # (E, 3) int32, integer cell shifts of j


SMALL_MOLECULE = 64  # atoms: up to here a molecule's pairs come from one N×N distance matrix


def _all_pairs(positions: np.ndarray, cutoff: float) -> NeighborList:
    """Every ordered pair of a small molecule closer than ``cutoff`` (Å): an N×N distance matrix
    costs a few µs here, where a cell list's set-up costs tens (what an ASE calculator pays per call)."""
    d = positions[None, :, :] - positions[:, None, :]  # d[i, j] = R_j − R_i
    close = np.einsum("ijk,ijk->ij", d, d) < cutoff**2
    np.fill_diagonal(close, False)
    i, j = np.nonzero(close)
    return NeighborList(j.astype(np.int32), i.astype(np.int32), np.zeros((len(i), 3), np.int32))


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> NeighborList:
    """All ordered pairs (i, j, image) with |r_ij| < cutoff (Å), self-pairs excluded.

    Periodic directions use every periodic image needed, so cells narrower than 2·cutoff are
    handled (an atom may neighbour several images of another, or images of itself).

    Args:
        positions: (N, 3) Å. cell: (3, 3) lattice vectors as rows, Å. pbc: (3,) bools.
        cutoff: Å.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not pbc.any():
        cell = np.zeros((3, 3))
    if len(positions) == 0:
        empty = np.zeros(0, np.int32)
        return NeighborList(empty, empty, np.zeros((0, 3), np.int32))
    if not pbc.any() and len(positions) <= SMALL_MOLECULE:
        return _all_pairs(positions, cutoff)
    import vesin

    periodic = bool(pbc[0]) if pbc.all() or not pbc.any() else pbc.tolist()
    i, j, shifts = vesin.NeighborList(cutoff=float(cutoff), full_list=True).compute(
        points=positions, box=cell, periodic=periodic, quantities="ijS"
    )
    return NeighborList(
        senders=np.asarray(j, np.int32),
        receivers=np.asarray(i, np.int32),
        shifts=np.asarray(shifts, np.int32).reshape(-1, 3),
    )
