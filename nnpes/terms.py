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
masked edges, and for terms that need the whole cell (Ewald sums) the positions, cells and
graph membership, all strained together when stress is computed. Saved models record each
term as ``{"kind": ..., **term.to_json()}``; :func:`register_term` makes a kind loadable.
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
    mirrored: bool = struct.field(pytree_node=False, default=False)


class Term(struct.PyTreeNode):
    """Base class of a physical term. Subclasses set ``kind`` and implement
    :meth:`site_energies`; :meth:`to_json` / :meth:`from_json` save and load them."""

    kind: ClassVar[str] = ""

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
