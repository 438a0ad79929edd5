"""Tensor product of per-edge features with spherical harmonics, arranged for speed.

``sh_tensor_product(x, sh, filter_ir_out)`` equals ``e3nn.tensor_product(x, sh,
filter_ir_out=...)`` (same irreps, same order, same component normalisation) when every irrep
of ``sh`` has multiplicity 1, as spherical harmonics do. e3nn forms the outer product
x_ui·Y_j (E × u × i × j) and contracts it with each Clebsch–Gordan tensor C_ijk. Here Y is
contracted with C first, M_ik = Σ_j C_ijk Y_j (no channel index: E × i × k, tiny), and then
the channels, out_uk = Σ_i x_ui M_ik, for all outputs of one input irrep at once: a factor
(2 l_Y + 1) fewer operations and no outer-product array, forward and backward.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import flax.linen as nn
import jax.numpy as jnp
from e3nn_jax._src.linear import FunctionalLinear


def sh_tensor_product(x: e3nn.IrrepsArray, sh: e3nn.IrrepsArray, filter_ir_out) -> e3nn.IrrepsArray:
    """``e3nn.tensor_product(x, sh, filter_ir_out=filter_ir_out)`` for (E,)-shaped inputs whose
    second factor has multiplicity-1 irreps (spherical harmonics). Falls back to e3nn otherwise.

    Args:
        x: (E, x.irreps.dim) features. sh: (E, sh.irreps.dim) spherical harmonics.
        filter_ir_out: the output irreps to keep (e3nn Irreps or list of Irrep).
    """
    x, sh = x.regroup(), sh.regroup()
    normalization, norms = e3nn.config("irrep_normalization"), ("component", "norm")
    if any(mul != 1 for mul, _ in sh.irreps) or x.ndim != 2 or sh.ndim != 2 or normalization not in norms:
        return e3nn.tensor_product(x, sh, filter_ir_out=filter_ir_out)
    keep = None if filter_ir_out is None else {ir for _, ir in e3nn.Irreps(filter_ir_out)}
    dtype = x.dtype
    irreps_out, chunks = [], []
    sh_chunks = [c[:, 0, :] for c in sh.chunks]  # (E, 2l+1) each
    for (mul, ir_1), x1 in zip(x.irreps, x.chunks):
        paths = []  # (ir_out, M (E, i, k)) for every output of this input irrep, in e3nn's order
        for (_, ir_2), y in zip(sh.irreps, sh_chunks):
            for ir_out in ir_1 * ir_2:
                if keep is not None and ir_out not in keep:
                    continue
                cg = e3nn.clebsch_gordan(ir_1.l, ir_2.l, ir_out.l)
                cg = cg * (ir_out.dim if normalization == "component" else ir_1.dim * ir_2.dim) ** 0.5
                paths.append((ir_out, jnp.einsum("ej,ijk->eik", y, cg.astype(dtype))))
        if not paths:
            continue
        if x1 is None:  # a known-zero input block gives known-zero outputs, as in e3nn
            irreps_out += [(mul, ir_out) for ir_out, _ in paths]
            chunks += [None] * len(paths)
            continue
        m = jnp.concatenate([p for _, p in paths], axis=-1)  # (E, i, K)
        out = _contract(x1, m)
        start = 0
        for ir_out, _ in paths:
            irreps_out.append((mul, ir_out))
            chunks.append(out[:, :, start : start + ir_out.dim])
            start += ir_out.dim
    # e3nn emits the paths in (input 1, input 2, output) order too: from here on they are identical
    return e3nn.from_chunks(irreps_out, chunks, (x.shape[0],), dtype).sort().regroup()


BROADCAST_MAX_DIM = 5  # input irreps up to l = 2: broadcast products; larger ones: a batched matmul


def _contract(x1: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
    """out_euK = Σ_i x1_eui m_eiK. For small i, as i broadcast products: XLA:CPU fuses them
    with their neighbours, where a batched matmul of (32 × i)·(i × K) blocks stays a slow call of
    its own, twice over in the second derivative training takes (aspirin, batch 8, l ≤ 1: the
    parameter gradient of energy + forces 64 → 44 ms; energy + forces alone unchanged)."""
    if m.shape[1] > BROADCAST_MAX_DIM:
        return jnp.einsum("eui,eiK->euK", x1, m)
    return sum(x1[:, :, i, None] * m[:, None, i, :] for i in range(m.shape[1]))


def scale_irreps(x: e3nn.IrrepsArray, weights: jnp.ndarray) -> e3nn.IrrepsArray:
    """Multiply every irrep of x (E, dim) by its own scalar, weights (E, x.irreps.num_irreps).

    The same as ``x * weights`` in e3nn, which treats the weights as 0e irreps and runs a
    Clebsch–Gordan contraction per block; a broadcast product per block is several times cheaper.
    """
    parts, start = [], 0
    for (mul, _), chunk in zip(x.irreps, x.chunks):
        parts.append(None if chunk is None else chunk * weights[:, start : start + mul, None])
        start += mul
    return e3nn.from_chunks(x.irreps, parts, x.shape[:-1], x.dtype)


class SpeciesLinear(nn.Module):
    """``e3nn.flax.Linear(irreps_out, num_indexed_weights=num_species, force_irreps_out=True)
    (species, x)``: an equivariant linear map with one weight set per species, with the same
    parameters (names, shapes, initialisation) and outputs.

    e3nn gathers every atom's weight matrices (N × 32 × 32 floats per irrep block, the largest
    arrays of a NequIP layer); here each species' map is applied to all atoms and the result
    selected per atom, so the working memory is that of the features.
    """

    irreps_out: e3nn.Irreps
    num_species: int

    @nn.compact
    def __call__(self, species: jnp.ndarray, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        x = x.remove_zero_chunks().regroup()
        lin = FunctionalLinear(x.irreps, e3nn.Irreps(self.irreps_out).simplify())
        weights = [
            self.param(
                f"w[{ins.i_in},{ins.i_out}] {lin.irreps_in[ins.i_in]},{lin.irreps_out[ins.i_out]}",
                nn.initializers.normal(stddev=ins.weight_std),
                (self.num_species,) + ins.path_shape,
                x.dtype,
            )
            for ins in lin.instructions
        ]
        apply = e3nn.utils.vmap(lin, in_axes=(None, 0))
        out = apply([w[0] for w in weights], x)
        for s in range(1, self.num_species):  # zero chunks stay None (known zeros, as in e3nn)
            other, is_s = apply([w[s] for w in weights], x), (species == s)[:, None, None]
            chunks = [None if a is None else jnp.where(is_s, b, a) for a, b in zip(out.chunks, other.chunks)]
            out = e3nn.from_chunks(out.irreps, chunks, out.shape[:-1], out.dtype)
        return out.rechunk(self.irreps_out)
