"""MACE-style higher-body-order equivariant message passing (Batatia et al., NeurIPS 2022).

Each layer builds an atomic basis A_i = Σ_j R(r_ij) Y(r̂_ij) ⊗ W h_j (the edge convolution of
:mod:`nnpes.models.convolution`), then a symmetric product basis B_i of degree ≤ ν in A_i with
species-dependent weights (:mod:`nnpes.models.symmetric_contraction`): with ν = 3 one layer
already sees 4-body correlations (dihedrals), which two- and three-body descriptors miss. The
message is a linear map of B_i, plus a species-dependent residual; every layer has a scalar
readout and the site output is their sum. Two layers suffice where NequIP needs three to five.
"""

from __future__ import annotations

from typing import Annotated

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
from pydantic import Field

from nnpes.models.base import (
    EnvelopeOrder,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SiteModel,
    Widths,
    site_outputs,
)
from nnpes.models.convolution import convolve, prepare_edges
from nnpes.models.symmetric_contraction import SymmetricContraction
from nnpes.models.tensor_products import SpeciesLinear


def natural_irreps(l_max: int) -> e3nn.Irreps:
    """0e + 1o + 2e + … up to l_max (the parities of spherical harmonics)."""
    return e3nn.Irreps.spherical_harmonics(l_max, p=-1)


class MACEInteraction(nn.Module):
    """One MACE layer: x (N, hidden) → (N, channels × out_irreps).

    A = linear(Σ_j R(r_ij) Y(r̂_ij) ⊗ linear(x_j)) / √(avg neighbours), channels × a_irreps;
    B = symmetric contraction of A (degree ≤ correlation, species weights);
    out = linear(B) + species-dependent linear(x) (residual)."""

    channels: int
    a_irreps: e3nn.Irreps
    out_irreps: e3nn.Irreps
    correlation: int
    avg_num_neighbors: float
    num_species: int
    radial_features: tuple[int, ...]
    sh_irreps: e3nn.Irreps
    cutoff: float
    num_basis: int
    envelope_p: int
    both_directions: bool = False

    @nn.compact
    def __call__(self, x, species, edges):
        target = self.channels * e3nn.Irreps(self.a_irreps)
        out = self.channels * e3nn.Irreps(self.out_irreps)
        residual = SpeciesLinear(out, self.num_species, name="self_connection")(species, x)
        h = e3nn.flax.Linear(x.irreps, name="linear_up")(x)
        a = convolve(self, h, edges, target)
        a = e3nn.flax.Linear(target, force_irreps_out=True, name="linear_basis")(a)
        b = SymmetricContraction(str(e3nn.Irreps(self.out_irreps)), self.correlation, self.num_species, name="product")(
            species, a
        )
        return e3nn.flax.Linear(out, force_irreps_out=True, name="linear_message")(b) + residual


class MACE(SiteModel):
    """Higher-body-order E(3)-equivariant potential (MACE-like); outputs site energies.

    Hyper-parameters:
        channels: multiplicity of every irrep (features, atomic basis, product basis).
        l_max: highest spherical-harmonic degree of the edges and of the atomic basis A.
        hidden_l_max: highest degree of the features passed between layers (≤ l_max).
        correlation: ν, the highest degree of the symmetric product basis: site energies of
            one layer are (ν + 1)-body; 3 sees dihedral (4-body) arrangements.
        num_layers: interaction layers; each adds a scalar readout to the site output.
        num_basis: Bessel functions in the radial basis.
        radial_features: hidden widths of the radial MLP.
        envelope_p: order of the polynomial cutoff envelope.
        readout_features: hidden width of the last layer's non-linear readout (0: linear, which
            keeps a one-layer model's site energy a polynomial of degree ν in A).
        edge_chunk, edge_memory_mb: the edge loop's chunking, as for :class:`nnpes.models.NequIP`.
    Filled in by :meth:`nnpes.Potential.create` (do not set by hand):
        cutoff (Å), num_species, avg_num_neighbors (of the training data), num_outputs.

    Call: ``model.apply(params, vectors, species, senders, receivers, edge_mask)`` with vectors
    (E, 3) in Å, species (N,) int indices, senders/receivers (E,) int (the model contract,
    :mod:`nnpes.models.base`). Returns (N,) dimensionless site outputs.
    """

    channels: PositiveInt = 32
    l_max: Annotated[int, Field(ge=0, le=4)] = 2
    hidden_l_max: Annotated[int, Field(ge=0, le=4)] = 1
    correlation: Annotated[int, Field(ge=1, le=4)] = 3
    num_layers: PositiveInt = 2
    num_basis: PositiveInt = 8
    radial_features: Widths = (64, 64)
    envelope_p: EnvelopeOrder = 6
    readout_features: NonNegativeInt = 16
    edge_chunk: NonNegativeInt | None = None
    edge_memory_mb: PositiveFloat = 64.0

    @staticmethod
    def check_hyperparameters(values: dict) -> None:
        if values["hidden_l_max"] > values["l_max"]:
            raise ValueError(f"hidden_l_max ({values['hidden_l_max']}) must not exceed l_max ({values['l_max']})")

    @property
    def receptive_hops(self) -> int:
        return int(self.num_layers)

    @property
    def readout_layers(self) -> tuple[str, ...]:
        return tuple(f"readout_{i}" for i in range(self.num_layers))  # every layer's readout adds to the output

    @property
    def reads_mirrored_edges(self) -> bool:
        return True

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask, mirrored: bool = False):
        sh_irreps = natural_irreps(self.l_max)
        hidden = self.channels * natural_irreps(self.hidden_l_max)
        edges = prepare_edges(
            self,
            vectors,
            edge_mask,
            senders,
            receivers,
            features=hidden,
            sh_irreps=sh_irreps,
            target=self.channels * sh_irreps,
            mirrored=mirrored,
        )
        one_hot = jax.nn.one_hot(species, self.num_species, dtype=vectors.dtype)
        x = e3nn.flax.Linear(f"{self.channels}x0e", name="embedding")(
            e3nn.IrrepsArray(f"{self.num_species}x0e", one_hot)
        )
        outputs = jnp.zeros((x.shape[0], self.num_outputs), vectors.dtype)
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            # the last layer only needs the scalars its readout reads
            out_irreps = natural_irreps(0 if last else self.hidden_l_max)
            x = MACEInteraction(
                self.channels,
                sh_irreps,
                out_irreps,
                self.correlation,
                self.avg_num_neighbors,
                self.num_species,
                self.radial_features,
                sh_irreps,
                self.cutoff,
                self.num_basis,
                self.envelope_p,
                mirrored,
                name=f"layer_{i}",
            )(x, species, edges)
            scalars = x.filter(keep=["0e"])
            if last and self.readout_features:
                scalars = e3nn.flax.Linear(f"{self.readout_features}x0e", name="readout_hidden")(scalars)
                scalars = e3nn.IrrepsArray(scalars.irreps, jax.nn.silu(scalars.array))
            outputs += e3nn.flax.Linear(f"{self.num_outputs}x0e", name=f"readout_{i}")(scalars).array
        return site_outputs(outputs, self.num_outputs)
