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


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> NeighborList:
    """All ordered pairs (i, j, image) with |r_ij| < cutoff (Å), self-pairs excluded.

    Periodic directions use every periodic image needed, so cells narrower than 2·cutoff are
    handled (an atom may neighbour several images of another, or images of itself).

    Args:
        positions: (N, 3) Å. cell: (3, 3) lattice vectors as rows, Å. pbc: (3,) bools.
        cutoff: Å.
    """
    import vesin

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not pbc.any():
        cell = np.zeros((3, 3))
    if len(positions) == 0:
        empty = np.zeros(0, np.int32)
        return NeighborList(empty, empty, np.zeros((0, 3), np.int32))
    periodic = bool(pbc[0]) if pbc.all() or not pbc.any() else pbc.tolist()
    i, j, shifts = vesin.NeighborList(cutoff=float(cutoff), full_list=True).compute(
        points=positions, box=cell, periodic=periodic, quantities="ijS"
    )
    return NeighborList(
        senders=np.asarray(j, np.int32),
        receivers=np.asarray(i, np.int32),
        shifts=np.asarray(shifts, np.int32).reshape(-1, 3),
    )
