"""Masked losses on padded batches: padding graphs and missing labels never contribute."""

from __future__ import annotations

import jax.numpy as jnp
import jraph

from nnpes.physics import graph_index


def _penalty(diff, kind: str, delta: float):
    if kind == "huber":
        a = jnp.abs(diff)
        return jnp.where(a < delta, 0.5 * diff**2, delta * (a - 0.5 * delta)) * 2.0  # = diff² near 0
    return diff**2


def error_sums(pred: dict, graph: jraph.GraphsTuple, kind: str = "mse", delta: float = 0.01) -> dict:
    """Sums of penalties and their counts for energy per atom (eV/atom), force components
    (eV/Å), stress components (eV/Å³) and, for models with latent charges, dipole components
    (e·Å). The energy label in ``graph`` is the interaction
    energy (total minus Σ E0), so float32 never subtracts two large totals."""
    n_node = graph.nodes["species"].shape[0]
    g = graph.globals
    graph_mask = jraph.get_graph_padding_mask(graph).astype(pred["energy"].dtype)
    atoms = jnp.maximum(graph.n_node, 1).astype(pred["energy"].dtype)

    w_e = g["has_energy"] * graph_mask
    e_pen = _penalty((pred["interaction_energy"] - g["energy"]) / atoms, kind, delta)
    node_graph = graph_index(graph.n_node, n_node)
    w_f = (g["has_forces"] * graph_mask)[node_graph]
    f_pen = _penalty(pred["forces"] - graph.nodes["forces"], kind, delta).sum(-1)
    out = {
        "energy": jnp.sum(w_e * e_pen),
        "energy_count": jnp.sum(w_e),
        "forces": jnp.sum(w_f * f_pen),
        "forces_count": 3.0 * jnp.sum(w_f),
    }
    if "stress" in pred:
        w_s = g["has_stress"] * graph_mask
        s_pen = _penalty(pred["stress"] - g["stress"], kind, delta).sum((-1, -2))
        out["stress"] = jnp.sum(w_s * s_pen)
        out["stress_count"] = 9.0 * jnp.sum(w_s)
    if "dipole" in pred and "has_dipole" in g:  # latent charges' dipole against an optional label
        w_d = g["has_dipole"] * graph_mask
        out["dipole"] = jnp.sum(w_d * _penalty(pred["dipole"] - g["dipole"], kind, delta).sum(-1))
        out["dipole_count"] = 3.0 * jnp.sum(w_d)
    return out


def combine(sums: dict, weights: dict) -> jnp.ndarray:
    """Weighted sum of mean penalties; a label absent from the whole batch adds 0."""
    total = 0.0
    for name, w in weights.items():
        if w and name in sums:
            total = total + w * sums[name] / jnp.maximum(sums[f"{name}_count"], 1.0)
    return total
