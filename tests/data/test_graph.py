"""Padded batches (nnpes/data/graph.py): buckets bound the padding, masks keep real and padding
data apart, too little padding is refused. Host-side: no model is compiled."""

from __future__ import annotations

import ase
import ase.build
import ase.io
import jraph
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from nnpes.data.graph import (
    batch_graphs,
    bucket,
    frame_to_graph,
    pad_sizes,
    species_indices,
)
from nnpes.data.io import frame_from_atoms
from nnpes.data.neighbors import is_mirrored
from nnpes.physics import edge_padding_mask

pytestmark = pytest.mark.usefixtures("debug_nans")


# -- helpers -------------------------------------------------------------------------------------
# -- buckets and batches -----------------------------------------------------------------------------
def test_bucket_is_at_least_n_with_at_most_25_percent_padding():
    sizes = np.arange(1, 20001)
    buckets = np.array([bucket(n) for n in sizes])
    assert np.all(buckets >= sizes)
    assert np.all(buckets[7:] <= 1.25 * sizes[7:])
    assert np.all(buckets[:8] == 8)
    assert np.all(np.diff(buckets) >= 0)
    assert all(bucket(b) == b for b in set(buckets.tolist()))
    assert len(set(buckets.tolist())) <= 4 * 12  # a handful per octave: few compilations


def _labelled_graphs():
    eth = ase.build.molecule("CH3CH2OH")
    eth.calc = SinglePointCalculator(eth, energy=-10.0, forces=np.ones((9, 3)))
    cu = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.calc = SinglePointCalculator(cu, energy=-14.0, forces=np.zeros((4, 3)), stress=np.arange(6.0) * 0.01)
    bare = ase.build.molecule("H2O")
    return [frame_to_graph(frame_from_atoms(a), 3.0, (1, 6, 8, 29)) for a in (eth, cu, bare)]


@pytest.mark.parametrize("extra", [(0, 0, 0), (5, 17, 2)], ids=["default", "extra_graphs"])
def test_batch_masks_separate_real_and_padding(extra):
    graphs = _labelled_graphs()
    n_node, n_edge, n_graph = (a + b for a, b in zip(pad_sizes(graphs), extra))
    batch = batch_graphs(graphs, n_node, n_edge, n_graph, dtype=np.float64)
    real_nodes = sum(g.n_node for g in graphs)
    real_edges = sum(g.n_edge for g in graphs)

    assert batch.nodes["positions"].shape == (n_node, 3) and batch.senders.shape == (n_edge,)
    assert batch.n_node.sum() == n_node and batch.n_edge.sum() == n_edge and len(batch.n_node) == n_graph
    node_mask = np.asarray(jraph.get_node_padding_mask(batch))
    edge_mask = np.asarray(edge_padding_mask(batch))
    assert node_mask.sum() == real_nodes and node_mask[:real_nodes].all()
    assert edge_mask.sum() == real_edges
    # padding edges join padding nodes only; real edges join real nodes of the same graph, and
    # each graph has as many edges as its n_edge says
    assert np.all(batch.senders[~edge_mask] >= real_nodes) and np.all(batch.receivers[~edge_mask] >= real_nodes)
    node_graph = np.repeat(np.arange(n_graph), batch.n_node)
    assert np.all(node_graph[batch.senders] == node_graph[batch.receivers])
    np.testing.assert_array_equal(np.bincount(node_graph[batch.receivers], minlength=n_graph), batch.n_edge)
    # the mirrored layout: edge E/2 + k is edge k reversed, padding included
    assert ("mirrored" in batch.edges) == (n_edge % 2 == 0)
    if n_edge % 2 == 0:
        assert is_mirrored(batch.senders, batch.receivers, batch.edges["shifts"])
    # labels: flags exactly where a label exists; padding and empty graphs carry none
    g = batch.globals
    np.testing.assert_array_equal(g["has_energy"][:3], [1, 1, 0])
    np.testing.assert_array_equal(g["has_forces"][:3], [1, 1, 0])
    np.testing.assert_array_equal(g["has_stress"][:3], [0, 1, 0])
    for key in ("has_energy", "has_forces", "has_stress", "energy"):
        assert np.all(g[key][3:] == 0)
    assert np.all(batch.nodes["forces"][real_nodes:] == 0)
    np.testing.assert_array_equal(g["cell"][0], np.zeros((3, 3)))  # molecule: no cell
    np.testing.assert_allclose(g["cell"][1], 3.6 * np.eye(3))
    np.testing.assert_array_equal(batch.nodes["species"][:9], species_indices(graphs[0].numbers, (1, 6, 8, 29)))


def test_batch_with_too_little_padding_is_refused():
    graphs = _labelled_graphs()
    n_node, n_edge, n_graph = pad_sizes(graphs)
    real_nodes = sum(g.n_node for g in graphs)
    with pytest.raises(ValueError):
        batch_graphs(graphs, n_node=real_nodes)  # no room for the padding node
    with pytest.raises(ValueError):
        batch_graphs(graphs, n_graph=len(graphs))  # no padding graph


def test_pad_sizes_leave_room_for_one_padding_node_and_graph():
    graphs = _labelled_graphs()
    n_node, n_edge, n_graph = pad_sizes(graphs)
    assert n_node > sum(g.n_node for g in graphs) and n_edge >= sum(g.n_edge for g in graphs)
    assert n_graph == len(graphs) + 1
