"""Masked losses on padded batches: padding graphs and missing labels never contribute."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jraph

from nnpes.physics import graph_index

LOSS_TERMS = ("energy", "forces", "stress", "dipole", "energy_nll", "forces_nll")
"""The loss's terms, each weighted by ``loss.<term>_weight`` (the NLLs act for shallow ensembles only)."""


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


NLL_STD_FLOOR = {"energy": 1e-6, "forces": 1e-4}  # eV/atom, eV/Å: added in quadrature to the spread


def nll_sums(name: str, members, labels, weights) -> dict:
    """Sums of a Gaussian negative log-likelihood of per-graph labels under an ensemble's
    spread, and their count: {name + "_nll": Σ w·NLL, name + "_nll_count": Σ w}.

    ``members``: (M, G) the members' predictions, ``labels`` (G,), ``weights`` (G,) 0/1; per
    graph σ² = var_m (ddof 1) + floor² and Δ = members' mean − label: NLL = ½ (log 2πσ² + Δ²/σ²).
    The mean is held fixed here (``stop_gradient``): the usual loss fits it, so accuracy does
    not trade against the likelihood; the NLL fits only the members' spread, towards σ ≈ |Δ|."""
    delta = jax.lax.stop_gradient(jnp.mean(members, axis=0)) - labels
    var = jnp.var(members, axis=0, ddof=1) + NLL_STD_FLOOR[name] ** 2
    nll = 0.5 * (jnp.log(2.0 * math.pi * var) + delta**2 / var)
    return {f"{name}_nll": jnp.sum(weights * nll), f"{name}_nll_count": jnp.sum(weights)}


def energy_nll_sums(member_energies, graph: jraph.GraphsTuple) -> dict:
    """:func:`nll_sums` of the energy per atom (eV/atom); ``member_energies``: (M, G)
    interaction energies, eV, one row per member (a shallow ensemble's heads)."""
    g = graph.globals
    atoms = jnp.maximum(graph.n_node, 1).astype(member_energies.dtype)
    weights = g["has_energy"] * jraph.get_graph_padding_mask(graph).astype(member_energies.dtype)
    return nll_sums("energy", member_energies / atoms, g["energy"] / atoms, weights)


def projection_directions(key, graph: jraph.GraphsTuple, dtype):
    """(N, 3) random directions v for :func:`forces_nll_sums`: Gaussian components of variance
    1/(3 N_g) on the atoms of graph g with a forces label, 0 elsewhere, so that ⟨(ΔF·v)²⟩ per
    graph is its mean squared force-component error."""
    n_node = graph.nodes["species"].shape[0]
    node_graph = graph_index(graph.n_node, n_node)
    atoms = jnp.maximum(graph.n_node, 1).astype(dtype)[node_graph]
    labelled = (graph.globals["has_forces"] * jraph.get_graph_padding_mask(graph))[node_graph].astype(dtype)
    return jax.random.normal(key, (n_node, 3), dtype) * (labelled / jnp.sqrt(3.0 * atoms))[:, None]


def forces_nll_sums(member_projections, directions, graph: jraph.GraphsTuple) -> dict:
    """:func:`nll_sums` of the forces projected on ``directions`` (N, 3) per graph, eV/Å:
    ``member_projections`` (M, G) = Σ_i F_i^m · v_i of every member, the label Σ_i F_i · v_i.
    One random projection per graph and step gives the members' force spread a likelihood
    without M backward passes (the projections come from one forward-mode pass)."""
    n_graph = graph.n_node.shape[0]
    node_graph = graph_index(graph.n_node, graph.nodes["species"].shape[0])
    labels = jax.ops.segment_sum(jnp.sum(graph.nodes["forces"] * directions, axis=-1), node_graph, n_graph)
    weights = graph.globals["has_forces"] * jraph.get_graph_padding_mask(graph).astype(labels.dtype)
    return nll_sums("forces", member_projections, labels, weights)


def combine(sums: dict, weights: dict) -> jnp.ndarray:
    """Weighted sum of mean penalties; a label absent from the whole batch adds 0."""
    total = 0.0
    for name, w in weights.items():
        if w and name in sums:
            total = total + w * sums[name] / jnp.maximum(sums[f"{name}_count"], 1.0)
    return total
