"""Behler–Parrinello neural-network potential (Behler & Parrinello 2007; Behler 2011).

Atom-centred symmetry functions, resolved by neighbour element, feed one small network per
element that outputs the site energy. Every symmetry function is computed from the padded
edge list inside ``jit`` with segment sums over edges, so time and memory grow linearly with
the number of atoms; the angular functions need no triplet list (see
:mod:`nnpes.models.descriptors`).

Symmetry functions of atom i (f_c = the project's polynomial envelope, r_ij = |r_ij|):

    G2[a, k]          = Σ_{j∈a} exp(−η_k (r_ij − Rs_k)²) f_c(r_ij)                 / n̄
    G5[ab, η, ζ, λ]   = 2^{1−ζ} Σ_{j≠k, {s_j, s_k} = {a, b}} (1 + λ cos θ_ijk)^ζ
                              exp(−η (r_ij² + r_ik²)) f_c(r_ij) f_c(r_ik)              / n̄²

where j, k run over edges of i (distinct periodic images are distinct neighbours), the
angular sum is over ordered pairs, and n̄ = ``avg_num_neighbors`` of the training data (a
fixed constant that keeps the features O(1)).

Linear-time angular functions: with integer ζ, (1 + λc)^ζ = Σ_n C(ζ, n) λ^n c^n and
c^n = (r̂_ij·r̂_ik)^n = ⟨r̂_ij^{⊗n}, r̂_ik^{⊗n}⟩. Hence, with g_j = exp(−η r_ij²) f_c(r_ij) and
the per-atom moments M_a^{(n)} = Σ_{j∈a} g_j r̂_ij^{⊗n},

    Σ_{j≠k, s_j=a, s_k=b} g_j g_k c_jk^n = ⟨M_a^{(n)}, M_b^{(n)}⟩ − δ_ab Σ_{j∈a} g_j².

The edge terms are summed onto atoms a chunk of edges at a time (:func:`chunked_segment_sum`),
so no (edges × terms) array is ever held, forward or backward.

Feature layout (F per atom): radial block (S neighbour species × R radial functions), then the
angular block (P species pairs a ≤ b in lexicographic order × η × ζ × λ), P = S(S+1)/2.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field

from nnpes.models.base import (
    EnvelopeOrder,
    Fitted,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SiteModel,
    Widths,
    safe_vector,
    site_outputs,
)
from nnpes.models.descriptors import angular_monomials, chunked_segment_sum, edge_chunk_schedule, order_blocks
from nnpes.models.radial import polynomial_envelope

_DEFAULT_R_MIN = 0.5  # Å, first radial shift of the default grid


# -- descriptor grids ----------------------------------------------------------------------
def radial_grid(model: "BehlerParrinello") -> tuple[np.ndarray, np.ndarray]:
    """(shifts Rs (R,) Å, widths η (R,) Å⁻²) of the radial functions.

    Default: ``num_radial`` shifts evenly spaced from 0.5 Å with spacing Δ = (r_c − 0.5)/R and
    η = 1/(2Δ²), so neighbouring Gaussians overlap at about one standard deviation.
    """
    if model.radial_shifts is None:
        spacing = (model.cutoff - _DEFAULT_R_MIN) / model.num_radial
        shifts = _DEFAULT_R_MIN + spacing * np.arange(model.num_radial)
    else:
        shifts = np.asarray(model.radial_shifts, np.float64).reshape(-1)
        spacing = (model.cutoff - shifts.min()) / len(shifts)
    if model.radial_etas is None:
        etas = np.full(len(shifts), 1.0 / (2.0 * spacing**2))
    else:
        etas = np.asarray(model.radial_etas, np.float64).reshape(-1)
        if len(etas) == 1:
            etas = np.full(len(shifts), etas[0])
    return shifts, etas


def angular_grid(model: "BehlerParrinello") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(η (K,) Å⁻², ζ (Z,) int, λ (L,) ±1) of the angular functions.

    Default η: (1, 4)/r_c², i.e. the Gaussian falls to e⁻¹ at r = r_c and r = r_c/2.
    """
    etas = (
        np.array([1.0, 4.0]) / model.cutoff**2
        if model.angular_etas is None
        else np.asarray(model.angular_etas, np.float64).reshape(-1)
    )
    zetas = np.asarray(model.zetas, np.int64).reshape(-1)
    lambdas = np.asarray(model.lambdas).reshape(-1)
    return etas, zetas.astype(np.int64), lambdas.astype(np.float64)


def species_pairs(num_species: int) -> tuple[np.ndarray, np.ndarray]:
    """Unordered neighbour-species pairs (a ≤ b), lexicographic: (first (P,), second (P,))."""
    a, b = np.triu_indices(num_species)
    return a, b


def num_features(model: "BehlerParrinello") -> int:
    """Descriptor length F per atom (see the module docstring for the layout)."""
    shifts, _ = radial_grid(model)
    etas, zetas, lambdas = angular_grid(model)
    s = model.num_species
    return s * len(shifts) + (s * (s + 1) // 2) * len(etas) * len(zetas) * len(lambdas)


def _expansion_coefficients(zetas: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """(n_max+1, Z·L): 2^{1−ζ} C(ζ, n) λ^n, so that G5 = Σ_n coeff[n] · (pair sum of c^n)."""
    n_max = int(zetas.max())
    coeff = np.zeros((n_max + 1, len(zetas), len(lambdas)))
    for iz, zeta in enumerate(zetas):
        for il, lam in enumerate(lambdas):
            for n in range(zeta + 1):
                coeff[n, iz, il] = 2.0 ** (1 - zeta) * math.comb(int(zeta), n) * lam**n
    return coeff.reshape(n_max + 1, -1)


# -- per-edge terms and their sum onto atoms ----------------------------------------------
def _edge_terms(vectors, mask, cutoff, envelope_p, shifts, widths, etas, n_max):
    """(E, R + K·M + K) per-edge terms: G2 summands exp(−η(r−Rs)²) f_c, then g_k·r̂^{⊗n}
    (g_k = exp(−η_k r²) f_c, monomials of every order n ≤ n_max), then g_k². Zero on masked edges."""
    dtype = vectors.dtype
    r = jnp.linalg.norm(vectors, axis=-1)
    fc = polynomial_envelope(r, cutoff, envelope_p) * mask.astype(dtype)
    g2 = jnp.exp(-jnp.asarray(widths, dtype) * (r[:, None] - jnp.asarray(shifts, dtype)) ** 2) * fc[:, None]
    if n_max < 0:
        return g2
    g = jnp.exp(-jnp.asarray(etas, dtype) * r[:, None] ** 2) * fc[:, None]  # (E, K)
    mono = angular_monomials(vectors / r[:, None], n_max)  # (E, M)
    return jnp.concatenate([g2, (g[:, :, None] * mono[:, None, :]).reshape(r.shape[0], -1), g**2], axis=1)


# -- the model -----------------------------------------------------------------------------
class BehlerParrinello(SiteModel):
    """Behler–Parrinello potential: element-resolved G2/G5 symmetry functions → one MLP per
    element → site output.

    Hyper-parameters:
        num_radial: radial functions in the default grid (used when radial_shifts is None).
        radial_shifts: Rs of the G2 functions, Å (None: generated from the cutoff).
        radial_etas: η of the G2 functions, Å⁻², one per shift or one for all (None: from the grid spacing).
        angular_etas: η of the G5 functions, Å⁻² (None: (1, 4)/cutoff²).
        zetas: ζ of the G5 functions, positive integers (the linear-time expansion needs them).
        lambdas: λ of the G5 functions, each +1 or −1 (empty zetas: radial functions only).
        hidden_features: hidden widths of the per-element networks (tanh).
        envelope_p: order of the polynomial cutoff f_c.
        feature_mean, feature_std: optional per-species standardisation of the descriptors,
            each a flat tuple of num_species·F numbers (row = species); None: none. Fitted on
            the training data (:func:`nnpes.data.statistics.fit_model_statistics`), not user keys.
        edge_chunk: edges per step of the loop that sums edge terms onto atoms (working memory
            ∝ edge_chunk, not ∝ E; on CPU ~2x faster than one pass because it stays in cache);
            0: all edges in one pass (best on GPU); None: chosen per backend by
            :func:`nnpes.models.descriptors.edge_chunk_schedule`. The schedule changes only the
            order of summation, never the function.
    Filled in by :meth:`nnpes.Potential.create`: cutoff (Å), num_species, avg_num_neighbors, num_outputs.

    Call: ``model.apply(params, vectors, species, senders, receivers, edge_mask)`` → (N,)
    dimensionless site outputs; ``method="descriptors"`` (no parameters needed) gives the
    (N, F) symmetry functions before standardisation.
    """

    num_radial: PositiveInt = 8
    radial_shifts: Annotated[tuple[NonNegativeFloat, ...], Field(min_length=1)] | None = None
    radial_etas: Annotated[tuple[PositiveFloat, ...], Field(min_length=1)] | None = None
    angular_etas: Annotated[tuple[PositiveFloat, ...], Field(min_length=1)] | None = None
    zetas: tuple[PositiveInt, ...] = (1, 4)
    lambdas: Annotated[tuple[Literal[1, -1], ...], Field(min_length=1)] = (1, -1)
    hidden_features: Widths = (32, 32)
    envelope_p: EnvelopeOrder = 6
    feature_mean: Annotated[tuple[float, ...] | None, Fitted("descriptor_mean")] = None
    feature_std: Annotated[tuple[float, ...] | None, Fitted("descriptor_std")] = None
    edge_chunk: NonNegativeInt | None = None

    @staticmethod
    def check_hyperparameters(values: dict) -> None:
        """Cross-field check: one radial width per shift, or one for all."""
        etas, shifts = values.get("radial_etas"), values.get("radial_shifts")
        n_shifts = len(shifts) if shifts is not None else values.get("num_radial", 8)
        if etas is not None and len(etas) not in (1, n_shifts):
            raise ValueError(
                f"radial_etas has {len(etas)} widths; it needs one per radial shift ({n_shifts}) or one for all"
            )

    def feature_positions(self, num_species: int, old_to_new) -> np.ndarray:
        """(F,) column of each of this model's descriptors in those of the same model with
        ``num_species`` elements, old species s being new species ``old_to_new[s]`` (increasing),
        so fine-tuning with new elements keeps every trained weight (:mod:`nnpes.train.new_species`)."""
        m = np.asarray(old_to_new)
        n_rad = len(radial_grid(self)[0])
        radial = (m[:, None] * n_rad + np.arange(n_rad)).reshape(-1)
        etas, zetas, lambdas = angular_grid(self)
        if not zetas.size:
            return radial
        block = len(etas) * len(zetas) * len(lambdas)
        new_pairs = {pair: i for i, pair in enumerate(zip(*species_pairs(num_species)))}
        pairs = np.array([new_pairs[(m[a], m[b])] for a, b in zip(*species_pairs(self.num_species))])
        angular = num_species * n_rad + (pairs[:, None] * block + np.arange(block)).reshape(-1)
        return np.concatenate([radial, angular])

    def descriptors(self, vectors, species, senders, receivers, edge_mask):
        """Element-resolved symmetry functions of every atom.

        Args:
            vectors: (E, 3) edge vectors r_ij, Å (safe non-zero vectors on masked edges).
            species: (N,) int species indices. senders (j), receivers (i): (E,) int.
            edge_mask: (E,) bool; False edges contribute nothing.
        Returns:
            (N, F) float, layout in the module docstring.
        """
        dtype = vectors.dtype
        n_node, s = species.shape[0], self.num_species
        shifts, widths = radial_grid(self)
        etas, zetas, lambdas = angular_grid(self)
        n_max = int(zetas.max()) if zetas.size else -1

        def columns(v, mask):  # (E, 3), (E,) -> (E, C): [G2 terms | g·r̂^{⊗n} | g²]
            return _edge_terms(v, mask, self.cutoff, self.envelope_p, shifts, widths, etas, n_max)

        chunk = edge_chunk_schedule(self.edge_chunk)
        # one sum over edges onto (centre atom, neighbour species): element resolution stays linear
        segment = receivers * s + species[senders]
        safe = safe_vector(self.cutoff, dtype)
        summed = chunked_segment_sum(columns, vectors, edge_mask, segment, n_node * s, chunk, safe)
        summed = summed.reshape(n_node, s, -1)

        n_rad = len(shifts)
        radial = summed[:, :, :n_rad].reshape(n_node, -1) / self.avg_num_neighbors
        if n_max < 0:
            return radial
        k, m = len(etas), order_blocks(n_max).shape[0]
        moments = summed[:, :, n_rad : n_rad + k * m].reshape(n_node, s, k, m)
        self_terms = summed[:, :, n_rad + k * m :]  # (N, S, K): Σ_{j∈a} g_j²
        first, second = species_pairs(s)
        blocks = jnp.asarray(order_blocks(n_max), dtype)
        # Σ_{j∈a, k∈b} g_j g_k c^n for every pair (a ≤ b), each (N, P, K, n_max+1)
        pair_sums = jnp.einsum("npkm,npkm,mo->npko", moments[:, first], moments[:, second], blocks)
        same = jnp.asarray(first == second)
        pair_sums = jnp.where(
            same[None, :, None, None],
            pair_sums - self_terms[:, first, :, None],  # drop j = k
            2.0 * pair_sums,
        )  # a ≠ b: both orders (j∈a, k∈b) and (j∈b, k∈a)
        coeff = jnp.asarray(_expansion_coefficients(zetas, lambdas), dtype)
        angular = jnp.einsum("npko,oc->npkc", pair_sums, coeff).reshape(n_node, -1)
        return jnp.concatenate([radial, angular / self.avg_num_neighbors**2], axis=1)

    @property
    def readout_layers(self) -> tuple[str, ...]:
        last = len(self.hidden_features)
        return (f"w{last}", f"b{last}")

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        x = self.descriptors(vectors, species, senders, receivers, edge_mask)
        dtype = x.dtype
        n_feat = x.shape[1]
        if self.feature_mean is not None or self.feature_std is not None:
            shape = (self.num_species, n_feat)
            mean = np.zeros(shape) if self.feature_mean is None else np.reshape(self.feature_mean, shape)
            std = np.ones(shape) if self.feature_std is None else np.reshape(self.feature_std, shape)
            x = (x - jnp.asarray(mean, dtype)[species]) / jnp.asarray(std, dtype)[species]
        # one network per element: stacked weights (S, in, out); every atom's layer is one
        # matmul against all S weight sets (S is small), then its own element's row is kept
        init = jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        widths = tuple(self.hidden_features) + (self.num_outputs,)
        pick = species[:, None, None]
        for i, width in enumerate(widths):
            w = self.param(f"w{i}", init, (self.num_species, x.shape[1], width), jnp.float32)
            b = self.param(f"b{i}", nn.initializers.zeros, (self.num_species, width), jnp.float32)
            y = jnp.einsum("nf,sfh->nsh", x, w.astype(dtype))
            x = jnp.take_along_axis(y, pick, axis=1)[:, 0] + b.astype(dtype)[species]
            if i < len(widths) - 1:
                x = jnp.tanh(x)
        return site_outputs(x, self.num_outputs)
