"""Physical terms of the total energy, beside the network.

The total energy of a :class:`nnpes.Potential` is a sum of terms, each a sum of site energies:

    E = Σ_i [ scale_s(i) · network_i  +  E0_s(i)  +  Σ_terms ε_i^term ]

The network and the reference energies E0 are the potential's own fields; every further
physical term (short-range repulsion, electrostatics, dispersion, ...) is a :class:`Term` in
``Potential.terms``. All of them are evaluated inside the one energy function of
:mod:`nnpes.physics`, so forces (−∂E/∂R) and stress (strain derivative) of a new term need no
code of their own, and every path (training, evaluation, calculator, jax-md) sees it.

A term is a flax ``struct`` pytree: its arrays are leaves (they are cast with the potential and
pass through ``jit``), its settings are static fields. It receives :class:`TermInputs`: the
masked edges, and for terms that need the whole cell (Ewald sums) the positions, cells, graph
membership, total charges and the network's latent charges, all strained together when stress
is computed. A term with ``needs_charges`` gives the model a charge head (:mod:`nnpes.charges`);
a term whose static shapes depend on the cells (k grids) fixes them in :meth:`Term.for_cells`.
Saved models record each term as ``{"kind": ..., **term.to_json()}``; :func:`register_term` makes a kind loadable.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp
from flax import struct

from nnpes.errors import ModelError


@struct.dataclass
class TermInputs:
    """What a term sees of one padded batch (or one jax-md system).

    Attributes:
        vectors: (E, 3) edge vectors r_ij = R_j − R_i + shift, Å; masked edges hold a safe vector.
        edge_mask: (E,) bool, False for padding and for pairs beyond the potential's cutoff.
        species: (N,) int species indices. senders (j), receivers (i): (E,) int.
        positions: (N, 3) Cartesian positions, Å, or None where a path has none to give.
        cell: (G, 3, 3) lattice rows per graph, Å (zeros: no periodicity), or None.
        node_graph: (N,) graph index of every node, or None.
        node_mask: (N,) bool, False on padding atoms, or None (all real).
        total_charge: (G,) total charge of every structure, e, or None (neutral).
        charges: (N,) partial charges, e, from the network's charge head (conserving
            total_charge), or None when the model has no charge head.
        cutoff: static; the potential's cutoff r_c, Å (edges beyond it are masked).
        mirrored: static; True when edge E/2 + k is edge k reversed (r_{E/2+k} = −r_k), the
            layout of nnpes's neighbour lists and batches (see :mod:`nnpes.data.graph`).
    """

    vectors: jnp.ndarray
    edge_mask: jnp.ndarray
    species: jnp.ndarray
    senders: jnp.ndarray
    receivers: jnp.ndarray
    positions: jnp.ndarray | None = None
    cell: jnp.ndarray | None = None
    node_graph: jnp.ndarray | None = None
    node_mask: jnp.ndarray | None = None
    total_charge: jnp.ndarray | None = None
    charges: jnp.ndarray | None = None
    cutoff: float = struct.field(pytree_node=False, default=0.0)
    mirrored: bool = struct.field(pytree_node=False, default=False)


class Term(struct.PyTreeNode):
    """Base class of a physical term. Subclasses set ``kind`` and implement
    :meth:`site_energies`; :meth:`to_json` / :meth:`from_json` save and load them."""

    kind: ClassVar[str] = ""
    needs_charges: ClassVar[bool] = False  # True: reads TermInputs.charges (the model gets a charge head)

    def for_cells(self, cells, cutoff: float) -> Term:
        """The term with any static shape that depends on the structures fixed for these (F, 3, 3)
        cells (Å; zero: a molecule) and the potential's cutoff (Å); most terms return self."""
        return self

    def site_energies(self, inputs: TermInputs) -> jnp.ndarray:
        """(N,) site energies, eV, in the dtype of ``inputs.vectors``; zero on padding atoms
        is not required (the energy function masks them)."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild the term (JSON types only)."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Term:
        return cls(**data)


def safe_vector(cutoff: float, dtype) -> jnp.ndarray:
    """The harmless edge vector (0.5·r_c, 0, 0) put in place of padding and out-of-range edges
    before any norm, so no NaN reaches a gradient (the "double where"). It lives here, outside
    :mod:`nnpes.models`, because :mod:`nnpes.physics` needs it without importing model code."""
    return jnp.asarray([0.5 * cutoff, 0.0, 0.0], dtype)


TERM_KINDS: dict[str, type[Term]] = {}


def register_term(cls: type[Term]) -> type[Term]:
    """Make a term kind loadable from saved models (usable as a class decorator)."""
    if not cls.kind:
        raise ModelError(f"term class {cls.__name__} needs a non-empty `kind`")
    TERM_KINDS[cls.kind] = cls
    return cls


def terms_to_json(terms) -> list[dict[str, Any]]:
    return [{"kind": t.kind, **t.to_json()} for t in terms]


def terms_from_json(items: list[dict[str, Any]], where: str) -> tuple[Term, ...]:
    """Rebuild saved terms; an unknown kind is a one-line ModelError naming the file."""
    out = []
    for item in items:
        data = dict(item)
        kind = data.pop("kind", None)
        if kind not in TERM_KINDS:
            raise ModelError(f"{where}: unknown energy term {kind!r} (known: {sorted(TERM_KINDS) or 'none'})")
        out.append(TERM_KINDS[kind].from_json(data))
    return tuple(out)
