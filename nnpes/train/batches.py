"""Batches of an epoch: which frames (a pure function of seed and epoch), the few padded shapes
they take (a capped ladder of buckets: one compilation each) and their padded shards."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jraph
import numpy as np

from nnpes.data.graph import FrameGraph, batch_graphs, bucket
from nnpes.errors import DataError


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Frame indices of every batch of an epoch: a seeded permutation, the last batch filled up
    from the start of the permutation so every batch is full (one padded shape per dataset)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps = math.ceil(n / batch_size)
    total = steps * batch_size
    padded = np.concatenate([perm, perm[: total - n]]) if n >= batch_size else np.resize(perm, total)
    return [padded[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def _shards(batch: np.ndarray, n_shards: int) -> list[np.ndarray]:
    return np.array_split(batch, n_shards)


@dataclasses.dataclass(frozen=True)
class BucketLadder:
    """The padded (n_node, n_edge) shapes a run's shards may take, smallest first; the last one
    fits any shard of the dataset, so no batch can ever need a shape outside the ladder.

    Attributes:
        shapes: ((n_node, n_edge), ...) per shard, padding node included.
    """

    shapes: tuple[tuple[int, int], ...]

    def shape_for(self, n_node: int, n_edge: int) -> tuple[int, int]:
        """The cheapest shape holding ``n_node`` real nodes (plus the padding one) and ``n_edge`` edges."""
        fits = [s for s in self.shapes if s[0] > n_node and s[1] >= n_edge]
        if not fits:
            raise DataError(f"batch of {n_node} atoms and {n_edge} edges exceeds every bucket {self.shapes}")
        return min(fits, key=lambda s: (s[1], s[0]))


def fit_ladder(
    graphs: Sequence[FrameGraph],
    batch_size: int,
    n_shards: int,
    seed: int,
    max_shapes: int,
    sample_epochs: int = 8,
) -> BucketLadder:
    """At most ``max_shapes`` padded shard shapes for training on ``graphs``.

    The shard sizes of the first ``sample_epochs`` epochs are computed from the frame sizes alone
    (cheap index arithmetic). If their natural buckets (:func:`nnpes.data.graph.bucket`) number
    fewer than ``max_shapes``, those are the ladder; otherwise the sampled shards are split into
    groups of equal count by edge number and each group gets the bucket of its largest member.
    The top rung is always the worst case (the largest frames together), so a later epoch can
    never need a shape outside the ladder.
    """
    nodes = np.array([g.n_node for g in graphs], np.int64)
    edges = np.array([g.n_edge for g in graphs], np.int64)
    per_shard = math.ceil(batch_size / n_shards)
    worst = (bucket(np.sort(nodes)[::-1][:per_shard].sum() + 1), bucket(np.sort(edges)[::-1][:per_shard].sum()))
    need = []
    for epoch in range(sample_epochs):
        for idx in epoch_batches(len(graphs), batch_size, seed, epoch):
            shards = _shards(idx, n_shards)
            need.append((max(nodes[s].sum() for s in shards), max(edges[s].sum() for s in shards)))
    need = np.array(need, np.int64)
    natural = {(bucket(n + 1), bucket(e)) for n, e in need}
    if len(natural | {worst}) <= max_shapes:
        return BucketLadder(tuple(sorted(natural | {worst}, key=lambda s: (s[1], s[0]))))
    order = need[np.argsort(need[:, 1], kind="stable")]
    shapes = {worst}
    for group in np.array_split(order, max_shapes - 1) if max_shapes > 1 else []:
        if len(group):
            shapes.add((bucket(group[:, 0].max() + 1), bucket(group[:, 1].max())))
    return BucketLadder(tuple(sorted(shapes, key=lambda s: (s[1], s[0]))))  # ≤ (max_shapes − 1) groups + worst


def shard_batch(
    graphs: Sequence[FrameGraph], n_shards: int, dtype, ladder: BucketLadder | None = None
) -> jraph.GraphsTuple:
    """Split a batch over devices: one padded graph per shard, all shards one shape (the
    ladder's cheapest that fits the largest shard, or its natural bucket without a ladder),
    stacked on a leading axis (numpy arrays)."""
    return member_batches([graphs], n_shards, dtype, ladder, stack=False)


def member_batches(
    batches: Sequence[Sequence[FrameGraph]],
    n_shards: int,
    dtype,
    ladder: BucketLadder | None = None,
    stack: bool = True,
) -> jraph.GraphsTuple:
    """:func:`shard_batch` of several batches (an ensemble's members, each its own frames) in
    one padded shape, stacked on a leading axis: arrays (len(batches), n_shards, ...). With
    ``stack`` False, the single batch's (n_shards, ...) arrays."""
    parts = [[[graphs[i] for i in c] for c in _shards(np.arange(len(graphs)), n_shards)] for graphs in batches]
    flat = [p for member in parts for p in member]
    real_nodes = max(sum(g.n_node for g in p) for p in flat)
    real_edges = max(sum(g.n_edge for g in p) for p in flat)
    if ladder is None:
        n_node, n_edge = bucket(real_nodes + 1), bucket(real_edges)
    else:
        n_node, n_edge = ladder.shape_for(real_nodes, real_edges)
    n_graph = max(len(p) for p in flat) + 1
    stacked = []
    for member in parts:
        padded = [batch_graphs(p, n_node, n_edge, n_graph, dtype=dtype) for p in member]
        stacked.append(jax.tree.map(lambda *x: np.stack(x), *padded))
    return jax.tree.map(lambda *x: np.stack(x), *stacked) if stack else stacked[0]
