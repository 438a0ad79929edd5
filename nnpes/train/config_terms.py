"""The ``terms:`` section of a training config: physical terms beside the network, each
switched on by its presence (:mod:`nnpes.electrostatics`, :mod:`nnpes.zbl`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ElectrostaticsConfig(BaseModel):
    """Coulomb energy of latent charges (:class:`nnpes.electrostatics.Electrostatics`): the model
    gets a charge head; structures' total charges come from ``info["charge"]`` (0 when absent)."""

    model_config = _STRICT
    smearing: float = Field(1.0, ge=0.0, description="Gaussian width of every charge, Å (0: point charges)")
    accuracy: float = Field(1e-5, gt=0.0, lt=1.0, description="relative accuracy of the Ewald / PME sums")
    method: Literal["ewald", "pme"] = "ewald"
    mesh_spacing: float | None = Field(None, gt=0.0, description="PME mesh spacing, Å (None: from accuracy)")


class ZBLConfig(BaseModel):
    """ZBL screened nuclear repulsion (:class:`nnpes.zbl.ZBL`), switched off smoothly between
    inner_radius and outer_radius (Å, outer ≤ the model's cutoff)."""

    model_config = _STRICT
    outer_radius: float = Field(2.0, gt=0.0, description="Å: zero from here on")
    inner_radius: float | None = Field(None, ge=0.0, description="Å: full ZBL up to here (None: outer / 2)")


class TermsConfig(BaseModel):
    """Physical terms added to the network's energy; a present section switches its term on."""

    model_config = _STRICT
    electrostatics: ElectrostaticsConfig | None = None
    zbl: ZBLConfig | None = None

    def build(self, atomic_numbers, cutoff: float) -> tuple:
        """The :class:`nnpes.terms.Term` objects for a potential with these elements and cutoff (Å)."""
        from nnpes.electrostatics import Electrostatics
        from nnpes.zbl import ZBL

        terms = []
        if self.electrostatics is not None:
            terms.append(Electrostatics(**self.electrostatics.model_dump()))
        if self.zbl is not None:
            terms.append(ZBL.for_potential(atomic_numbers, cutoff, **self.zbl.model_dump()))
        return tuple(terms)
