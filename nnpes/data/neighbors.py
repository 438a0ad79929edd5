"""Host-side neighbour lists (vesin): molecules, periodic and mixed cells, small cells included."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class NeighborList(NamedTuple):
    """Directed pairs within the cutoff: the edge vector is
    r = positions[senders] − positions[receivers] + shifts @ cell (Å).

    Mirrored layout: with P = E / 2, edge P + k is edge k reversed (senders and receivers
    swapped, shifts negated), so its vector is exactly −r_k. Models that see the layout
    (:func:`is_mirrored`) compute what depends only on the pair (radial weights, Y_l up to
    sign) once for both directions."""

    senders: np.ndarray  # (E,) int32, the neighbour j
    receivers: np.ndarray  # (E,) int32, the centre i
    shifts: np.ndarray  # (E, 3) int32, integer cell shifts of j


SMALL_MOLECULE = 64  # atoms: up to here a molecule's pairs come from one N×N distance matrix


def mirror_half_list(senders: np.ndarray, receivers: np.ndarray, shifts: np.ndarray) -> NeighborList:
    """The full list of a half list (each pair once): the pairs, then the same pairs reversed."""
    senders, receivers = np.asarray(senders, np.int32), np.asarray(receivers, np.int32)
    shifts = np.asarray(shifts, np.int32).reshape(-1, 3)
    return NeighborList(
        np.concatenate([senders, receivers]), np.concatenate([receivers, senders]), np.concatenate([shifts, -shifts])
    )


def is_mirrored(senders: np.ndarray, receivers: np.ndarray, shifts: np.ndarray) -> bool:
    """Whether edges [P, 2P) are edges [0, P) reversed (see :class:`NeighborList`)."""
    n = len(senders)
    if n % 2:
        return False
    p = n // 2
    return bool(
        np.array_equal(senders[p:], receivers[:p])
        and np.array_equal(receivers[p:], senders[:p])
        and np.array_equal(shifts[p:], -np.asarray(shifts[:p]))
    )


def _all_pairs(positions: np.ndarray, cutoff: float) -> NeighborList:
    """Every pair of a small molecule closer than ``cutoff`` (Å), both directions: an N×N distance
    matrix costs a few µs here, where a cell list's set-up costs tens (what an ASE calculator pays
    per call)."""
    d = positions[None, :, :] - positions[:, None, :]  # d[i, j] = R_j − R_i
    close = np.triu(np.einsum("ijk,ijk->ij", d, d) < cutoff**2, k=1)
    i, j = np.nonzero(close)
    return mirror_half_list(j, i, np.zeros((len(i), 3), np.int32))


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> NeighborList:
    """All ordered pairs (i, j, image) with |r_ij| < cutoff (Å), self-pairs excluded, in the
    mirrored layout of :class:`NeighborList`.

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
    # a half list (each pair once, half vesin's work), mirrored here
    i, j, shifts = vesin.NeighborList(cutoff=float(cutoff), full_list=False).compute(
        points=positions, box=cell, periodic=periodic, quantities="ijS"
    )
    return mirror_half_list(j, i, shifts)
