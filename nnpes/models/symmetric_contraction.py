"""MACE's symmetric product basis: B_i = Σ_ν w^ν(s_i) · U^ν · A_i^{⊗ν}, channel by channel.

For one channel k of atom i, A_ik is a vector of D components (irreps 0e + 1o + 2e + … up to
l_max: D = (l_max + 1)²). Its ν-fold tensor power, contracted with e3nn's reduced symmetric
tensor-product basis U^ν (:func:`e3nn.reduced_symmetric_tensor_product_basis`), gives every
equivariant polynomial of degree ν in A_ik with output irreps ``irreps_out``; species-dependent
weights mix those paths. Degree ν sees (ν + 1)-body correlations.

U^ν is symmetric in its ν input indices, so degree ν is contracted as Σ_k A_k Σ_c m_c U'[c, k]
over the C(D + ν − 2, ν − 1) distinct monomials m of degree ν − 1 (45 instead of 81 for
l_max = 2, ν = 3), with U folded onto them on the host: one matrix product per degree.
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

    Returns a tuple, one entry per degree ν = 1..correlation, of (u, layout):
        u: (C_{ν−1}, D, Q_ν) float64: U^ν with its first ν − 1 indices folded onto the distinct
            monomials of degree ν − 1 (C_0 = 1) and its last index kept, so that
            Y_ν = Σ_k a_k Σ_c m_c u[c, k] over monomials m of degree ν − 1.
        layout: ((ir, paths, first column), ...) of the Q_ν columns.
    """
    irreps_in_, keep = e3nn.Irreps(irreps_in), [ir for _, ir in e3nn.Irreps(irreps_out)]
    dim = irreps_in_.dim
    degrees = []
    for nu in range(1, correlation + 1):
        u = e3nn.reduced_symmetric_tensor_product_basis(irreps_in_, nu, keep_ir=keep)
        full = np.asarray(u.array, np.float64).reshape(dim ** (nu - 1), dim, -1)
        position = {c: k for k, c in enumerate(itertools.combinations_with_replacement(range(dim), nu - 1))}
        rows = [position[tuple(sorted(t))] for t in itertools.product(range(dim), repeat=nu - 1)]
        folded = np.zeros((len(position), dim, full.shape[-1]))
        np.add.at(folded, rows, full)  # Σ over the orderings of each lower monomial
        layout = tuple((ir, mul, sl.start) for (mul, ir), sl in zip(u.irreps, u.irreps.slices()) if mul)
        degrees.append((folded, layout))
    return tuple(degrees)


def next_monomials(x: jnp.ndarray, a: jnp.ndarray, degree: int) -> jnp.ndarray:
    """The distinct monomials of degree ``degree`` + 1 of a's last axis (D), from those of
    ``degree`` (x, in itertools.combinations_with_replacement order): each monomial times the
    components from its last index on. Built from slices, not gathers: their derivatives (twice,
    for the parameter gradient of forces) stay cheap on a CPU, where a gather's are scatters."""
    lasts = [c[-1] for c in itertools.combinations_with_replacement(range(a.shape[-1]), degree)]
    return jnp.concatenate([x[..., i : i + 1] * a[..., last:] for i, last in enumerate(lasts)], axis=-1)


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
        degrees = symmetric_basis(str(per_channel), str(e3nn.Irreps(self.irreps_out)), self.correlation)
        a = jnp.concatenate(parts, axis=-1)  # (N, K, D)
        paths = {}  # ir -> [(N, K, P, 2l + 1) of each degree]
        x = a
        for nu, (u, layout) in enumerate(degrees, start=1):
            if nu == 1:
                y = a @ jnp.asarray(u[0], a.dtype)
            else:
                if nu > 2:
                    x = next_monomials(x, a, nu - 2)
                y = (x @ jnp.asarray(u.reshape(u.shape[0], -1), a.dtype)).reshape(x.shape[:-1] + u.shape[1:])
                y = jnp.sum(y * a[..., None], axis=-2)  # Σ_k a_k (…)_k
            for ir, mul, start in layout:
                paths.setdefault(ir, []).append(y[..., start : start + mul * ir.dim].reshape(n, channels, mul, ir.dim))
        one_hot = jax.nn.one_hot(species, self.num_species, dtype=a.dtype)
        irreps, chunks = [], []
        for ir in dict.fromkeys(ir for _, ir in e3nn.Irreps(self.irreps_out)):
            if ir not in paths:
                continue
            y_ir = jnp.concatenate(paths[ir], axis=2)  # (N, K, P, 2l + 1), degrees in order
            n_paths = y_ir.shape[2]
            w = self.param(
                f"w_{ir}", nn.initializers.normal(n_paths**-0.5), (self.num_species, n_paths, channels), a.dtype
            )
            w_atom = (one_hot @ w.reshape(self.num_species, -1)).reshape(n, n_paths, channels)
            chunks.append(jnp.sum(y_ir * jnp.swapaxes(w_atom, 1, 2)[..., None], axis=2))
            irreps.append((channels, ir))
        return e3nn.from_chunks(irreps, chunks, (n,), a.dtype)
