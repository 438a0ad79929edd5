"""MACE's symmetric product basis: B_i = Σ_ν w^ν(s_i) · U^ν · A_i^{⊗ν}, channel by channel.

For one channel k of atom i, A_ik is a vector of D components (irreps 0e + 1o + 2e + … up to
l_max: D = (l_max + 1)²). Its ν-fold tensor power, contracted with e3nn's reduced symmetric
tensor-product basis U^ν (:func:`e3nn.reduced_symmetric_tensor_product_basis`), gives every
equivariant polynomial of degree ν in A_ik with output irreps ``irreps_out``; species-dependent
weights mix those paths. Degree ν sees (ν + 1)-body correlations.

U^ν is symmetric in its ν input indices, so the contraction runs over the C(D + ν − 1, ν)
distinct monomials A_a A_b … (a ≤ b ≤ …) instead of all D^ν products, with U folded onto
them on the host (165 instead of 729 for l_max = 2, ν = 3), and all degrees and output irreps
in one matrix product.
"""

from __future__ import annotations

import functools
import itertools

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=32)
def symmetric_basis(irreps_in: str, irreps_out: str, correlation: int):
    """Host tables for :class:`SymmetricContraction` (per channel; irreps of multiplicity 1).

    Returns (steps, projection, blocks):
        steps: for degrees 2..ν, index pairs (lower, last) such that monomial c of degree ν is
            monomial ``lower[c]`` of degree ν − 1 times component ``last[c]``.
        projection: (C, Q) float64, C = monomials of all degrees, Q = Σ paths · (2l + 1).
        blocks: ((ir, paths, offset into Q), ...) for every output irrep that has a path.
    """
    irreps_in_, keep = e3nn.Irreps(irreps_in), e3nn.Irreps(irreps_out)
    dim = irreps_in_.dim
    combos = {nu: list(itertools.combinations_with_replacement(range(dim), nu)) for nu in range(1, correlation + 1)}
    steps = []
    for nu in range(2, correlation + 1):
        position = {c: k for k, c in enumerate(combos[nu - 1])}
        steps.append(
            (
                np.array([position[c[:-1]] for c in combos[nu]], np.int32),
                np.array([c[-1] for c in combos[nu]], np.int32),
            )
        )
    per_irrep = {ir: [] for _, ir in keep}  # ir -> [(degree, (C_ν, P, 2l+1))]
    for nu in range(1, correlation + 1):
        u = e3nn.reduced_symmetric_tensor_product_basis(irreps_in_, nu, keep_ir=list(per_irrep))
        full = np.asarray(u.array, np.float64).reshape(dim**nu, -1)
        position = {c: k for k, c in enumerate(combos[nu])}
        rows = [position[tuple(sorted(t))] for t in itertools.product(range(dim), repeat=nu)]
        folded = np.zeros((len(combos[nu]), full.shape[1]))
        np.add.at(folded, rows, full)  # Σ over the orderings of each monomial
        for (mul, ir), sl in zip(u.irreps, u.irreps.slices()):
            per_irrep[ir].append((nu, folded[:, sl].reshape(len(combos[nu]), mul, ir.dim)))
    offsets = np.cumsum([0] + [len(combos[nu]) for nu in range(1, correlation + 1)])
    columns, blocks, q = [], [], 0
    for ir, parts in per_irrep.items():
        paths = sum(p.shape[1] for _, p in parts)
        if not paths:
            continue
        block = np.zeros((offsets[-1], paths, ir.dim))
        start = 0
        for nu, p in parts:
            block[offsets[nu - 1] : offsets[nu], start : start + p.shape[1]] = p
            start += p.shape[1]
        columns.append(block.reshape(offsets[-1], -1))
        blocks.append((ir, paths, q))
        q += paths * ir.dim
    return tuple(steps), np.concatenate(columns, axis=1), tuple(blocks)


def monomials(a: jnp.ndarray, steps) -> jnp.ndarray:
    """(..., D) → (..., C): the distinct monomials of degrees 1..ν of the last axis."""
    out, current = [a], a
    for lower, last in steps:
        current = current[..., lower] * a[..., last]
        out.append(current)
    return jnp.concatenate(out, axis=-1)


class SymmetricContraction(nn.Module):
    """Channel-wise equivariant polynomial of degree ≤ ``correlation`` in the atomic basis, with
    one weight per (species, degree, path, channel).

    Input: species (N,) int; a (N, K × irreps_in) with every irrep of multiplicity K.
    Output: (N, K × ``irreps_out``) (irreps with no path from the input are left out).
    """

    irreps_out: str
    correlation: int
    num_species: int

    @nn.compact
    def __call__(self, species: jnp.ndarray, a: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        muls = {mul for mul, _ in a.irreps}
        if len(muls) != 1:
            raise ValueError(f"SymmetricContraction wants one multiplicity for every irrep, got {a.irreps}")
        (channels,), n = muls, a.shape[0]
        per_channel = e3nn.Irreps([(1, ir) for _, ir in a.irreps])
        parts = [a.array[:, sl].reshape(n, channels, ir.dim) for (_, ir), sl in zip(a.irreps, a.irreps.slices())]
        steps, projection, blocks = symmetric_basis(
            str(per_channel), str(e3nn.Irreps(self.irreps_out)), self.correlation
        )
        x = monomials(jnp.concatenate(parts, axis=-1), steps)  # (N, K, C)
        y = x @ jnp.asarray(projection, a.dtype)  # (N, K, Q)
        one_hot = jax.nn.one_hot(species, self.num_species, dtype=a.dtype)
        irreps, chunks = [], []
        for ir, paths, offset in blocks:
            w = self.param(f"w_{ir}", nn.initializers.normal(paths**-0.5), (self.num_species, paths, channels), a.dtype)
            w_atom = jnp.einsum("ns,spk->npk", one_hot, w)
            y_ir = y[..., offset : offset + paths * ir.dim].reshape(n, channels, paths, ir.dim)
            chunks.append(jnp.einsum("nkpd,npk->nkd", y_ir, w_atom))
            irreps.append((channels, ir))
        return e3nn.from_chunks(irreps, chunks, (n,), a.dtype)
