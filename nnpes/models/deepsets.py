"""DeepSets potential (Zaheer et al. 2017 applied to atomic environments): an invariant network
over the set of neighbours of each atom.

For atom i with neighbours j (edges j → i):

    x_ij = [ Bessel(r_ij)·f_c(r_ij),  embed_nbr(s_j),  a_ij ]           per-neighbour invariants
    h_i  = Σ_j f_c(r_ij) φ(x_ij) / n̄                                    masked sum, n̄ = avg_num_neighbors
    E_i  = ρ([h_i, embed_self(s_i)])                                     site output

with optional angle features a_ij^{(n)} = (Σ_{k≠j} f_c(r_ik) (r̂_ij·r̂_ik)^n) / n̄, n = 1..angular_order,
computed in linear time from per-atom tensor moments (see
:mod:`nnpes.models.descriptors`): Σ_k f_k (r̂_j·r̂_k)^n =
⟨r̂_j^{⊗n}, Σ_k f_k r̂_k^{⊗n}⟩, minus the k = j term f_j. Every neighbour term carries the
smooth cutoff f_c, so the energy is smooth as atoms cross the cutoff.
"""

from __future__ import annotations

from typing import Annotated

import flax.linen as nn
import jax
import jax.numpy as jnp
from pydantic import Field

from nnpes.models.base import EnvelopeOrder, PositiveInt, SiteModel, Widths, site_outputs
from nnpes.models.blocks import MLP
from nnpes.models.descriptors import angular_monomials, order_blocks
from nnpes.models.radial import bessel_basis, polynomial_envelope


class DeepSets(SiteModel):
    """Invariant DeepSets potential: φ over neighbours, masked sum, ρ with the own species.

    Hyper-parameters:
        num_basis: Bessel functions of the radial basis.
        envelope_p: order of the polynomial cutoff f_c.
        embed_features: width of the species embeddings (neighbour and own).
        angular_order: highest power n of the per-neighbour angle features (0: none).
        phi_features: widths of φ (the last is the latent size summed over neighbours).
        rho_features: hidden widths of ρ (a final width-1 layer is added).
    Filled in by :meth:`nnpes.Potential.create`: cutoff (Å), num_species, avg_num_neighbors, num_outputs.

    Call: ``model.apply(params, vectors, species, senders, receivers, edge_mask)`` → (N,)
    dimensionless site outputs.
    """

    num_basis: PositiveInt = 8
    envelope_p: EnvelopeOrder = 6
    embed_features: PositiveInt = 16
    angular_order: Annotated[int, Field(ge=0, le=8)] = 2
    phi_features: Annotated[Widths, Field(min_length=1)] = (64, 64)
    rho_features: Widths = (64, 64)

    @property
    def readout_layers(self) -> tuple[str, ...]:
        return (f"rho/dense_{len(self.rho_features)}",)

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        dtype = vectors.dtype
        n_node = species.shape[0]
        r = jnp.linalg.norm(vectors, axis=-1)
        fc = polynomial_envelope(r, self.cutoff, self.envelope_p) * edge_mask.astype(dtype)  # (E,)

        one_hot = jax.nn.one_hot(species, self.num_species, dtype=dtype)
        neighbour = nn.Dense(self.embed_features, use_bias=False, name="neighbor_embedding")(one_hot)
        own = nn.Dense(self.embed_features, use_bias=False, name="self_embedding")(one_hot)

        features = [bessel_basis(r, self.cutoff, self.num_basis) * fc[:, None], neighbour[senders]]
        if self.angular_order > 0:
            features.append(self.angle_features(vectors / r[:, None], fc, receivers, n_node))

        h = MLP(tuple(self.phi_features), name="phi")(jnp.concatenate(features, axis=1))
        h = jax.ops.segment_sum(h * fc[:, None], receivers, n_node) / self.avg_num_neighbors
        out = MLP(tuple(self.rho_features) + (self.num_outputs,), name="rho")(jnp.concatenate([h, own], axis=1))
        return site_outputs(out, self.num_outputs)

    def angle_features(self, unit, weight, receivers, n_node):
        """(E, angular_order): Σ_{k≠j} w_k (r̂_ij·r̂_ik)^n / n̄ for n = 1..angular_order.

        Args:
            unit: (E, 3) unit edge vectors. weight: (E,) w = f_c(r)·mask.
            receivers: (E,) centre atoms. n_node: N.
        """
        mono = angular_monomials(unit, self.angular_order)  # (E, M)
        moments = jax.ops.segment_sum(weight[:, None] * mono, receivers, n_node)  # (N, M)
        blocks = jnp.asarray(order_blocks(self.angular_order)[:, 1:], unit.dtype)  # orders 1..L
        total = jnp.einsum("em,em,mo->eo", mono, moments[receivers], blocks)
        return (total - weight[:, None]) / self.avg_num_neighbors  # drop k = j: (r̂_j·r̂_j)^n = 1
