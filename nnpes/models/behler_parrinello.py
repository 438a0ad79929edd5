"""Behler–Parrinello neural-network potential (Behler & Parrinello 2007; Behler 2011).

Atom-centred symmetry functions, resolved by neighbour element, feed one small network per
element that outputs the site energy. Every symmetry function is computed from the padded
edge list inside ``jit`` with segment sums over edges, so time and memory grow linearly with
the number of atoms; the angular functions need no triplet list (see
:func:`angular_monomials`).

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

The symmetric tensor r̂^{⊗n} is stored by its (n+1)(n+2)/2 distinct monomials x^p y^q z^r,
each weighted by √(n!/(p! q! r!)), so that the plain dot product of two such vectors is
(u·v)^n (the multinomial theorem).

The edge terms are summed onto atoms a chunk of edges at a time (:func:`chunked_segment_sum`),
so no (edges × terms) array is ever held, forward or backward.

Feature layout (F per atom): radial block (S neighbour species × R radial functions), then the
angular block (P species pairs a ≤ b in lexicographic order × η × ζ × λ), P = S(S+1)/2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nnpes.errors import ModelError
from nnpes.models.radial import polynomial_envelope

_DEFAULT_R_MIN = 0.5  # Å, first radial shift of the default grid


# -- symmetric tensor powers ---------------------------------------------------------------
def monomial_exponents(n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exponents (p, q, r) of every monomial x^p y^q z^r with p+q+r = n, n = 0..n_max.

    Returns:
        exponents (M, 3) int, order (M,) int (= p+q+r), weight (M,) float = √(n!/(p! q! r!)),
        with M = Σ_n (n+1)(n+2)/2.
    """
    rows = [(p, q, n - p - q) for n in range(n_max + 1) for p in range(n, -1, -1) for q in range(n - p, -1, -1)]
    exps = np.asarray(rows, np.int64).reshape(-1, 3)
    order = exps.sum(axis=1)
    weight = np.sqrt([math.factorial(n) / math.prod(math.factorial(e) for e in row) for n, row in zip(order, rows)])
    return exps, order, weight


def angular_monomials(unit: jnp.ndarray, n_max: int) -> jnp.ndarray:
    """The symmetric tensor powers r̂^{⊗n}, n = 0..n_max, as weighted monomials.

    For unit vectors u, v: Σ_{m of order n} out(u)[m] · out(v)[m] = (u·v)^n.

    Args:
        unit: (E, 3) unit vectors.
        n_max: highest power.
    Returns:
        (E, M) with M = Σ_n (n+1)(n+2)/2; the column orders are ``monomial_exponents(n_max)[1]``.
    """
    exps, _, weight = monomial_exponents(n_max)
    # powers by repeated products (no x**0, whose gradient is NaN at x = 0); static column
    # products only: an index gather here (and its scatter gradient) is ~10x slower on CPU
    x, y, z = unit[:, 0], unit[:, 1], unit[:, 2]
    px, py, pz = [jnp.ones_like(x)], [jnp.ones_like(y)], [jnp.ones_like(z)]
    for _ in range(n_max):
        px.append(px[-1] * x)
        py.append(py[-1] * y)
        pz.append(pz[-1] * z)
    columns = [float(w) * px[p] * py[q] * pz[r] for (p, q, r), w in zip(exps.tolist(), weight)]
    return jnp.stack(columns, axis=1)


def order_blocks(n_max: int) -> np.ndarray:
    """(M, n_max+1) 0/1 matrix summing monomial products into one total per order n."""
    _, order, _ = monomial_exponents(n_max)
    return (order[:, None] == np.arange(n_max + 1)[None, :]).astype(np.float64)


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
    if len(etas) != len(shifts) or len(shifts) == 0:
        raise ModelError(f"radial_etas ({len(etas)}) must give one width per radial shift ({len(shifts)}), or one for all")
    return shifts, etas


def angular_grid(model: "BehlerParrinello") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(η (K,) Å⁻², ζ (Z,) int, λ (L,) ±1) of the angular functions.

    Default η: (1, 4)/r_c², i.e. the Gaussian falls to e⁻¹ at r = r_c and r = r_c/2.
    """
    etas = (np.array([1.0, 4.0]) / model.cutoff**2 if model.angular_etas is None
            else np.asarray(model.angular_etas, np.float64).reshape(-1))
    zetas = np.asarray(model.zetas).reshape(-1)
    lambdas = np.asarray(model.lambdas).reshape(-1)
    if zetas.size and (np.any(zetas < 1) or np.any(zetas != np.round(zetas))):
        raise ModelError(f"zetas must be positive integers (the linear-time expansion needs them), got {model.zetas}")
    if np.any(np.abs(lambdas) != 1):
        raise ModelError(f"lambdas must be +1 or -1, got {model.lambdas}")
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


def chunked_segment_sum(fn, vectors, edge_mask, segment_ids, num_segments: int, chunk: int, safe_vector):
    """segment_sum(fn(vectors, edge_mask), segment_ids, num_segments), `chunk` edges at a time.

    A scan over edge chunks adds each chunk's terms into the (num_segments, C) result in place;
    the terms are recomputed in the backward pass (``jax.checkpoint``), so no (E, C) array is
    ever stored: working memory is O(chunk·C + num_segments·C) and stays in cache.

    Args:
        fn: (B, 3), (B,) bool → (B, C), zero where the mask is False.
        vectors: (E, 3). edge_mask: (E,) bool. segment_ids: (E,) int.
        chunk: edges per step; 0 or ≥ E: one pass without a loop.
        safe_vector: (3,) non-zero vector for the padding edges of the last chunk.
    """
    n_edge = vectors.shape[0]
    if chunk <= 0 or n_edge <= chunk:
        return jax.ops.segment_sum(fn(vectors, edge_mask), segment_ids, num_segments)
    n_chunk = -(-n_edge // chunk)
    pad = n_chunk * chunk - n_edge
    vectors = jnp.concatenate([vectors, jnp.broadcast_to(safe_vector, (pad, 3))]).reshape(n_chunk, chunk, 3)
    edge_mask = jnp.concatenate([edge_mask, jnp.zeros(pad, bool)]).reshape(n_chunk, chunk)
    segment_ids = jnp.concatenate([segment_ids, jnp.zeros(pad, segment_ids.dtype)]).reshape(n_chunk, chunk)
    terms = jax.checkpoint(fn, prevent_cse=False)
    width = jax.eval_shape(fn, vectors[0], edge_mask[0]).shape[1]

    def step(total, xs):
        v, m, seg = xs
        return total.at[seg].add(terms(v, m)), None

    total, _ = jax.lax.scan(step, jnp.zeros((num_segments, width), vectors.dtype), (vectors, edge_mask, segment_ids))
    return total


# -- the model -----------------------------------------------------------------------------
class BehlerParrinello(nn.Module):
    """Behler–Parrinello potential: element-resolved G2/G5 symmetry functions → one MLP per
    element → site output.

    Hyper-parameters:
        num_radial: radial functions in the default grid (used when radial_shifts is None).
        radial_shifts: Rs of the G2 functions, Å (None: generated from the cutoff).
        radial_etas: η of the G2 functions, Å⁻², one per shift or one for all (None: from the grid spacing).
        angular_etas: η of the G5 functions, Å⁻² (None: (1, 4)/cutoff²).
        zetas: ζ of the G5 functions, positive integers.
        lambdas: λ of the G5 functions, each +1 or −1 (empty zetas: radial functions only).
        hidden_features: hidden widths of the per-element networks (tanh).
        envelope_p: order of the polynomial cutoff f_c.
        feature_mean, feature_std: optional per-species standardisation of the descriptors,
            each a flat tuple of num_species·F numbers (row = species); None: none. Fit them
            with :func:`fit_standardization`.
        edge_chunk: edges per step of the loop that sums edge terms onto atoms (working memory
            ∝ edge_chunk, not ∝ E; on CPU ~2x faster than one pass because it stays in cache);
            0: all edges in one pass (best on GPU); None: 8192 on CPU, 0 elsewhere. Results
            differ only by summation order.
    Filled in by :meth:`nnpes.Potential.create`: cutoff (Å), num_species, avg_num_neighbors.

    Call: ``model.apply(params, vectors, species, senders, receivers, edge_mask)`` → (N,)
    dimensionless site outputs; ``method="descriptors"`` (no parameters needed) gives the
    (N, F) symmetry functions before standardisation.
    """

    num_radial: int = 8
    radial_shifts: tuple[float, ...] | None = None
    radial_etas: tuple[float, ...] | None = None
    angular_etas: tuple[float, ...] | None = None
    zetas: tuple[int, ...] = (1, 4)
    lambdas: tuple[int, ...] = (1, -1)
    hidden_features: tuple[int, ...] = (32, 32)
    envelope_p: int = 6
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None
    edge_chunk: int | None = None
    cutoff: float = 5.0
    num_species: int = 1
    avg_num_neighbors: float = 1.0

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

        chunk = self.edge_chunk if self.edge_chunk is not None else (8192 if jax.default_backend() == "cpu" else 0)
        # one sum over edges onto (centre atom, neighbour species): element resolution stays linear
        segment = receivers * s + species[senders]
        safe = jnp.asarray([0.5 * self.cutoff, 0.0, 0.0], dtype)
        summed = chunked_segment_sum(columns, vectors, edge_mask, segment, n_node * s, chunk, safe)
        summed = summed.reshape(n_node, s, -1)

        n_rad = len(shifts)
        radial = summed[:, :, :n_rad].reshape(n_node, -1) / self.avg_num_neighbors
        if n_max < 0:
            return radial
        k, m = len(etas), order_blocks(n_max).shape[0]
        moments = summed[:, :, n_rad:n_rad + k * m].reshape(n_node, s, k, m)
        self_terms = summed[:, :, n_rad + k * m:]  # (N, S, K): Σ_{j∈a} g_j²
        first, second = species_pairs(s)
        blocks = jnp.asarray(order_blocks(n_max), dtype)
        # Σ_{j∈a, k∈b} g_j g_k c^n for every pair (a ≤ b), each (N, P, K, n_max+1)
        pair_sums = jnp.einsum("npkm,npkm,mo->npko", moments[:, first], moments[:, second], blocks)
        same = jnp.asarray(first == second)
        pair_sums = jnp.where(same[None, :, None, None],
                              pair_sums - self_terms[:, first, :, None],  # drop j = k
                              2.0 * pair_sums)  # a ≠ b: both orders (j∈a, k∈b) and (j∈b, k∈a)
        coeff = jnp.asarray(_expansion_coefficients(zetas, lambdas), dtype)
        angular = jnp.einsum("npko,oc->npkc", pair_sums, coeff).reshape(n_node, -1)
        return jnp.concatenate([radial, angular / self.avg_num_neighbors**2], axis=1)

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
        widths = tuple(self.hidden_features) + (1,)
        pick = species[:, None, None]
        for i, width in enumerate(widths):
            w = self.param(f"w{i}", init, (self.num_species, x.shape[1], width), jnp.float32)
            b = self.param(f"b{i}", nn.initializers.zeros, (self.num_species, width), jnp.float32)
            y = jnp.einsum("nf,sfh->nsh", x, w.astype(dtype))
            x = jnp.take_along_axis(y, pick, axis=1)[:, 0] + b.astype(dtype)[species]
            if i < len(widths) - 1:
                x = jnp.tanh(x)
        return x[:, 0]


# -- standardisation -----------------------------------------------------------------------
def fit_standardization(model: BehlerParrinello, graphs: Sequence, batch_size: int = 32,
                        min_std: float = 1e-6) -> BehlerParrinello:
    """Per-species mean and standard deviation of the descriptors over training structures.

    Args:
        model: a BehlerParrinello with cutoff, num_species and avg_num_neighbors filled in
            (e.g. ``potential.model``); any existing standardisation is ignored.
        graphs: :class:`nnpes.data.graph.FrameGraph` of the training frames (same cutoff).
        batch_size: frames per padded batch (one compilation per distinct bucket).
        min_std: standard deviations below this (constant features) are set to 1.
    Returns:
        ``model.clone(feature_mean=..., feature_std=...)``; a species absent from the data
        gets mean 0 and std 1. Use it as ``potential.replace(model=fit_standardization(...))``
        (the network parameters do not depend on the standardisation).
    """
    import jraph

    from nnpes.data.graph import batch_graphs
    from nnpes.physics import edge_vectors, safe_edges

    model = model.clone(feature_mean=None, feature_std=None)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32

    @jax.jit
    def features(graph):
        vectors = edge_vectors(graph.nodes["positions"], graph.globals["cell"], graph)
        vectors, mask = safe_edges(vectors, jraph.get_edge_padding_mask(graph), model.cutoff)
        return model.apply({}, vectors, graph.nodes["species"], graph.senders, graph.receivers, mask,
                           method="descriptors")

    s, f = model.num_species, num_features(model)
    count, total, squares = np.zeros(s), np.zeros((s, f)), np.zeros((s, f))
    for start in range(0, len(graphs), batch_size):
        chunk = list(graphs[start:start + batch_size])
        batch = batch_graphs(chunk, dtype=np.dtype(dtype))
        x = np.asarray(features(batch), np.float64)
        n_real = sum(g.n_node for g in chunk)
        x, species = x[:n_real], np.asarray(batch.nodes["species"][:n_real])
        np.add.at(count, species, 1.0)
        np.add.at(total, species, x)
        np.add.at(squares, species, x**2)
    seen = count > 0
    mean = np.where(seen[:, None], total / np.maximum(count, 1)[:, None], 0.0)
    var = np.where(seen[:, None], squares / np.maximum(count, 1)[:, None] - mean**2, 1.0)
    std = np.sqrt(np.maximum(var, 0.0))
    std = np.where(std < min_std, 1.0, std)
    return model.clone(feature_mean=tuple(float(v) for v in mean.reshape(-1)),
                       feature_std=tuple(float(v) for v in std.reshape(-1)))
