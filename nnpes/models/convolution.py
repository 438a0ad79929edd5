"""The edge convolution shared by the equivariant families: messages h_j ⊗ Y(r̂_ij) weighted by
a radial MLP, summed onto receivers, over all edges at once or in rematerialised chunks.

NequIP (:mod:`nnpes.models.nequip`) gates the sums; MACE (:mod:`nnpes.models.mace`) takes them
as its atomic basis A_i. Both run the loop here, so chunking, the mirrored-edge trick and the
edge basis are written once.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import flax.linen as nn
import jax.numpy as jnp

from nnpes.models.base import safe_vector
from nnpes.models.blocks import MLP
from nnpes.models.radial import bessel_basis, polynomial_envelope
from nnpes.models.tensor_products import scale_irreps, sh_tensor_product


def edge_chunk_size(n_edge: int, bytes_per_edge: int, edge_chunk: int | None, memory_mb: float) -> int:
    """Edges per step of the interaction's edge loop (0: all edges in one pass).

    ``edge_chunk`` when given; otherwise the largest chunk whose per-edge intermediates fit in
    ``memory_mb`` MB, balanced so that the last chunk is nearly full (padding < one edge per
    chunk). Only the order of summation depends on it, never the function."""
    if edge_chunk is not None:
        return 0 if edge_chunk <= 0 or edge_chunk >= n_edge else int(edge_chunk)
    fit = max(64, int(memory_mb * 2**20 // max(bytes_per_edge, 1)))
    if n_edge <= fit:
        return 0
    n_chunk = -(-n_edge // fit)
    return -(-n_edge // n_chunk)


def gate_irreps(target: e3nn.Irreps) -> e3nn.Irreps:
    """Irreps a layer's linear map produces before the gate: scalars, one gate scalar per
    non-scalar irrep, the non-scalars (e3nn.gate wants the gates right of the scalars)."""
    scalars = target.filter(keep=["0e", "0o"])
    nonscalars = target.filter(drop=["0e", "0o"])
    gates = e3nn.Irreps(f"{nonscalars.num_irreps}x0e") if nonscalars.num_irreps else e3nn.Irreps("")
    return scalars + gates + nonscalars


def message_irreps(features: e3nn.Irreps, sh_irreps: e3nn.Irreps, target: e3nn.Irreps) -> e3nn.Irreps:
    """Irreps of the messages: features ⊗ Y_l, keeping the irreps of ``target`` (and, for a gated
    target, of its gates)."""
    return e3nn.tensor_product(
        e3nn.zeros(features), e3nn.zeros(sh_irreps), filter_ir_out=gate_irreps(target).regroup()
    ).irreps


class EdgeMessages(nn.Module):
    """Messages of a set of edges added onto their receivers' sums: the tensor product of the
    sender's features with Y_l(r̂), times a radial MLP's weight per output irrep.

    The edge basis (Y_l and the enveloped Bessel functions) is computed here from the edge
    vectors, so that a scan over edge chunks, rematerialised in the backward pass, stores only
    vectors and indices per edge (recomputing the basis costs ~1 % of a layer). A module of its
    own so that :func:`sum_messages` can run it over all edges at once or scanned, with the same
    parameters."""

    radial_features: tuple[int, ...]
    target_irreps: e3nn.Irreps
    sh_irreps: e3nn.Irreps
    cutoff: float
    num_basis: int
    envelope_p: int
    both_directions: bool = False

    @nn.compact
    def __call__(self, acc, h, edges):
        """acc (N, D) per-atom sums; h (N,) sender features; edges = (vectors (B, 3) Å (safe
        non-zero vectors where masked), mask (B,), senders (B,), receivers (B,)).
        ``both_directions``: each edge also stands for its reverse (vector −r, sender and
        receiver swapped), whose radial weights are the same and whose Y_l(−r) = (−1)^l Y_l(r):
        the basis and the radial MLP are evaluated once per pair.
        Returns (acc + the messages, None)."""
        vectors, mask, senders, receivers = edges
        lengths = jnp.linalg.norm(vectors, axis=-1)
        sh = e3nn.spherical_harmonics(self.sh_irreps, vectors, normalize=True, normalization="component")
        radial = bessel_basis(lengths, self.cutoff, self.num_basis)
        radial = radial * polynomial_envelope(lengths, self.cutoff, self.envelope_p)[:, None]
        mlp = MLP(
            tuple(self.radial_features) + (self.message_irreps(h.irreps).num_irreps,),
            use_bias=False,
            layer_prefix="Dense",
        )
        nn.share_scope(self, mlp)  # parameter names radial/Dense_<i>: those of saved models
        weights = mlp(radial) * mask[:, None].astype(radial.dtype)
        if self.both_directions:
            sign = jnp.concatenate([jnp.full(mul * ir.dim, ir.p, sh.dtype) for mul, ir in sh.irreps])
            sh = e3nn.IrrepsArray(sh.irreps, jnp.concatenate([sh.array, sh.array * sign]))
            senders, receivers = jnp.concatenate([senders, receivers]), jnp.concatenate([receivers, senders])
            weights = jnp.concatenate([weights, weights])
        messages = sh_tensor_product(h[senders], sh, gate_irreps(e3nn.Irreps(self.target_irreps)).regroup())
        messages = scale_irreps(messages, weights)
        return acc.at[receivers].add(messages.array), None

    def message_irreps(self, features: e3nn.Irreps) -> e3nn.Irreps:
        return message_irreps(features, self.sh_irreps, e3nn.Irreps(self.target_irreps))


def split_edges(vectors, edge_mask, senders, receivers, chunk: int, safe):
    """(E, ...) edge arrays → (C, chunk, ...) with C = ⌈E / chunk⌉; the padding edges of the
    last chunk get the safe vector and mask False."""
    n_edge = vectors.shape[0]
    n_chunk = -(-n_edge // chunk)
    pad = n_chunk * chunk - n_edge
    vectors = jnp.concatenate([vectors, jnp.broadcast_to(safe, (pad, 3))])
    edge_mask = jnp.concatenate([edge_mask, jnp.zeros(pad, bool)])
    senders = jnp.concatenate([senders, jnp.zeros(pad, senders.dtype)])
    receivers = jnp.concatenate([receivers, jnp.zeros(pad, receivers.dtype)])
    return tuple(a.reshape((n_chunk, chunk) + a.shape[1:]) for a in (vectors, edge_mask, senders, receivers))


def prepare_edges(model, vectors, edge_mask, senders, receivers, *, features, sh_irreps, target, mirrored: bool):
    """The edges as the convolution loops over them: flat ((E, 3) vectors, (E,) mask, senders,
    receivers) or split into (C, B, ...) chunks (:func:`edge_chunk_size`, :func:`split_edges`),
    sized for the widest layer (``features`` ⊗ Y → ``target``) from the model's ``edge_chunk``,
    ``edge_memory_mb``, ``radial_features`` and ``cutoff``. ``mirrored``: edge E/2 + k is edge k
    reversed, so only the first half is kept and each edge stands for both directions."""
    # per-edge intermediates: gathered features, messages (product, weighted, cotangent), their
    # weights and the radial MLP's hidden layers
    msg = message_irreps(features, sh_irreps, target)
    per_edge = features.dim + 3 * msg.dim + 2 * msg.num_irreps + 2 * sum(model.radial_features) + sh_irreps.dim
    per_edge *= vectors.dtype.itemsize
    edges = (vectors, edge_mask, senders, receivers)
    if mirrored:
        edges = tuple(a[: a.shape[0] // 2] for a in edges)
        per_edge *= 2
    given = model.edge_chunk if model.edge_chunk is None or not mirrored else -(-model.edge_chunk // 2)
    chunk = edge_chunk_size(edges[0].shape[0], per_edge, given, model.edge_memory_mb)
    if chunk:
        edges = split_edges(*edges, chunk, safe_vector(model.cutoff, vectors.dtype))
    return edges


def convolve(layer, h: e3nn.IrrepsArray, edges, target: e3nn.Irreps) -> e3nn.IrrepsArray:
    """Σ_j R(r_ij) h_j ⊗ Y(r̂_ij) over every atom's edges, divided by √(mean neighbour count):
    the (N, message irreps) sums a layer of either family starts from. ``layer`` is the calling
    compact module; its fields radial_features, sh_irreps, cutoff, num_basis, envelope_p,
    both_directions and avg_num_neighbors set the convolution (parameters under "radial")."""
    msg_irreps = message_irreps(h.irreps, layer.sh_irreps, target)
    acc = jnp.zeros((h.shape[0], msg_irreps.dim), h.dtype)
    fields = (layer.radial_features, target, layer.sh_irreps, layer.cutoff, layer.num_basis, layer.envelope_p)
    acc = sum_messages(fields + (layer.both_directions,), acc, h, edges)
    return e3nn.IrrepsArray(msg_irreps, acc) / jnp.sqrt(layer.avg_num_neighbors).astype(acc.dtype)


def sum_messages(fields: tuple, acc, h, edges, name: str = "radial"):
    """acc + Σ over ``edges`` of :class:`EdgeMessages` (fields: its dataclass fields in order),
    as one pass over flat edges or a scan over chunks, rematerialised in the backward pass so
    that no (edges × features) array is held. Call from inside a compact module."""
    if edges[0].ndim == 2:
        return EdgeMessages(*fields, name=name)(acc, h, edges)[0]
    scan = nn.scan(
        nn.remat(EdgeMessages, prevent_cse=False),
        variable_broadcast="params",
        split_rngs={"params": False},
        in_axes=(nn.broadcast, 0),
        length=edges[0].shape[0],
    )
    return scan(*fields, name=name)(acc, h, edges)[0]
