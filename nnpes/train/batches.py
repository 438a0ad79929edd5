"""Batches of an epoch: which frames (a pure function of seed and epoch) and their padded shards."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jraph
import numpy as np

from nnpes.data.graph import FrameGraph, batch_graphs, common_pad_sizes


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Frame indices of every batch of an epoch: a seeded permutation, the last batch filled up
    from the start of the permutation so every batch is full (one padded shape per dataset)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps = math.ceil(n / batch_size)
    total = steps * batch_size
    padded = np.concatenate([perm, perm[: total - n]]) if n >= batch_size else np.resize(perm, total)
    return [padded[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def shard_batch(graphs: Sequence[FrameGraph], n_shards: int, dtype) -> jraph.GraphsTuple:
    """Split a batch over devices: one padded graph per shard (all shards one shape, from
    :func:`nnpes.data.graph.common_pad_sizes`), stacked on a leading axis (numpy arrays)."""
    parts = [[graphs[i] for i in c] for c in np.array_split(np.arange(len(graphs)), n_shards)]
    n_node, n_edge, n_graph = common_pad_sizes(parts)
    padded = [batch_graphs(p, n_node, n_edge, n_graph, dtype=dtype) for p in parts]
    return jax.tree.map(lambda *x: np.stack(x), *padded)
