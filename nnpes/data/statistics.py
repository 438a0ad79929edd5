"""Dataset statistics stored with a model: reference energies E0, energy scale, mean neighbour count."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnpes.data.graph import FrameGraph
from nnpes.data.io import Frame
from nnpes.errors import DataError


def fit_e0(
    frames: Sequence[Frame], atomic_numbers: Sequence[int], isolated: Sequence[Frame] | None = None
) -> tuple[np.ndarray, str]:
    """Per-species reference energies (eV), aligned with sorted ``atomic_numbers``.

    Order of preference: isolated-atom energies when given (every element must have one);
    a least-squares fit E ≈ Σ_s n_s E0_s on the training energies when the composition matrix
    has full rank; otherwise (e.g. rMD17, every frame the same molecule) the mean energy per atom
    for every species. Returns (e0, method) with method "isolated_atoms", "least_squares" or
    "mean_per_atom".
    """
    numbers = list(atomic_numbers)
    if isolated:
        e0 = {}
        for f in isolated:
            if f.n_atoms != 1 or f.energy is None:
                raise DataError(f"{f.source}: frame {f.index}: isolated-atom file needs one atom with an energy per frame")
            e0[int(f.numbers[0])] = f.energy
        missing = [z for z in numbers if z not in e0]
        if missing:
            src = isolated[0].source
            raise DataError(f"{src}: no isolated-atom energy for atomic numbers {missing}")
        return np.array([e0[z] for z in numbers]), "isolated_atoms"

    labelled = [f for f in frames if f.energy is not None]
    if not labelled:
        return np.zeros(len(numbers)), "zero"
    counts = np.array([[np.sum(f.numbers == z) for z in numbers] for f in labelled], np.float64)
    energies = np.array([f.energy for f in labelled])
    if np.linalg.matrix_rank(counts) == len(numbers):
        e0, *_ = np.linalg.lstsq(counts, energies, rcond=None)
        return e0, "least_squares"
    per_atom = energies.sum() / counts.sum()
    return np.full(len(numbers), per_atom), "mean_per_atom"


def force_rms(frames: Sequence[Frame]) -> float:
    """Root mean square force component over the frames (eV/Å); 1.0 when no forces are labelled."""
    forces = [f.forces for f in frames if f.forces is not None]
    if not forces:
        return 1.0
    rms = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    return rms if rms > 1e-8 else 1.0


def mean_neighbors(graphs: Sequence[FrameGraph]) -> float:
    """Average number of neighbours per atom within the cutoff (message normaliser)."""
    atoms = sum(g.n_node for g in graphs)
    return max(sum(g.n_edge for g in graphs) / max(atoms, 1), 1.0)
