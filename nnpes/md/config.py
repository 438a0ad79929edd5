"""MD options: a typed, frozen, validated config (the house style of :mod:`nnpes.train.config`).

Unknown keys, wrong types and impossible values are refused with one line naming the key, e.g.
``md: key 'dt_fs': Input should be greater than 0 (got -1.0)``. The allowed ensembles and
thermostats are those of the table in :mod:`nnpes.md.ensembles`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from nnpes.errors import ConfigError
from nnpes.md.ensembles import ENSEMBLE_NAMES, THERMOSTATS
from nnpes.md.jaxmd_energy import DEFAULT_CAPACITY_MULTIPLIER, DEFAULT_SKIN_A

SOURCE = "md"


class MDConfig(BaseModel):
    """What to simulate.

    Attributes:
        ensemble: "nve" (velocity Verlet), "nvt" or "npt" (isotropic Nosé–Hoover, jax-md's
            ``npt_nose_hoover``).
        thermostat: for NVT, "langevin" (BAOAB, centre-of-mass momentum removed every step) or
            "nose-hoover" (chain of 3).
        dt_fs: time step, fs.
        temperature_k: target temperature, K; also the Maxwell–Boltzmann temperature of the
            initial velocities when the structure has none (0: start at rest; NVE only).
        pressure_bar: NPT target pressure, bar.
        tau_t_fs: thermostat time constant, fs (Langevin friction = 1/tau).
        tau_p_fs: barostat time constant, fs.
        seed: initial velocities and Langevin noise, 0 ≤ seed < 2³² (jax keys are 32-bit without x64).
        dtype: "float32" or "float64" (needs ``jax_enable_x64``).
        skin_a: neighbour-list skin, Å. capacity_multiplier: list headroom at allocation.
        every: record (and write) every this many steps.
        max_temperature_k: a recorded frame hotter than this, K, stops the run as unstable
            (:mod:`nnpes.md.guard`); None: 10 × the target or start temperature, at least 3 000 K.
        uncertainty_threshold_ev_a: an ensemble's extrapolation alarm (:mod:`nnpes.md.alarm`):
            a recorded frame whose largest per-atom force uncertainty is above this, eV/Å, is
            reported; None: the threshold fitted at training.
        stop_on_uncertainty: stop the run at such a frame.

    Construction raises :class:`nnpes.errors.ConfigError` (one line); so does :meth:`replace`.
    NaN and infinite numbers are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    ensemble: Literal[ENSEMBLE_NAMES] = "nve"  # type: ignore[valid-type]
    thermostat: Literal[THERMOSTATS] = "langevin"  # type: ignore[valid-type]
    dt_fs: float = Field(0.5, gt=0.0)
    temperature_k: float = Field(300.0, ge=0.0)
    pressure_bar: float = 1.01325
    tau_t_fs: float = Field(100.0, gt=0.0)
    tau_p_fs: float = Field(1000.0, gt=0.0)
    seed: int = Field(0, ge=0, lt=2**32)
    dtype: Literal["float32", "float64"] = "float32"
    skin_a: float = Field(DEFAULT_SKIN_A, ge=0.0)
    capacity_multiplier: float = Field(DEFAULT_CAPACITY_MULTIPLIER, gt=0.0)
    every: int = Field(10, ge=1)
    max_temperature_k: float | None = Field(None, gt=0.0)
    uncertainty_threshold_ev_a: float | None = Field(None, gt=0.0)
    stop_on_uncertainty: bool = False

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise InvalidOption(e.errors()[0]) from None

    @field_validator("temperature_k")
    @classmethod
    def _thermostatted_needs_temperature(cls, v: float, info: ValidationInfo) -> float:
        ensemble = info.data.get("ensemble")
        if ensemble is not None and ensemble != "nve" and v <= 0:
            raise ValueError(f"must be > 0 K for {ensemble}")
        return v

    def replace(self, **overrides: Any) -> MDConfig:
        """A copy with some fields replaced, validated again (``model_copy`` would not)."""
        return type(self)(**{**self.model_dump(), **overrides}) if overrides else self


MDOptions = MDConfig  # the name the API has always had


class InvalidOption(ConfigError):
    """What :class:`MDConfig` raises: the one-line message, and the offending pydantic error
    (``first``) so that a caller can name the key its own way (:func:`from_options`)."""

    def __init__(self, first: dict, names: Mapping[str, str] | None = None):
        super().__init__(_describe_first(first, SOURCE, names))
        self.first = first


def configure(options: MDConfig | None = None, **overrides: Any) -> MDConfig:
    """``options`` (default: all defaults) with keyword overrides, validated."""
    return (options or MDConfig()).replace(**overrides)


def from_options(names: Mapping[str, str], **data: Any) -> MDConfig:
    """``MDConfig(**data)``, but an error names the offending key as ``names`` maps it, e.g.
    ``{"dt_fs": "--dt"}`` for the CLI: ``--dt: Input should be greater than 0 (got -1.0)``."""
    try:
        return MDConfig(**data)
    except InvalidOption as e:
        raise InvalidOption(e.first, names) from None


def describe(err: ValidationError, source: str = SOURCE, names: Mapping[str, str] | None = None) -> str:
    """One line naming the first offending key (as ``names`` maps it, when it does)."""
    return _describe_first(err.errors()[0], source, names)


def _describe_first(first: dict, source: str, names: Mapping[str, str] | None) -> str:
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'; allowed: {', '.join(MDConfig.model_fields)}"
    message = first["msg"].removeprefix("Value error, ")
    name = (names or {}).get(key)
    return f"{name or f'{source}: key {key!r}'}: {message} (got {first.get('input')!r})"
