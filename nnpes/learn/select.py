"""Which MD frames to label: uncertain ones, not near-duplicates, spread over the trajectories.

A frame is a candidate when its force uncertainty σ_F (the largest per-atom force σ of the
ensemble, eV/Å) is above the threshold. Frames recorded a few femtoseconds apart in one run are
nearly the same structure, and labelling both teaches little: a chosen frame must differ from
every frame already chosen or labelled by at least ``min_distance_a`` in a descriptor that is
blind to rotations, translations and the order of atoms of one element (:func:`descriptor`).
The trajectories take turns (round-robin, the most uncertain trajectory first), so one run that
left the training data far behind cannot take every label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """Sorted interatomic distances per pair of elements (Å), with the composition they belong to."""

    composition: tuple[tuple[int, int], ...]  # (atomic number, count), sorted
    distances: np.ndarray  # (n_pairs,) Å: each element pair's sorted distances, pairs in a fixed order


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A recorded MD frame that could be labelled."""

    trajectory: int  # which run it comes from
    frame: int  # its index among that run's recorded frames
    sigma: float  # σ_F, eV/Å (NaN counts as above any threshold)
    descriptor: Descriptor


def descriptor(numbers, positions, cell=None, pbc=None) -> Descriptor:
    """A structure's :class:`Descriptor`: for each pair of elements (z_a ≤ z_b), the distances
    between all atom pairs of those elements, sorted; periodic cells use the minimum image.

    Invariant under rotations, translations and permutations of like atoms; O(N²), meant for the
    molecules and small cells active learning labels with a reference method.

    Args:
        numbers: (N,) atomic numbers. positions: (N, 3) Å. cell: (3, 3) rows Å. pbc: (3,) bool.
    """
    from ase.geometry import get_distances

    numbers = np.asarray(numbers)
    positions = np.asarray(positions, np.float64)
    periodic = pbc is not None and bool(np.any(pbc))
    _, d = get_distances(positions, cell=cell if periodic else None, pbc=pbc if periodic else None)
    i, j = np.triu_indices(len(numbers), k=1)
    za, zb = np.minimum(numbers[i], numbers[j]), np.maximum(numbers[i], numbers[j])
    parts = []
    for a, b in sorted(set(zip(za.tolist(), zb.tolist()))):
        parts.append(np.sort(d[i, j][(za == a) & (zb == b)]))
    elements, counts = np.unique(numbers, return_counts=True)
    composition = tuple(zip(elements.tolist(), counts.tolist()))
    return Descriptor(composition, np.concatenate(parts) if parts else np.zeros(0))


def distance(a: Descriptor, b: Descriptor) -> float:
    """RMS difference of two descriptors' sorted distances, Å; infinite between compositions."""
    if a.composition != b.composition:
        return float("inf")
    if not a.distances.size:
        return 0.0
    return float(np.sqrt(np.mean((a.distances - b.distances) ** 2)))


def select(
    candidates: Sequence[Candidate],
    n: int,
    threshold: float,
    min_distance: float = 0.0,
    max_per_trajectory: int | None = None,
    order: str = "time",
    known: Sequence[Descriptor] = (),
) -> list[int]:
    """Indices of at most ``n`` candidates to label.

    Args:
        candidates: frames of all trajectories.
        n: how many to choose.
        threshold: σ_F, eV/Å: only frames above it (or NaN) are chosen.
        min_distance: Å: a chosen frame's :func:`distance` to every other chosen frame and to every
            ``known`` (already labelled) structure is at least this.
        max_per_trajectory: at most this many from one trajectory (None: no limit).
        order: within a trajectory, "time" takes frames in the order they were recorded (the
            first to leave the training data: the edge of what the model knows), "sigma" the
            most uncertain first.
        known: descriptors of the labelled structures.

    Trajectories take turns, the one with the largest σ_F first; each turn takes its next frame
    that passes the distance test. Deterministic: the same candidates give the same choice.
    """
    queues: dict[int, list[int]] = {}
    for i, c in enumerate(candidates):
        if not c.sigma <= threshold:  # NaN counts as above
            queues.setdefault(c.trajectory, []).append(i)
    key = (lambda i: candidates[i].frame) if order == "time" else (lambda i: -_finite(candidates[i].sigma))
    for q in queues.values():
        q.sort(key=key)
    turns = sorted(queues, key=lambda t: (-max(_finite(candidates[i].sigma) for i in queues[t]), t))
    chosen: list[int] = []
    taken = dict.fromkeys(turns, 0)
    near_known = _near(known, min_distance)
    while len(chosen) < n and any(queues[t] for t in turns):
        for t in turns:
            if len(chosen) >= n:
                break
            if max_per_trajectory is not None and taken[t] >= max_per_trajectory:
                queues[t].clear()
            while queues[t]:
                i = queues[t].pop(0)
                d = candidates[i].descriptor
                if not near_known(d) and all(distance(d, candidates[j].descriptor) >= min_distance for j in chosen):
                    chosen.append(i)
                    taken[t] += 1
                    break
    return chosen


def _near(known: Sequence[Descriptor], min_distance: float):
    """A test: is a descriptor closer than ``min_distance`` to any ``known`` one (vectorised)?"""
    groups: dict[tuple, list[np.ndarray]] = {}
    for k in known:
        groups.setdefault(k.composition, []).append(k.distances)
    stacked = {c: np.stack(v) for c, v in groups.items()}

    def near(d: Descriptor) -> bool:
        rows = stacked.get(d.composition)
        if rows is None or min_distance <= 0:
            return False
        if not d.distances.size:
            return True
        return bool(np.min(np.sqrt(np.mean((rows - d.distances) ** 2, axis=1))) < min_distance)

    return near


def _finite(sigma: float) -> float:
    return float("inf") if np.isnan(sigma) else float(sigma)
