"""nnpes.testing.PhysicsLaws on a model a user writes: a Gaussian pair potential defined here,
not a registered family. Also proves that a law can fail: a model whose energy depends on the
x components of the edge vectors (not rotation invariant) breaks the O(3) law."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnpes
from nnpes.testing import PhysicsLaws

ELEMENTS = (1, 8)  # H and O: nnpes.testing builds its structures from these two


class GaussianPair(nn.Module):
    """Site energy of i: Σ_j d(s_i, s_j) exp(−r_ij²/4) (1 − r_ij/r_c)³ over its edges."""

    cutoff: float = 5.0
    num_species: int = 1
    avg_num_neighbors: float = 1.0
    only_x: bool = False  # deliberately broken: use |x_ij| instead of r_ij in the Gaussian

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        depth = self.param("depth", nn.initializers.normal(1.0), (self.num_species, self.num_species))
        r = jnp.linalg.norm(vectors, axis=-1)
        s = vectors[:, 0] if self.only_x else r
        envelope = jnp.where(r < self.cutoff, (1.0 - r / self.cutoff) ** 3, 0.0)
        pair = depth[species[receivers], species[senders]].astype(r.dtype) * jnp.exp(-(s**2) / 4.0) * envelope
        pair = jnp.where(edge_mask, pair, 0.0)
        return jax.ops.segment_sum(pair, receivers, num_segments=species.shape[0])


def pair_potential(**fields) -> nnpes.Potential:
    pot = nnpes.Potential.create(GaussianPair(**fields), ELEMENTS, cutoff=3.0, seed=2, e0={1: -1.0, 8: -2.0}, scale=0.5)
    return pot.astype(np.float64)


class TestUserPairModel(PhysicsLaws):
    @pytest.fixture(scope="class")
    @classmethod
    def potential(cls):
        return pair_potential()


def test_a_broken_model_fails_the_rotation_law():
    broken = pair_potential(only_x=True)
    with pytest.raises(AssertionError, match="energy"):
        PhysicsLaws().test_energy_invariant_forces_and_stress_equivariant_under_o3(broken, "molecule", "rotation")
