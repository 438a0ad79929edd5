"""Latent charges: a charge head's raw outputs → partial charges that conserve each
structure's total charge exactly.

The head (a second readout column of the network, see :func:`nnpes.models.base.site_outputs`)
predicts a raw value per atom from the same invariant features as the site energies; the
difference between their sum and the structure's total charge Q is spread uniformly over its
atoms (the simplest charge-equilibration-style constraint: it keeps every symmetry and is
exact for any input). No charge labels are needed: the charges are learned through the
electrostatic energy they produce (:mod:`nnpes.electrostatics`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def conserved_charges(raw, node_graph, total_charge, node_mask):
    """Partial charges q_i, e, with Σ_{i∈g} q_i = Q_g exactly for every graph g.

    Args:
        raw: (N,) raw head outputs, e.
        node_graph: (N,) graph index of every node, or None for one structure.
        total_charge: (G,) total charge Q_g of every graph, e, or None (neutral).
        node_mask: (N,) bool, False on padding atoms (they get q = 0), or None (all real).

    Returns:
        (N,) charges, e, in the dtype of ``raw``.
    """
    if node_graph is None:
        node_graph = jnp.zeros(raw.shape[0], jnp.int32)
        n_graph = 1
    else:
        n_graph = total_charge.shape[0] if total_charge is not None else int(raw.shape[0])
    weight = jnp.ones_like(raw) if node_mask is None else node_mask.astype(raw.dtype)
    count = jax.ops.segment_sum(weight, node_graph, n_graph)
    target = jnp.zeros(n_graph, raw.dtype) if total_charge is None else total_charge.astype(raw.dtype)
    excess = jax.ops.segment_sum(raw * weight, node_graph, n_graph) - target
    shift = excess / jnp.maximum(count, 1.0)
    return (raw - shift[node_graph]) * weight
