"""Tiny models and structures for the MD tests (imported by tests/md/*; not a test module)."""

from __future__ import annotations

import ase
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import nnpes
from nnpes.models.radial import polynomial_envelope

E0 = {1: -13.6, 6: -1029.5, 8: -2041.2}  # realistic magnitudes: totals must still agree to round-off


def tiny_nequip(l_max: int = 1):
    return nnpes.models.NequIP(
        channels=4, l_max=l_max, num_layers=1, num_basis=4, radial_features=(8,), readout_features=4
    )


def random_gas(n_atoms=64, side=10.0, seed=0):
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < n_atoms:  # no two atoms closer than 1.2 Å
        p = rng.uniform(0, side, 3)
        if all(np.linalg.norm((p - q + side / 2) % side - side / 2) > 1.2 for q in positions):
            positions.append(p)
    return ase.Atoms(numbers=[1, 8] * (n_atoms // 2), positions=positions, cell=[side] * 3, pbc=True)


class GaussianPair(nn.Module):
    """A cheap smooth pair model for run-loop tests: ε·exp(−r²/σ²)·u(r) per pair (u: cutoff envelope)."""

    epsilon: float = 0.05  # eV
    sigma: float = 1.5  # Å
    cutoff: float = 3.0
    num_species: int = 2
    avg_num_neighbors: float = 1.0

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        eps = self.epsilon * self.param("unit", nn.initializers.ones, (), vectors.dtype)
        r = jnp.linalg.norm(vectors, axis=-1)
        pair = eps * jnp.exp(-((r / self.sigma) ** 2)) * polynomial_envelope(r, self.cutoff)
        return jax.ops.segment_sum(jnp.where(edge_mask, 0.5 * pair, 0.0), receivers, species.shape[0])


class HarmonicBond(nn.Module):
    """E = ½ k (r − r0)² per pair within the cutoff (each directed edge carries half)."""

    k: float = 36.0  # eV/Å²
    r0: float = 0.74  # Å
    cutoff: float = 3.0
    num_species: int = 1
    avg_num_neighbors: float = 1.0

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        stiffness = self.k * self.param("unit", nn.initializers.ones, (), vectors.dtype)
        r = jnp.linalg.norm(vectors, axis=-1)
        pair = jnp.where(edge_mask, 0.25 * stiffness * (r - self.r0) ** 2, 0.0)
        return jax.ops.segment_sum(pair, receivers, species.shape[0])
