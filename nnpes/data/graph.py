"""Frames → padded ``jraph.GraphsTuple`` batches with static, bucketed shapes.

A graph stores topology and labels only; edge vectors are recomputed inside ``jit`` from
positions, integer cell shifts and the cell, so that forces and stress are derivatives of the
energy. Padding follows jraph's convention for nodes: one extra graph holds every padding node,
and padding edges join padding nodes, so padding can never touch a real atom. Edges are not
contiguous per graph (jraph's ``get_edge_padding_mask`` does not apply): in the mirrored layout
the first half holds every frame's pairs and the second half the same pairs reversed, padding
at the end of each half; an edge belongs to its receiver's graph
(:func:`nnpes.physics.edge_padding_mask`).

Layout (host numpy arrays):
    nodes:   positions (N, 3) Å, species (N,) int32, forces (N, 3) eV/Å
    edges:   shifts (E, 3) int32; "mirrored": a (0,)-shaped marker, present when edge E/2 + k is
             edge k reversed (the :class:`~nnpes.data.neighbors.NeighborList` layout, kept
             across the batch: every frame's pairs, then every frame's reversed pairs)
    globals: cell (G, 3, 3) Å, charge (G,) total charge e, dipole (G, 3) e·Å, energy (G,) eV,
             stress (G, 3, 3) eV/Å³, has_dipole (G,),
             has_energy / has_forces / has_stress (G,) float 0/1 label masks
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jraph
import numpy as np

from nnpes.data.io import Frame
from nnpes.data.neighbors import is_mirrored, neighbor_list
from nnpes.errors import DataError, ModelError, where

try:
    from ase.data import chemical_symbols
except ImportError:  # pragma: no cover - ase is a dependency
    chemical_symbols = [str(z) for z in range(119)]


def species_indices(numbers: np.ndarray, atomic_numbers: Sequence[int], at: str = "<structure>") -> np.ndarray:
    """Atomic numbers → internal species indices; an unknown element raises a one-line error."""
    table = np.full(119, -1, np.int32)
    table[np.asarray(atomic_numbers)] = np.arange(len(atomic_numbers), dtype=np.int32)
    idx = table[np.asarray(numbers)]
    if np.any(idx < 0):
        unknown = sorted(set(np.asarray(numbers)[idx < 0].tolist()))
        names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in atomic_numbers)
        raise ModelError(f"{at}: element {names} is not known to this model (it knows {known})")
    return idx


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrameGraph(Frame):
    """A frame with its species indices and neighbour list, ready to batch (host arrays).

    Attributes (beyond :class:`~nnpes.data.io.Frame`'s; ``cell`` is zero for a molecule):
        species: (N,) int32 species indices. senders (j), receivers (i): (E,) int32.
        shifts: (E, 3) int32 cell shifts: r_ij = R_j − R_i + shifts @ cell.
    """

    species: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    shifts: np.ndarray

    @property
    def n_node(self) -> int:
        return len(self.species)

    @property
    def n_edge(self) -> int:
        return len(self.senders)


def frame_to_graph(frame: Frame, cutoff: float, atomic_numbers: Sequence[int]) -> FrameGraph:
    """Species indices and the neighbour list (cutoff in Å) of one frame."""
    species = species_indices(frame.numbers, atomic_numbers, where(frame.source, frame.index))
    nl = neighbor_list(frame.positions, frame.cell, frame.pbc, cutoff)
    cell = frame.cell if frame.periodic else np.zeros((3, 3))
    fields = {f.name: getattr(frame, f.name) for f in dataclasses.fields(Frame)}
    return FrameGraph(
        **{**fields, "cell": cell}, species=species, senders=nl.senders, receivers=nl.receivers, shifts=nl.shifts
    )


def bucket(n: int, minimum: int = 8) -> int:
    """Smallest size ≥ n of the form m·2^k, m ∈ {8, 10, 12, 14}: at most 25 % padding and a
    handful of distinct shapes (one compilation each) across a dataset."""
    n = max(int(n), minimum)
    k = max(0, math.floor(math.log2(n / 8)))
    while True:
        for m in (8, 10, 12, 14, 16):
            if m * 2**k >= n:
                return m * 2**k
        k += 1


def pad_sizes(graphs: Sequence[FrameGraph], n_graph: int | None = None) -> tuple[int, int, int]:
    """Bucketed (n_node, n_edge, n_graph) for a batch: one padding graph and node always added."""
    return common_pad_sizes([graphs], n_graph)


def common_pad_sizes(groups: Sequence[Sequence[FrameGraph]], n_graph: int | None = None) -> tuple[int, int, int]:
    """One bucketed (n_node, n_edge, n_graph) that fits every group of graphs, so that all the
    groups (the batches of an evaluation, the shards of a training batch) share one compiled shape.

    Args:
        groups: the batches (each a sequence of graphs).
        n_graph: real graphs per batch (default: the largest group); one padding graph is added.
    """
    n_node = bucket(max(sum(g.n_node for g in group) for group in groups) + 1)
    n_edge = bucket(max(sum(g.n_edge for g in group) for group in groups))
    n_graph = n_graph if n_graph is not None else max(len(group) for group in groups)
    return n_node, n_edge, n_graph + 1


def batch_graphs(
    graphs: Sequence[FrameGraph],
    n_node: int | None = None,
    n_edge: int | None = None,
    n_graph: int | None = None,
    dtype=np.float32,
) -> jraph.GraphsTuple:
    """Concatenate frames into one padded GraphsTuple (numpy, ready for ``jit``).

    Args: the frames; padded totals n_node, n_edge, n_graph (padding graph included; default:
    :func:`pad_sizes`; n_node and n_graph must exceed the real counts); the float dtype.
    """
    auto = pad_sizes(graphs)
    n_node, n_edge, n_graph = (a if n is None else n for a, n in zip(auto, (n_node, n_edge, n_graph)))
    real_nodes = sum(g.n_node for g in graphs)
    real_edges = sum(g.n_edge for g in graphs)
    if n_node <= real_nodes or n_edge < real_edges or n_graph <= len(graphs):
        raise DataError(
            f"padding too small: nodes {real_nodes}/{n_node}, edges {real_edges}/{n_edge}, "
            f"graphs {len(graphs)}/{n_graph}"
        )

    positions = np.zeros((n_node, 3), dtype)
    forces = np.zeros((n_node, 3), dtype)
    species = np.zeros(n_node, np.int32)
    senders = np.full(n_edge, n_node - 1, np.int32)  # padding edges: last (padding) node to itself
    receivers = np.full(n_edge, n_node - 1, np.int32)
    shifts = np.zeros((n_edge, 3), np.int32)
    cell = np.zeros((n_graph, 3, 3), dtype)
    energy = np.zeros(n_graph, dtype)
    charge = np.zeros(n_graph, dtype)
    dipole = np.zeros((n_graph, 3), dtype)
    stress = np.zeros((n_graph, 3, 3), dtype)
    has = {f"has_{k}": np.zeros(n_graph, dtype) for k in ("energy", "forces", "stress", "dipole")}
    n_node_arr = np.zeros(n_graph, np.int32)
    n_edge_arr = np.zeros(n_graph, np.int32)

    # mirrored layout (see nnpes.data.neighbors) when every frame has it: pairs in the first
    # half, the same pairs reversed at the same place in the second half
    mirror = n_edge % 2 == 0 and all(is_mirrored(g.senders, g.receivers, g.shifts) for g in graphs)
    half = n_edge // 2
    node0 = edge0 = 0
    for gi, g in enumerate(graphs):
        ns = slice(node0, node0 + g.n_node)
        positions[ns] = g.positions
        species[ns] = g.species
        if mirror:
            p = g.n_edge // 2
            where_to = np.r_[edge0 // 2 : edge0 // 2 + p, half + edge0 // 2 : half + edge0 // 2 + p]
        else:
            where_to = slice(edge0, edge0 + g.n_edge)
        senders[where_to] = g.senders + node0
        receivers[where_to] = g.receivers + node0
        shifts[where_to] = g.shifts
        cell[gi] = g.cell
        charge[gi] = g.charge
        if g.dipole is not None:
            dipole[gi], has["has_dipole"][gi] = g.dipole, 1
        if g.energy is not None:
            energy[gi], has["has_energy"][gi] = g.energy, 1
        if g.forces is not None:
            forces[ns], has["has_forces"][gi] = g.forces, 1
        if g.stress is not None:
            stress[gi], has["has_stress"][gi] = g.stress, 1
        n_node_arr[gi], n_edge_arr[gi] = g.n_node, g.n_edge
        node0 += g.n_node
        edge0 += g.n_edge
    n_node_arr[-1] = n_node - node0  # the last graph pads: it takes every remaining node and edge
    n_edge_arr[-1] = n_edge - edge0

    return jraph.GraphsTuple(
        nodes={"positions": positions, "species": species, "forces": forces},
        edges={"shifts": shifts, **({"mirrored": np.zeros(0, np.int8)} if mirror else {})},
        senders=senders,
        receivers=receivers,
        globals={"cell": cell, "charge": charge, "dipole": dipole, "energy": energy, "stress": stress, **has},
        n_node=n_node_arr,
        n_edge=n_edge_arr,
    )
