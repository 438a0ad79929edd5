"""MACE family: the symmetric contraction against the plain tensor power, the body order of a
one-layer model (inclusion–exclusion in float64), and completeness on a pair of environments
that two- and three-body descriptors cannot tell apart.

The generic physics laws (invariance, forces, stress, smoothness, locality, …) run for MACE with
every other family in tests/test_physics.py.
"""

from __future__ import annotations

import itertools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnpes.models import MACE, BehlerParrinello
from nnpes.models.symmetric_contraction import SymmetricContraction

CUTOFF = 5.0


def _float64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


@pytest.mark.parametrize("correlation", [1, 2, 3, 4])
def test_symmetric_contraction_equals_the_full_tensor_power(correlation):
    """Folding U^ν onto distinct monomials changes nothing: compare with Σ U^ν_{ab…} A_a A_b …
    over all index tuples, with the same per-species weights."""
    irreps_in, irreps_out, channels, n = e3nn.Irreps("0e+1o+2e"), e3nn.Irreps("0e+1o+2e"), 3, 5
    rng = np.random.default_rng(correlation)
    a = e3nn.IrrepsArray(channels * irreps_in, jnp.asarray(rng.normal(size=(n, channels * irreps_in.dim))))
    species = jnp.asarray([0, 1, 1, 0, 1])
    module = SymmetricContraction(str(irreps_out), correlation, num_species=2)
    params = _float64(module.init(jax.random.PRNGKey(0), species, a))
    got = module.apply(params, species, a)

    # A as (N, K, D), D in the per-channel order 0e, 1o, 2e
    a_nkd = np.concatenate(
        [np.asarray(a.array[:, sl]).reshape(n, channels, ir.dim) for (_, ir), sl in zip(a.irreps, a.irreps.slices())],
        axis=-1,
    )
    for mul_ir, chunk in zip(got.irreps, got.chunks):
        ir = mul_ir.ir
        paths = []  # every (degree, path) of this output irrep, in the module's order
        for nu in range(1, correlation + 1):
            u = e3nn.reduced_symmetric_tensor_product_basis(irreps_in, nu, keep_ir=[ir])
            if u.irreps.dim:
                full = np.asarray(u.array).reshape((irreps_in.dim,) * nu + (-1, ir.dim))
                for p in range(full.shape[-2]):
                    paths.append((nu, full[..., p, :]))
        w = np.asarray(params["params"][f"w_{ir}"])  # (species, paths, channels)
        expected = np.zeros((n, channels, ir.dim))
        for p, (nu, u) in enumerate(paths):
            letters = "abcd"[:nu]
            operands = [a_nkd] * nu + [u]
            spec = ",".join(f"nk{c}" for c in letters) + f",{letters}m->nkm"
            expected += np.einsum(spec, *operands) * w[np.asarray(species), p][:, :, None]
        np.testing.assert_allclose(np.asarray(chunk), expected, rtol=1e-10, atol=1e-12)


def _one_layer(correlation: int) -> MACE:
    return MACE(
        channels=4,
        l_max=2,
        hidden_l_max=1,
        correlation=correlation,
        num_layers=1,
        num_basis=4,
        radial_features=(8,),
        readout_features=0,  # linear readout: the site energy stays a polynomial in A
        cutoff=CUTOFF,
        num_species=2,
        avg_num_neighbors=3.0,
    )


def _all_pairs(n: int):
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    return jnp.asarray([j for _, j in pairs]), jnp.asarray([i for i, _ in pairs])  # senders j, receivers i


@pytest.fixture(scope="module")
def body_order_energy():
    """energy(correlation, positions, species, subset mask) of a random one-layer MACE: the sum
    of the site outputs of the atoms in the subset, with every edge touching another atom masked
    (the structure made of the subset alone), float64, one compilation per (ν, atoms)."""
    cache = {}

    def energy(correlation, positions, species, keep):
        key = (correlation, len(species))
        if key not in cache:
            model = _one_layer(correlation)
            senders, receivers = _all_pairs(len(species))
            vectors = positions[senders] - positions[receivers]
            params = _float64(model.init(jax.random.PRNGKey(7), vectors, species, senders, receivers, senders >= 0))

            @jax.jit
            def run(positions, species, keep):
                vectors = positions[senders] - positions[receivers]
                out = model.apply(params, vectors, species, senders, receivers, keep[senders] & keep[receivers])
                return jnp.sum(jnp.where(keep, out, 0.0))

            cache[key] = run
        return float(cache[key](positions, species, keep))

    return energy


def _connected_part(energy, correlation, positions, species) -> tuple[float, float]:
    """Σ_{S ⊆ atoms} (−1)^{n−|S|} E(S): zero exactly when E has no n-body term. Returns it and
    the largest |E(S)| for scale."""
    n = len(species)
    total, scale = 0.0, 0.0
    for size in range(n + 1):
        for subset in itertools.combinations(range(n), size):
            keep = jnp.zeros(n, bool).at[jnp.asarray(subset, int)].set(True) if subset else jnp.zeros(n, bool)
            e = energy(correlation, positions, species, keep)
            total += (-1) ** (n - size) * e
            scale = max(scale, abs(e))
    return total, scale


def test_body_order_of_one_layer_is_correlation_plus_one(body_order_energy):
    """One layer, linear readout: ν = 1 is a two-body model (no 3-body part), ν = 2 has a 3-body
    but no 4-body part, ν = 3 has a 4-body part (float64, random weights)."""
    rng = np.random.default_rng(3)
    positions = jnp.asarray(rng.uniform(-1.2, 1.2, size=(4, 3)))  # all pairs within the cutoff
    species = jnp.asarray([0, 1, 0, 1])
    three, four = positions[:3], positions
    parts = {
        (nu, n): _connected_part(body_order_energy, nu, p, species[:n])
        for nu, (n, p) in itertools.product((1, 2, 3), ((3, three), (4, four)))
    }
    for (nu, n), (value, scale) in parts.items():
        if n > nu + 1:
            assert abs(value) < 1e-10 * scale, f"ν={nu}: {n}-body part {value:.3e} should vanish (scale {scale:.3e})"
        else:
            assert abs(value) > 1e-6 * scale, f"ν={nu}: {n}-body part {value:.3e} should not vanish"


def octagon_environment(vertices: tuple[int, ...]) -> np.ndarray:
    """A centre atom at the origin and neighbours on the vertices of a regular octagon of radius
    1.5 Å in the xy plane."""
    angles = 2 * np.pi * np.asarray(vertices) / 8
    ring = 1.5 * np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    return np.concatenate([np.zeros((1, 3)), ring])


# Homometric vertex sets of the octagon: the same multiset of chord lengths {1,1,2,3,3,4} (so the
# same distances and angles seen from the centre) but not related by any rotation or reflection:
# {0,1,2,5} has three consecutive vertices, {0,1,3,4} none (a cyclic analogue of the degenerate
# pairs of Pozdnyakov et al., Phys. Rev. Lett. 125, 166001 (2020)).
DEGENERATE_PAIR = ((0, 1, 2, 5), (0, 1, 3, 4))


def _centre_site_output(model, positions: np.ndarray, species: np.ndarray) -> float:
    senders, receivers = _all_pairs(len(species))
    vectors = jnp.asarray(positions)[senders] - jnp.asarray(positions)[receivers]
    mask = jnp.ones(senders.shape, bool)
    args = (vectors, jnp.asarray(species), senders, receivers, mask)
    params = _float64(model.init(jax.random.PRNGKey(11), *args))
    return float(model.apply(params, *args)[0])


def test_degenerate_pair_has_equal_distances_and_angles():
    """The premise: from the centre, both environments have the same distances and the same
    multiset of bond angles (so every 3-body descriptor of the centre is the same)."""
    angles = []
    for vertices in DEGENERATE_PAIR:
        ring = octagon_environment(vertices)[1:]
        unit = ring / np.linalg.norm(ring, axis=1, keepdims=True)
        angles.append(sorted(np.round(np.degrees(np.arccos(np.clip(unit @ unit.T, -1, 1)))[np.triu_indices(4, 1)], 6)))
    assert angles[0] == angles[1]
    # ...but they are different environments: the triangles of three neighbours differ (4-body)
    triangles = [
        sorted(
            tuple(sorted(min((b - a) % 8, (a - b) % 8) for a, b in itertools.combinations(t, 2)))
            for t in itertools.combinations(v, 3)
        )
        for v in DEGENERATE_PAIR
    ]
    assert triangles[0] != triangles[1]


@pytest.mark.parametrize(
    "model, distinguishes",
    [
        (BehlerParrinello(num_radial=4, zetas=(1, 2, 4), hidden_features=(8,), num_species=2), False),
        (_one_layer(1), False),
        (_one_layer(2), False),
        (_one_layer(3), True),
        (MACE(channels=4, num_layers=1, num_basis=4, radial_features=(8,), num_species=2, correlation=3), True),
    ],
    ids=["behler_parrinello", "mace_nu1", "mace_nu2", "mace_nu3_linear", "mace_nu3"],
)
def test_four_body_model_tells_the_degenerate_pair_apart(model, distinguishes):
    """Centre-atom site output for the two environments: equal (to round-off) for the 2- and
    3-body models, different for MACE with ν = 3."""
    model = model.clone(cutoff=CUTOFF)
    species = np.asarray([0, 1, 1, 1, 1])  # a C-like centre, four H-like neighbours
    outs = [_centre_site_output(model, octagon_environment(v), species) for v in DEGENERATE_PAIR]
    difference, scale = abs(outs[0] - outs[1]), max(abs(outs[0]), 1e-3)
    if distinguishes:
        assert difference > 1e-6 * scale, f"{outs}: a 4-body model should separate the pair"
    else:
        assert difference < 1e-10 * scale, f"{outs}: a ≤ 3-body model cannot separate the pair"
