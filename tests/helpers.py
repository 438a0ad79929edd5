"""Tiny instances of every model family, for the physics-law tests (tests/test_physics.py).

Each entry maps a family name of ``nnpes.models.FAMILIES`` to a factory returning a small
model (a few hundred parameters: each distinct model compiles once per padded shape, and the
machine running the suite is small). Adding a family means adding one line here, e.g.::

    "mace": lambda: MACE(channels=4, l_max=2, num_layers=2, num_basis=4, radial_features=(8,), readout_features=4),
    "behler_parrinello": lambda: BehlerParrinello(<small hyper-parameters>),

``test_every_family_has_a_tiny_model`` fails until the line exists. The receptive field the
locality law uses is the one the model declares (:func:`nnpes.models.receptive_hops`).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from nnpes.models import MACE, BehlerParrinello, DeepSets, NequIP

TINY_MODELS = {
    "nequip": lambda: NequIP(channels=4, l_max=2, num_layers=2, num_basis=4, radial_features=(8,), readout_features=4),
    "mace": lambda: MACE(channels=4, l_max=2, num_layers=2, num_basis=4, radial_features=(8,), readout_features=4),
    "behler_parrinello": lambda: BehlerParrinello(num_radial=4, zetas=(1, 2), hidden_features=(8,)),
    "deepsets": lambda: DeepSets(num_basis=4, embed_features=4, phi_features=(8, 8), rho_features=(8,)),
}

# Cut-off radius of the tiny potentials, Å: below half the 3.6 Å fcc-Cu cube, so the periodic
# test cells are smaller than 2·r_c and atoms see several images of their neighbours.
TINY_CUTOFF = 3.0


class PairModel(nn.Module):
    """A user's module written in the test: ε_i = Σ_j w(s_i, s_j) e^{−r_ij} (1 − r_ij/r_c)²."""

    cutoff: float = 4.0
    num_species: int = 1
    avg_num_neighbors: float = 1.0
    nan: bool = False

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        r = jnp.linalg.norm(vectors, axis=-1)
        w = nn.Embed(self.num_species**2, 1)(species[senders] * self.num_species + species[receivers])[:, 0]
        pair = jnp.where(edge_mask, w.astype(r.dtype) * jnp.exp(-r) * (1.0 - r / self.cutoff) ** 2, 0.0)
        out = jnp.zeros(species.shape[0], r.dtype).at[receivers].add(pair) / self.avg_num_neighbors
        return out * jnp.nan if self.nan else out
