"""The one place where energy, forces and stress are computed.

Training, evaluation, the ASE calculator and the jax-md adaptor all call
:func:`energy_forces_stress` (or :func:`total_energy`, its energy-only core, which jax-md
integrators differentiate themselves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import jraph

from nnpes import compilation
from nnpes.terms import TermInputs, safe_vector

if TYPE_CHECKING:
    from nnpes.potential import Potential

_VOLUME_EPS = 1e-6  # Å^3; below this a graph is a molecule or padding and has no stress


def edge_vectors(positions, cell, graph: jraph.GraphsTuple) -> jnp.ndarray:
    """r_ij = R_j − R_i + shift·cell for every edge (j = sender, i = receiver), Å.

    Args:
        positions: (N, 3) Å. cell: (G, 3, 3) lattice rows per graph, Å.
    """
    edge_graph = graph_index(graph.n_node, positions.shape[0])[graph.receivers]
    shifts = graph.edges["shifts"].astype(positions.dtype)
    offsets = jnp.einsum("ei,eij->ej", shifts, cell[edge_graph])
    return positions[graph.senders] - positions[graph.receivers] + offsets


def edge_padding_mask(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """(E,) True for the edges of real graphs: those whose receiver is a real node. Unlike
    jraph's, it does not assume that padding edges come last (the mirrored layout has them at
    the end of each half)."""
    return jraph.get_node_padding_mask(graph)[graph.receivers]


def has_mirrored_edges(graph: jraph.GraphsTuple) -> bool:
    """Whether the graph's edges are in the mirrored layout (:mod:`nnpes.data.graph`): static."""
    return isinstance(graph.edges, dict) and "mirrored" in graph.edges


def graph_index(counts: jnp.ndarray, total: int) -> jnp.ndarray:
    """Which graph each of `total` nodes (or edges) belongs to, from per-graph counts."""
    return jnp.repeat(jnp.arange(counts.shape[0]), counts, total_repeat_length=total)


def safe_edges(vectors: jnp.ndarray, edge_mask: jnp.ndarray, cutoff: float):
    """Mask edges that are padding or beyond the cutoff, and replace their vectors by a harmless
    one *before* any norm (the "double where": a NaN in a discarded branch would still poison
    the gradient). Returns (safe vectors, mask)."""
    r2 = jnp.sum(vectors**2, axis=-1)
    mask = edge_mask & (r2 < cutoff**2) & (r2 > 0)
    return jnp.where(mask[:, None], vectors, safe_vector(cutoff, vectors.dtype)), mask


def site_energies_from_vectors(
    potential: Potential,
    vectors,
    species,
    senders,
    receivers,
    edge_mask,
    *,
    positions=None,
    cell=None,
    node_graph=None,
    node_mask=None,
    total_charge=None,
    mirrored: bool = False,
):
    """(interaction, reference, charges) per atom from raw edge vectors r_ij (E, 3) Å: site
    energies (N,) eV, and the charge head's partial charges (N,) e (None without a head).

    Edges that are padding (edge_mask False) or beyond the cutoff are masked here, so callers
    (:func:`total_energy`, the jax-md adaptor) may pass any superset of the true pairs.
    ``positions`` (N, 3) Å, ``cell`` (G, 3, 3) Å, ``node_graph`` (N,), ``node_mask`` (N,) and
    ``total_charge`` (G,) e are handed to the potential's physical terms that need the whole
    cell or the charges (see :class:`nnpes.terms.TermInputs`).
    ``mirrored``: the edges are in the mirrored layout (edge E/2 + k is edge k reversed).
    """
    vectors, edge_mask = safe_edges(vectors, edge_mask, potential.cutoff)
    inputs = TermInputs(
        vectors,
        edge_mask,
        species,
        senders,
        receivers,
        positions=positions,
        cell=cell,
        node_graph=node_graph,
        node_mask=node_mask,
        total_charge=total_charge,
        cutoff=potential.cutoff,
        mirrored=mirrored,
    )
    return potential.site_energies(potential.params, inputs)


def total_energy(potential: Potential, positions, cell, graph: jraph.GraphsTuple, strain=None):
    """Per-graph energies (eV) of a padded graph at the given positions (Å) and cell (Å).

    Args:
        strain: optional (G, 3, 3) symmetric strain ε applied to positions, cell and hence
            every edge vector, r → r (1 + ε).

    Returns:
        (energy (G,), interaction energy (G,) = energy minus reference energies E0,
        site energies (N,), all eV, padding graphs exactly 0; charges (N,) e or None).
    """
    n_node = positions.shape[0]
    n_graph = graph.n_node.shape[0]
    node_graph = graph_index(graph.n_node, n_node)
    node_mask = jraph.get_node_padding_mask(graph)
    edge_mask = edge_padding_mask(graph)

    if strain is not None:
        positions = positions + jnp.einsum("ni,nij->nj", positions, strain[node_graph])
        cell = cell + jnp.einsum("gki,gij->gkj", cell, strain)
    vectors = edge_vectors(positions, cell, graph)
    interaction, reference, charges = site_energies_from_vectors(
        potential,
        vectors,
        graph.nodes["species"],
        graph.senders,
        graph.receivers,
        edge_mask,
        positions=positions,
        cell=cell,
        node_graph=node_graph,
        node_mask=node_mask,
        total_charge=graph.globals.get("charge") if isinstance(graph.globals, dict) else None,
        mirrored=has_mirrored_edges(graph),
    )
    interaction = jnp.where(node_mask, interaction, 0.0)
    reference = jnp.where(node_mask, reference, 0.0)
    e_int = jax.ops.segment_sum(interaction, node_graph, n_graph)
    e_ref = jax.ops.segment_sum(reference, node_graph, n_graph)
    return e_int + e_ref, e_int, interaction + reference, charges


def energy_forces_stress(potential: "Potential", graph: jraph.GraphsTuple, compute_stress: bool = True) -> dict:
    """Energy, forces and stress of every graph in a padded batch.

    Forces are F = −∂E/∂R; stress is σ = (1/V) ∂E/∂ε at ε = 0 for a symmetric strain ε of
    positions and cell together (ASE sign: positive = tensile). The symmetric strain makes σ
    symmetric and excludes rotations, which leave E unchanged.

    Args:
        potential: model, parameters, reference energies (a pytree; jit-compatible).
        graph: padded batch from :func:`nnpes.data.graph.batch_graphs`.
        compute_stress: also differentiate with respect to strain.

    Returns:
        dict with energy (G,) eV, interaction_energy (G,) eV (energy minus Σ E0, the quantity
        losses compare in float32), forces (N, 3) eV/Å, site_energies (N,) eV, and when
        compute_stress: stress (G, 3, 3) eV/Å³ (zero for non-periodic and padding graphs),
        virial (G, 3, 3) eV = −∂E/∂ε; when the model has a charge head: charges (N,) e and
        dipole (G, 3) e·Å = Σ q_i R_i.
    """
    compilation.traced("energy_forces_stress")
    positions = graph.nodes["positions"]
    cell = graph.globals["cell"].astype(positions.dtype)
    n_graph = graph.n_node.shape[0]
    strain = jnp.zeros((n_graph, 3, 3), positions.dtype)

    def summed(pos, eps):
        eps = 0.5 * (eps + jnp.swapaxes(eps, -1, -2))
        energy, e_int, sites, charges = total_energy(potential, pos, cell, graph, eps if compute_stress else None)
        return jnp.sum(energy), (energy, e_int, sites, charges)

    argnums = (0, 1) if compute_stress else 0
    (_, (energy, e_int, sites, charges)), grads = jax.value_and_grad(summed, argnums=argnums, has_aux=True)(
        positions, strain
    )
    out = {"energy": energy, "interaction_energy": e_int, "site_energies": sites}
    if charges is not None:
        out["charges"] = charges
        # Σ q_i R_i per structure, e·Å (meaningful for neutral molecules; the optional dipole loss)
        node_graph = graph_index(graph.n_node, positions.shape[0])
        out["dipole"] = jax.ops.segment_sum(charges[:, None] * positions, node_graph, n_graph)
    if compute_stress:
        d_pos, d_strain = grads
        volume = jnp.abs(jnp.linalg.det(cell))
        periodic = volume > _VOLUME_EPS
        safe_volume = jnp.where(periodic, volume, 1.0)  # molecules and padding: no division by 0
        out["stress"] = jnp.where(periodic[:, None, None], d_strain / safe_volume[:, None, None], 0.0)
        out["virial"] = -d_strain
    else:
        d_pos = grads
    out["forces"] = jnp.where(jraph.get_node_padding_mask(graph)[:, None], -d_pos, 0.0)
    return out


evaluate = jax.jit(energy_forces_stress, static_argnames=("compute_stress",))
"""Jitted :func:`energy_forces_stress`: compiles once per (model, padded shapes, dtype)."""
