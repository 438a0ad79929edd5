"""The ``nnpes learn`` config: typed, frozen, validated from YAML like :mod:`nnpes.train.config`.

Unknown keys, wrong types and impossible values are refused with one line naming the key. The
training part is a whole training config (a path to a ``nnpes train`` YAML, or the same sections
inline under ``train:``), validated by :func:`nnpes.train.config.load_config`; its model must be
an ensemble (``model.ensemble`` ≥ 2): the members' disagreement is what selects frames.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nnpes.errors import ConfigError
from nnpes.train.config import Config, _read_yaml, _resolve_path, _set_override, parse_overrides

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FramesConfig(BaseModel):
    """Where the structures come from. ``*_count``: that many frames, evenly spaced over the file."""

    model_config = _STRICT
    initial: str = Field(description="labelled frames the first round trains on")
    initial_count: int | None = Field(None, ge=2, description="frames taken from initial (null: all)")
    relabel_initial: bool = Field(False, description="label the initial frames with the labeller (theirs replaced)")
    start: str | None = Field(None, description="MD start structures (null: the initial frames)")
    test: str | None = Field(None, description="labelled frames for the test error of each round")
    test_count: int | None = Field(None, ge=1, description="frames taken from test (null: all)")
    relabel_test: bool = Field(False, description="label the test frames with the labeller (cached in the workdir)")
    validation_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="every round(1/f)-th labelled frame validates (calibration, threshold)"
    )


class MDConfigSection(BaseModel):
    """Exploration: NVT runs at each temperature from start structures taken in turn."""

    model_config = _STRICT
    temperatures_k: tuple[float, ...] = Field((300.0,), min_length=1, description="K, one run (or more) each")
    trajectories_per_temperature: int = Field(1, ge=1)
    steps: int = Field(1000, ge=1)
    every: int = Field(10, ge=1, description="steps between recorded frames (the candidates)")
    dt_fs: float = Field(0.5, gt=0.0, description="fs")
    thermostat: Literal["langevin", "nose-hoover"] = "langevin"
    tau_t_fs: float = Field(100.0, gt=0.0, description="fs")
    backend: Literal["auto", "jax-md", "ase"] = Field("auto", description="as nnpes md --backend")

    @field_validator("temperatures_k")
    @classmethod
    def _positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(t <= 0 for t in v):
            raise ValueError(f"every temperature must be > 0 K, got {list(v)}")
        return v


class SelectConfig(BaseModel):
    """Which recorded MD frames are labelled: above the threshold, diverse, spread over runs."""

    model_config = _STRICT
    per_round: int = Field(20, ge=1, description="frames labelled per round (at most)")
    threshold_ev_a: float | None = Field(
        None, ge=0.0, description="σ_F above which a frame is a candidate, eV/Å (null: threshold_factor × alarm)"
    )
    threshold_factor: float = Field(
        1.0, gt=0.0, description="× the model's MD alarm threshold (2 × the largest σ_F on validation frames)"
    )
    min_distance_a: float = Field(
        0.05, ge=0.0, description="RMS difference of sorted interatomic distances to any chosen or labelled frame, Å"
    )
    max_per_trajectory: int | None = Field(None, ge=1, description="frames from one MD run (null: no limit)")
    order: Literal["time", "sigma"] = Field(
        "time", description="within a run: earliest frames above the threshold first, or most uncertain first"
    )


class LabelConfig(BaseModel):
    """The reference method: ``tblite`` (GFN2-xTB by default), ``emt`` or ``module:attribute``."""

    model_config = _STRICT
    calculator: str = Field(description="tblite, emt, or module:attribute (a calculator or a factory of one)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the calculator")
    max_force_ev_a: float = Field(50.0, gt=0.0, description="labels with a larger force component are skipped, eV/Å")

    @field_validator("calculator")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ("tblite", "emt") and (":" not in v or not all(v.split(":", 1))):
            raise ValueError(f"must be tblite, emt or module:attribute, got {v!r}")
        return v


class RetrainConfig(BaseModel):
    """Training per round: round 0 from scratch, later rounds from the previous round's model."""

    model_config = _STRICT
    steps: int | None = Field(None, ge=1, description="round 0 (null: the training config's budget)")
    finetune_steps: int | None = Field(None, ge=1, description="later rounds (null: as round 0)")
    learning_rate_factor: float = Field(0.3, gt=0.0, le=1.0, description="later rounds: learning rate × this")


class LearnConfig(BaseModel):
    """The whole active-learning run: ``nnpes learn CONFIG [key.sub=value ...] [--workdir DIR]``."""

    model_config = _STRICT
    workdir: str = "runs/learn"
    seed: int = Field(0, ge=0, description="MD seeds (round, run) derive from it")
    rounds: int = Field(4, ge=1, description="train → MD → select → label cycles (may grow on resume)")
    train: Config = Field(description="a nnpes train YAML (its data and workdir unused) or its sections inline")
    frames: FramesConfig
    md: MDConfigSection = MDConfigSection()
    select: SelectConfig = SelectConfig()
    label: LabelConfig
    retrain: RetrainConfig = RetrainConfig()

    @field_validator("train", mode="before")
    @classmethod
    def _train(cls, v: Any) -> Config:
        return train_section(v)

    @model_validator(mode="after")
    def _ensemble(self):
        members = getattr(self.train.model, "ensemble", 0)
        if members < 2:
            raise ValueError(
                f"key 'train.model.ensemble' must be ≥ 2 (frames are selected by the members' disagreement), "
                f"got {members}"
            )
        return self


RESUMABLE = ("rounds", "workdir")  # keys that may change when a run resumes


def train_section(value: Any) -> Config:
    """The ``train:`` key as a training :class:`Config`: a YAML path (resolved by the caller) or a
    mapping of its sections (``data`` and ``workdir`` refused: the loop supplies both).

    Raises:
        ValueError: one line naming the key (``train.<key>``).
    """
    from nnpes.train.config import load_config

    if isinstance(value, Config):
        return value
    if isinstance(value, str):
        try:
            return load_config(value)
        except ConfigError as e:
            raise ValueError(f"key 'train' ({value}): {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"key 'train' must be a training config file or its sections, got {value!r}")
    for key in ("data", "workdir"):
        if key in value:
            raise ValueError(f"key 'train.{key}': the loop supplies it (frames.*, the workdir); drop it")
    try:
        return load_config(raw=value)
    except ConfigError as e:
        raise ValueError(str(e).removeprefix("<config>: ").replace("key '", "key 'train.")) from None


_PATHS = ("workdir", "train", "frames.initial", "frames.start", "frames.test")


def load_learn_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    raw: dict | None = None,
    workdir: str | None = None,
    check_files: bool = True,
) -> LearnConfig:
    """Read and validate a learn YAML (or a dict), apply ``key.sub=value`` overrides and
    ``--workdir``. Paths written in the file are relative to its directory; those on the command
    line or in a dict, to the current directory (the rule of :func:`nnpes.train.load_config`).

    Raises:
        ConfigError: one line naming the file (with the line of the key, when known) and the key.
    """
    source = os.fspath(path) if path is not None else "<config>"
    lines: dict[str, int] = {}
    if raw is None:
        raw, lines = _read_yaml(source)
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: top level must be a mapping of keys")
        raw = _resolve(raw, os.path.dirname(os.path.abspath(source)))
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys")
    raw = _resolve(raw, os.getcwd())
    for key, value in parse_overrides(overrides or []):
        if key in _PATHS:
            value = _resolve_path(value, os.getcwd())
        _set_override(raw, key, value, source)
    if workdir is not None:
        raw["workdir"] = os.path.abspath(workdir)
    try:
        config = LearnConfig.model_validate(raw)
    except ValidationError as e:
        message = describe(e.errors()[0])
        raise ConfigError(f"{_at_line(source, lines, message)}: {message}") from None
    if check_files:
        _check_files(config, source)
    return config


def _at_line(source: str, lines: dict[str, int], message: str) -> str:
    """``source`` with the line of the key the message names (or of its closest parent) when known."""
    import re

    named = re.search(r"key '([^']+)'", message)
    parts = named.group(1).split(".") if named else []
    while parts:
        if ".".join(parts) in lines:
            return f"{source}: line {lines['.'.join(parts)]}"
        parts = parts[:-1]
    return source


def _resolve(raw: dict, base: str) -> dict:
    """``raw`` with the path keys made absolute against ``base`` (inline ``train:`` sections
    keep theirs: :func:`nnpes.train.load_config` resolves them against the current directory)."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dotted in _PATHS:
        node, *rest = dotted.split(".")
        parent = raw if not rest else raw.get(node)
        key = rest[0] if rest else node
        if isinstance(parent, dict) and isinstance(parent.get(key), str):
            parent[key] = _resolve_path(parent[key], base)
    return raw


def _check_files(config: LearnConfig, source: str) -> None:
    for key in ("initial", "start", "test"):
        p = getattr(config.frames, key)
        if p is not None and not os.path.isfile(p):
            raise ConfigError(f"{source}: key 'frames.{key}': file not found: {p}")


def describe(e: dict) -> str:
    """One pydantic error of a :class:`LearnConfig` → one line naming the dotted key."""
    key = ".".join(str(p) for p in e["loc"])
    kind = e["type"]
    if kind == "extra_forbidden":
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return f"unknown key '{key}'; allowed: {', '.join(allowed_keys(parent))}"
    if kind == "missing":
        return f"missing required key '{key}'"
    if kind == "literal_error":
        return f"key '{key}' has value {e.get('input')!r}; allowed values: {e.get('ctx', {}).get('expected')}"
    if kind == "value_error":
        message = str(e["ctx"]["error"])
        return message if not key or "key '" in message else f"key '{key}': {message}"
    return f"key '{key}': {e['msg']} (got {e.get('input')!r})"


def allowed_keys(parent: str) -> list[str]:
    """Field names allowed under a dotted section of :class:`LearnConfig` ('' = top level)."""
    node: Any = LearnConfig
    for part in [p for p in parent.split(".") if p]:
        field = node.model_fields.get(part)
        node = field.annotation if field is not None else None
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            return []
    return sorted(node.model_fields)
