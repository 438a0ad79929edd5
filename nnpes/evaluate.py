"""Predictions and error metrics over labelled frames (training validation and `nnpes evaluate`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from nnpes.data.graph import FrameGraph, batch_graphs, common_pad_sizes, frame_to_graph
from nnpes.data.io import LABELS, Frame, key_hint, keys_found, label_key_text
from nnpes.errors import DataError, LabelWarning, where
from nnpes.physics import evaluate
from nnpes.potential import Potential


def predict_graphs(
    potential: Potential, graphs: Sequence[FrameGraph], batch_size: int = 16, compute_stress: bool | None = None
) -> list[dict]:
    """Energy (eV, float64 total), forces (eV/Å) and stress (eV/Å³, periodic frames) per frame;
    for an ensemble also their calibrated uncertainties energy_std (eV) and forces_std (N, 3) eV/Å.

    All batches of a call share one padded shape, so a set compiles once.
    """
    if not graphs:
        return []
    if compute_stress is None:
        compute_stress = any(np.abs(np.linalg.det(g.cell)) > 1e-6 for g in graphs)
    dtype = potential.dtype
    potential = potential.for_structures(graphs)  # long-range terms: k grids for these cells
    chunks = [graphs[i : i + batch_size] for i in range(0, len(graphs), batch_size)]
    n_node, n_edge, n_graph = common_pad_sizes(chunks, batch_size)
    out = []
    for chunk in chunks:
        batch = batch_graphs(chunk, n_node, n_edge, n_graph, dtype=dtype)
        pred, std = _evaluate(potential, batch, compute_stress)
        node0 = 0
        for i, g in enumerate(chunk):
            numbers = g.numbers if g.numbers is not None else np.zeros(0, int)
            item = {
                "energy": potential.total_energy(pred["interaction_energy"][i], numbers),
                "forces": np.asarray(pred["forces"][node0 : node0 + g.n_node], np.float64),
            }
            if std is not None:
                item["energy_std"] = float(std[0][i])
                item["forces_std"] = np.asarray(std[1][node0 : node0 + g.n_node], np.float64)
            if compute_stress:
                item["stress"] = np.asarray(pred["stress"][i], np.float64)
            if "charges" in pred:
                item["charges"] = np.asarray(pred["charges"][node0 : node0 + g.n_node], np.float64)
            out.append(item)
            node0 += g.n_node
    return out


def _evaluate(potential: Potential, batch, compute_stress: bool) -> tuple[dict, tuple | None]:
    """Predictions of one padded batch (host arrays) and, for an ensemble, the calibrated
    (energy σ (G,) eV, forces σ (N, 3) eV/Å) of its members' spread; the members' mean is the
    ensemble's prediction, equal to what :func:`nnpes.physics.evaluate` gives."""
    if not potential.members:
        return jax.device_get(evaluate(potential, batch, compute_stress=compute_stress)), None
    from nnpes.uncertainty import evaluate_ensemble

    mean, (e_std, f_std) = jax.device_get(evaluate_ensemble(potential, batch, compute_stress=compute_stress))
    return mean, (np.asarray(e_std, np.float64), f_std)


def error_metrics(frames: Sequence[Frame], predictions: Sequence[dict]) -> dict:
    """MAE/RMSE of energy (meV per structure and per atom), force components (meV/Å) and stress
    components (meV/Å³); None for a label no frame carries."""

    def stats(errors):
        if not errors:
            return None, None
        e = np.concatenate([np.ravel(x) for x in errors])
        return float(np.mean(np.abs(e))) * 1e3, float(np.sqrt(np.mean(e**2))) * 1e3

    de, de_atom, df, ds = [], [], [], []
    for f, p in zip(frames, predictions):
        if f.energy is not None:
            de.append(np.array([p["energy"] - f.energy]))
            de_atom.append(de[-1] / f.n_atoms)
        if f.forces is not None:
            df.append(p["forces"] - f.forces)
        if f.stress is not None and "stress" in p:
            ds.append(p["stress"] - f.stress)
    e_mae, e_rmse = stats(de)
    ea_mae, ea_rmse = stats(de_atom)
    f_mae, f_rmse = stats(df)
    s_mae, s_rmse = stats(ds)
    return {
        "frames": len(frames),
        "atoms": int(sum(f.n_atoms for f in frames)),
        "energy_mae_mev": e_mae,
        "energy_rmse_mev": e_rmse,
        "energy_mae_mev_per_atom": ea_mae,
        "energy_rmse_mev_per_atom": ea_rmse,
        "forces_mae_mev_per_a": f_mae,
        "forces_rmse_mev_per_a": f_rmse,
        "stress_mae_mev_per_a3": s_mae,
        "stress_rmse_mev_per_a3": s_rmse,
    }


def evaluate_frames(potential: Potential, frames: Sequence[Frame], batch_size: int = 16) -> tuple[dict, list[dict]]:
    """Metrics (see :func:`error_metrics`) and per-frame predictions of a potential on frames."""
    graphs = [frame_to_graph(f, potential.cutoff, potential.atomic_numbers) for f in frames]
    preds = predict_graphs(potential, graphs, batch_size)
    return error_metrics(frames, preds), preds


def validation_loss(metrics: dict, weights: dict) -> float:
    """Weighted MSE in eV units (energy per atom, forces, stress) from metrics in meV."""
    total = 0.0
    for name, key in (
        ("energy", "energy_rmse_mev_per_atom"),
        ("forces", "forces_rmse_mev_per_a"),
        ("stress", "stress_rmse_mev_per_a3"),
    ):
        if weights.get(name) and metrics.get(key) is not None:
            total += weights[name] * (metrics[key] * 1e-3) ** 2
    return total if math.isfinite(total) else float("inf")


def check_labels(
    frames: Sequence[Frame], keys: Mapping[str, str], source: str | None = None, expect_stress: bool = False
) -> tuple[str, ...]:
    """The labels ("energy", "forces", "stress") some frame carries; warn about absent ones.

    Args:
        frames: the frames of one file, read with ``keys``.
        keys: {label: key} used to read them ("energy", "forces", "stress", "virial").
        source: the file, for messages (default: the frames' ``source``).
        expect_stress: warn when no frame has stress, too. Without it, missing stress is only
            reported when the file has a key whose name contains "stress" or "virial".

    Raises:
        DataError: no frame carries any label; the line lists the keys the file has.

    Warns:
        LabelWarning: energy or forces (or expected stress) absent from every frame, naming the
            file, the label, its key and the keys the file has.
    """
    source = source or (frames[0].source if frames else None)
    name = where(source, None)
    found = keys_found(frames)
    present = tuple(label for label in LABELS if any(getattr(f, label) is not None for f in frames))
    if not present:
        wanted = [f"{label} ({label_key_text(label, keys)})" for label in LABELS]
        wanted = ", ".join(wanted[:-1]) + " or " + wanted[-1]
        raise DataError(f"{name}: no frame has {wanted}; the file has {found}; {key_hint(LABELS, found, config=False)}")
    stress_like = any("stress" in k.lower() or "virial" in k.lower() for k in found.all())
    for label in LABELS:
        if label in present or (label == "stress" and not (expect_stress or stress_like)):
            continue
        warnings.warn(
            f"{name}: no frame has {label} ({label_key_text(label, keys)}), so it is not evaluated; the file has "
            f"{found}; {key_hint([label], found, config=False)}",
            LabelWarning,
            stacklevel=2,
        )
    return present
