"""Dataset statistics stored with a model: reference energies E0, energy scale, mean neighbour count."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnpes.data.graph import FrameGraph
from nnpes.data.io import Frame
from nnpes.errors import DataError, ModelError


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
                raise DataError(
                    f"{f.source}: frame {f.index}: isolated-atom file needs one atom with an energy per frame"
                )
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


def energy_scale(frames: Sequence[Frame], atomic_numbers: Sequence[int], e0: np.ndarray) -> tuple[float, str]:
    """The network's energy scale, eV, and how it was obtained: the force RMS (eV/Å, as eV for
    Å-sized displacements) when forces are labelled, else the RMS of (E − Σ E0) / N over the
    labelled energies (eV/atom), else 1."""
    if any(f.forces is not None for f in frames):
        return force_rms(frames), "force RMS"
    table = np.zeros(119)
    table[np.asarray(atomic_numbers)] = np.asarray(e0, np.float64)
    residual = [(f.energy - table[f.numbers].sum()) / f.n_atoms for f in frames if f.energy is not None]
    if not residual:
        return 1.0, "default: no energies or forces labelled"
    rms = float(np.sqrt(np.mean(np.square(residual))))
    return (rms, "RMS residual energy per atom: no forces labelled") if rms > 1e-8 else (1.0, "default")


def e0_report(atomic_numbers: Sequence[int], e0: np.ndarray, method: str) -> str:
    """One line on the reference energies, saying when they cannot tell elements apart."""
    from ase.data import chemical_symbols

    if method == "mean_per_atom":
        return (
            f"E0 {float(e0[0]):.4f} eV for every element (mean energy per atom: all training frames share one "
            "composition, so per-element reference energies cannot be told apart; give data.isolated_atoms to fit them)"
        )
    return f"E0 ({method}): " + ", ".join(f"{chemical_symbols[z]} {e:.4f} eV" for z, e in zip(atomic_numbers, e0))


def mean_neighbors(graphs: Sequence[FrameGraph]) -> float:
    """Average number of neighbours per atom within the cutoff (message normaliser)."""
    atoms = sum(g.n_node for g in graphs)
    return max(sum(g.n_edge for g in graphs) / max(atoms, 1), 1.0)


def fit_model_statistics(model, graphs: Sequence[FrameGraph], batch_size: int = 32, min_std: float = 1e-6):
    """The model with every constant it declares as fitted on training data filled in.

    A family marks such fields ``Annotated[..., Fitted("statistic")]`` (see
    :mod:`nnpes.models.base`); this data-layer function computes the statistics it knows and
    hands them to the model through those fields (models never import data code). Known:
    ``descriptor_mean`` / ``descriptor_std``, per-species mean and standard deviation of the
    model's ``descriptors`` method over the atoms of ``graphs`` (standard deviations below
    ``min_std`` become 1; a species absent from the data gets mean 0 and std 1).

    Args:
        model: with cutoff, num_species and avg_num_neighbors filled in (``potential.model``).
        graphs: the training frames' graphs (same cutoff).
        batch_size: frames per padded batch (one compilation per distinct bucket).
    Returns:
        ``model.clone(...)`` with the fitted fields set (``model`` itself when it declares none).
    """
    from nnpes.models.base import fitted_fields

    wanted = fitted_fields(type(model))
    if not wanted:
        return model
    unknown = sorted(set(wanted.values()) - {"descriptor_mean", "descriptor_std"})
    if unknown:
        raise ModelError(
            f"{type(model).__name__}: no data statistic named {', '.join(unknown)} "
            "(known: descriptor_mean, descriptor_std)"
        )
    mean, std = _descriptor_moments(model.clone(**{f: None for f in wanted}), graphs, batch_size, min_std)
    values = {"descriptor_mean": mean, "descriptor_std": std}
    return model.clone(**{field: tuple(float(v) for v in values[stat].reshape(-1)) for field, stat in wanted.items()})


def _descriptor_moments(model, graphs, batch_size: int, min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-species (mean, std), each (num_species, F), of ``model.descriptors`` over the atoms."""
    import jax
    import jax.numpy as jnp

    from nnpes.data.graph import batch_graphs
    from nnpes.physics import edge_padding_mask, edge_vectors, safe_edges

    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32

    @jax.jit
    def features(graph):
        vectors = edge_vectors(graph.nodes["positions"], graph.globals["cell"], graph)
        vectors, mask = safe_edges(vectors, edge_padding_mask(graph), model.cutoff)
        return model.apply(
            {}, vectors, graph.nodes["species"], graph.senders, graph.receivers, mask, method="descriptors"
        )

    s = model.num_species
    count, total, squares = np.zeros(s), 0.0, 0.0
    for start in range(0, len(graphs), batch_size):
        chunk = list(graphs[start : start + batch_size])
        batch = batch_graphs(chunk, dtype=np.dtype(dtype))
        n_real = sum(g.n_node for g in chunk)
        x = np.asarray(features(batch), np.float64)[:n_real]
        one_hot = np.eye(s)[np.asarray(batch.nodes["species"][:n_real])]  # (n, S)
        count = count + one_hot.sum(axis=0)
        total = total + one_hot.T @ x
        squares = squares + one_hot.T @ x**2
    seen = count > 0
    mean = np.where(seen[:, None], total / np.maximum(count, 1)[:, None], 0.0)
    var = np.where(seen[:, None], squares / np.maximum(count, 1)[:, None] - mean**2, 1.0)
    std = np.sqrt(np.maximum(var, 0.0))
    return mean, np.where(std < min_std, 1.0, std)
