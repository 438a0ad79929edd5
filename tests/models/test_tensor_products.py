"""The fast spherical-harmonics tensor product and per-irrep scaling used by NequIP equal
e3nn-jax's general ones (same irreps, same order, float64 round-off), for both parities and
degrees beyond those of the default model."""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnpes.models.tensor_products import SpeciesLinear, scale_irreps, sh_tensor_product

CASES = [
    ("3x0e+3x1o+3x1e", 1),
    ("2x0e+2x0o+2x1o+2x1e+2x2e+2x2o", 2),
    ("3x0e+2x1o+3x2e+1x3o", 3),
]


@pytest.mark.parametrize("hidden,l_sh", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("keep", ["hidden", "all"])
def test_sh_tensor_product_equals_e3nn(hidden, l_sh, keep):
    key_x, key_v, key_w = jax.random.split(jax.random.PRNGKey(0), 3)
    x = e3nn.normal(hidden, key_x, (7,), dtype=jnp.float64)
    vectors = jax.random.normal(key_v, (7, 3), dtype=jnp.float64)
    sh = e3nn.spherical_harmonics(e3nn.Irreps.spherical_harmonics(l_sh, p=-1), vectors, True, "component")
    filter_ir_out = e3nn.Irreps(hidden).regroup() if keep == "hidden" else None
    expected = e3nn.tensor_product(x, sh, filter_ir_out=filter_ir_out)
    got = sh_tensor_product(x, sh, filter_ir_out)
    assert got.irreps == expected.irreps
    np.testing.assert_allclose(np.asarray(got.array), np.asarray(expected.array), rtol=1e-12, atol=1e-13)
    assert np.abs(np.asarray(expected.array)).max() > 0.1

    weights = jax.random.normal(key_w, (7, expected.irreps.num_irreps), dtype=jnp.float64)
    np.testing.assert_allclose(
        np.asarray(scale_irreps(expected, weights).array),
        np.asarray((expected * weights).array),
        rtol=1e-12,
        atol=1e-13,
    )


@pytest.mark.parametrize(
    "irreps_in,irreps_out,num_species",
    [("3x0e+3x1o+3x1e", "3x0e+3x1o+3x1e", 3), ("3x0e", "3x0e+3x1o", 2), ("2x0e+2x0o+2x1o+2x2e", "4x0e", 1)],
)
def test_species_linear_equals_e3nn_indexed_linear(irreps_in, irreps_out, num_species):
    """Same parameters (names, shapes, initial values), same outputs, same known-zero blocks."""
    key = jax.random.PRNGKey(2)
    x = e3nn.normal(irreps_in, key, (9,), dtype=jnp.float64)
    species = jnp.arange(9) % num_species
    ref = e3nn.flax.Linear(irreps_out, num_indexed_weights=num_species, force_irreps_out=True)
    mine = SpeciesLinear(irreps_out, num_species)
    params = ref.init(jax.random.PRNGKey(1), species, x)
    assert jax.tree.all(
        jax.tree.map(lambda a, b: bool(jnp.all(a == b)), params, mine.init(jax.random.PRNGKey(1), species, x))
    )
    expected, got = ref.apply(params, species, x), mine.apply(params, species, x)
    assert got.irreps == expected.irreps and got.zero_flags == expected.zero_flags
    np.testing.assert_allclose(np.asarray(got.array), np.asarray(expected.array), rtol=1e-12, atol=1e-14)
    assert np.abs(np.asarray(expected.array)).max() > 0.1
