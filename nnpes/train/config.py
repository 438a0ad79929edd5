"""Typed, frozen training configuration validated from YAML.

Unknown keys, wrong types and impossible values are refused with one line naming the key.
Model hyper-parameters are not copied here by hand: each family's schema, ranges included, is
generated from its flax module's annotated fields (:func:`nnpes.models.base.hyperparameter_schema`),
so the config always matches the code.
"""

from __future__ import annotations

import copy
import os
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nnpes.errors import ConfigError
from nnpes.train.config_finetune import FinetuneConfig, with_base_model
from nnpes.train.config_terms import ElectrostaticsConfig, TermsConfig, ZBLConfig  # noqa: F401  (re-exported)

_STRICT = ConfigDict(extra="forbid", frozen=True)


class DataConfig(BaseModel):
    """Where the labelled frames are and which keys hold the labels."""

    model_config = _STRICT
    train: str | list[str]
    validation: str | list[str] | None = None
    test: str | list[str] | None = None
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    max_train_frames: int | None = Field(None, gt=0)
    isolated_atoms: str | None = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    virial_key: str = "virial"
    dipole_key: str = "dipole"


class LossConfig(BaseModel):
    """Loss = w_E·⟨(ΔE/N)²⟩ + w_F·⟨ΔF²⟩ + w_σ·⟨Δσ²⟩ + w_μ·⟨Δμ²⟩ (eV/atom, eV/Å, eV/Å³, e·Å), or Huber
    of the same; the dipole term needs an electrostatics term (latent charges). A shallow
    ensemble adds w·⟨NLL⟩ of energies and of projected forces, which fit its heads' spread."""

    model_config = _STRICT
    energy_weight: float = Field(10.0, ge=0.0)
    forces_weight: float = Field(1.0, ge=0.0)
    stress_weight: float = Field(0.0, ge=0.0)
    dipole_weight: float = Field(0.0, ge=0.0, description="latent charges' Σ q_i R_i vs data.dipole_key, (e·Å)²")
    energy_nll_weight: float = Field(1.0, ge=0.0, description="shallow ensembles: energy NLL (fits the heads' spread)")
    forces_nll_weight: float = Field(1.0, ge=0.0, description="shallow ensembles: NLL of projected forces (the same)")
    kind: Literal["mse", "huber"] = "mse"
    huber_delta: float = Field(0.01, gt=0.0)


class OptimizerConfig(BaseModel):
    """optax optimiser and learning-rate schedule."""

    model_config = _STRICT
    name: Literal["adam", "adamw", "amsgrad"] = "adam"
    learning_rate: float = Field(5e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine", "wsd", "plateau"] = "wsd"
    min_learning_rate_factor: float = Field(0.01, ge=0.0, le=1.0)
    decay_fraction: float = Field(0.25, gt=0.0, le=1.0, description="wsd: the final part of the run that decays")
    plateau_patience_epochs: int = Field(10, ge=1)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    grad_clip: float | None = Field(10.0, gt=0.0)
    ema_decay: float | None = Field(0.99, ge=0.0, lt=1.0)


class TrainingConfig(BaseModel):
    """Batching, budgets (steps, epochs, wall clock), validation, early stopping, checkpoints."""

    model_config = _STRICT
    batch_size: int = Field(8, ge=1)
    max_epochs: int = Field(1000, ge=1)
    max_steps: int | None = Field(None, ge=1)
    time_budget_s: float | None = Field(None, gt=0.0)
    early_stopping_patience: int | None = Field(None, ge=1)
    checkpoint_every_steps: int = Field(200, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    max_bucket_shapes: int = Field(4, ge=1, description="padded batch shapes (one compilation each)")
    log_every_s: float = Field(10.0, ge=0.0, description="s between per-epoch lines (0: every epoch)")
    tensorboard: bool = False
    progress: bool = True


def _model_schema(family: str, cls) -> type[BaseModel]:
    """``model:`` section of one family: its name, the cutoff and its hyper-parameters."""
    from nnpes.models.base import hyperparameter_schema

    extra = {
        "family": (Literal[family], ...),
        "cutoff": (float, Field(5.0, gt=0.0, description="Å")),
        "ensemble": (int, Field(0, ge=0, le=64, description="ensemble members (0 or 1: one network)")),
        "ensemble_kind": (Literal["deep", "shallow"], Field("deep", description="deep: M networks; shallow: M heads")),
    }
    return hyperparameter_schema(cls, extra, name=f"{cls.__name__}Config")


def model_section(value: Any) -> BaseModel:
    """The ``model:`` section validated by its family's schema, looked up when it is validated,
    so a family registered at any time (:func:`nnpes.models.register_family`) is a config family.

    Raises:
        ValueError: one line naming the key (``model.<key>``).
    """
    from nnpes.models import FAMILIES

    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"key 'model' must be a mapping with a 'family' key, got {value!r}")
    family = value.get("family")
    if "family" not in value:
        raise ValueError("missing required key 'model.family'")
    if family not in FAMILIES:
        import difflib

        close = difflib.get_close_matches(str(family), list(FAMILIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"key 'model.family' has value {family!r}{hint}; allowed values: {sorted(FAMILIES)}")
    try:
        return _model_schema(family, FAMILIES[family]).model_validate(value)
    except ValidationError as err:
        raise ValueError(_describe_error(err.errors()[0], ["model"], family)) from None


class Config(BaseModel):
    """The whole run: ``nnpes train CONFIG [key.sub=value ...] [--workdir DIR]``."""

    model_config = _STRICT
    workdir: str = "runs/default"
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float32"
    init_from: str | None = Field(None, description="a trained model (or run) directory to fine-tune")
    data: DataConfig | None = None
    model: Any = Field(default_factory=lambda: model_section({"family": "nequip"}))
    terms: TermsConfig = TermsConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    training: TrainingConfig = TrainingConfig()
    finetune: FinetuneConfig = FinetuneConfig()

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v: Any) -> BaseModel:
        return model_section(v)

    @model_validator(mode="after")
    def _sections_agree(self):
        if self.loss.dipole_weight > 0 and self.terms.electrostatics is None:
            raise ValueError("loss.dipole_weight needs terms.electrostatics (the latent charges whose dipole it fits)")
        if getattr(self.model, "ensemble_kind", "deep") == "shallow" and self.model.ensemble < 2:
            raise ValueError(f"model.ensemble_kind: shallow needs model.ensemble ≥ 2 heads, got {self.model.ensemble}")
        return self

    @field_validator("workdir")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    def build_model(self):
        """The flax module this config describes (hyper-parameters only)."""
        from nnpes.models import family_class

        kwargs = self.model.model_dump(exclude={"family", "cutoff", "ensemble", "ensemble_kind"})
        return family_class(self.model.family)(**kwargs)


# Keys that may change when a run resumes (only budgets).
RESUMABLE_CHANGES = (
    "training.max_steps",
    "training.max_epochs",
    "training.time_budget_s",
    "training.progress",
    "training.log_every_s",
    "training.tensorboard",
    "workdir",
)


def _describe(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    if [str(p) for p in e["loc"]] == ["model"] and e["type"] == "value_error":
        return f"{source}: {e['ctx']['error']}"  # already one line naming the key (model_section)
    return f"{source}: {_describe_error(e, [], None)}"


def _describe_error(e: dict, prefix: list[str], family: str | None) -> str:
    """One pydantic error → one line naming the dotted key (``prefix`` + the error's location)."""
    key = ".".join(prefix + [str(p) for p in e["loc"]])
    kind = e["type"]
    if kind == "extra_forbidden":
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        allowed = _allowed_keys(parent, family)
        return f"unknown key '{key}'" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return f"missing required key '{key}'"
    if kind == "literal_error":
        return f"key '{key}' has value {e.get('input')!r}; allowed values: {e.get('ctx', {}).get('expected')}"
    if kind == "value_error" and not e["loc"]:  # a family's cross-field check: its message names the keys
        return f"key '{key}': {e['ctx']['error']}"
    return f"key '{key}': {e['msg']} (got {e.get('input')!r})"


def _allowed_keys(parent: str, family: str | None) -> list[str]:
    """Field names allowed under a dotted section ('' = top level)."""
    from nnpes.models import FAMILIES

    if parent == "model":
        cls = FAMILIES.get(family or "nequip")
        return sorted(_model_schema(family or "nequip", cls).model_fields) if cls else []
    node: Any = Config
    for part in [p for p in parent.split(".") if p]:
        field = node.model_fields.get(part)
        node = _section(field.annotation) if field is not None else None
        if node is None:
            return []
    return sorted(node.model_fields)


def _section(ann: Any) -> type[BaseModel] | None:
    """The section class of a field annotated ``Section`` or ``Section | None`` (else None)."""
    for a in (ann, *typing.get_args(ann)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _set_override(tree: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        if not isinstance(node.get(p, {}), dict):
            raise ConfigError(f"{source}: override '{dotted}': '{p}' is not a section")
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=x"]`` → [("a.b", 1), ("c", "x")], values parsed as YAML scalars."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return out


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    raw: dict | None = None,
    workdir: str | None = None,
) -> Config:
    """Read and validate a YAML config (or a dict), apply ``key.sub=value`` overrides and
    ``--workdir`` (which wins over the file).

    Relative paths follow one rule: those written in a config file (``workdir`` and the
    ``data`` files) are relative to the file's directory, so a config works from any current
    directory; those given on the command line (overrides, ``workdir``) or in a dict from Python
    are relative to the current directory. ``package:NAME`` names a file shipped in
    ``nnpes/data/files``. Raises ConfigError (one line, with the line number in the file when
    it has one).
    """
    source = os.fspath(path) if path is not None else "<config>"
    lines: dict[str, int] = {}
    if raw is None:
        raw, lines = _read_yaml(source)
        raw = _resolve_paths(raw, os.path.dirname(os.path.abspath(source)))
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys")
    raw = _resolve_paths(copy.deepcopy(raw), os.getcwd())
    for key, value in parse_overrides(overrides or []):
        if key in _PATH_KEYS:
            value = _resolve_path(value, os.getcwd())
        _set_override(raw, key, value, source)
    if workdir is not None:
        raw["workdir"] = os.path.abspath(workdir)
    raw = with_base_model(raw, source)  # init_from: the architecture is the base model's
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, _at_line(source, lines, e))) from None
    _check_files(config)
    return config


def _read_yaml(source: str) -> tuple[Any, dict[str, int]]:
    """The parsed file and the 1-based line of every dotted key in it."""
    if not os.path.isfile(source):
        raise ConfigError(f"{source}: config file not found")
    with open(source) as f:
        text = f.read()
    try:
        raw = yaml.safe_load(text) or {}
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}: {at}not valid YAML ({problem})") from None
    lines: dict[str, int] = {}

    def walk(n, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = f"{prefix}{k.value}"
                lines[key] = k.start_mark.line + 1
                walk(v, key + ".")

    walk(node, "")
    return raw, lines


def _at_line(source: str, lines: dict[str, int], err: ValidationError) -> str:
    """``source`` with the line of the offending key (or of its closest parent) when known."""
    loc = [str(p) for p in err.errors()[0]["loc"]]
    if loc == ["model"] and err.errors()[0]["type"] == "value_error":
        message = str(err.errors()[0]["ctx"]["error"])
        loc = ["model", *([message.split("'model.")[1].split("'")[0]] if "'model." in message else [])]
    while loc:
        if ".".join(loc) in lines:
            return f"{source}: line {lines['.'.join(loc)]}"
        loc = loc[:-1]
    return source


_PATH_KEYS = ("workdir", "init_from", "data.train", "data.validation", "data.test", "data.isolated_atoms")


def _resolve_path(p, base: str):
    """A path (or list of paths) made absolute against ``base``; ``package:NAME`` → the shipped file."""
    if isinstance(p, list):
        return [_resolve_path(q, base) for q in p]
    if not isinstance(p, str) or not p.strip():
        return p
    if p.startswith("package:"):
        from importlib import resources

        return str(resources.files("nnpes.data") / "files" / p.split(":", 1)[1])
    return os.path.abspath(os.path.join(base, os.path.expanduser(p)))


def _resolve_paths(raw: Any, base: str) -> Any:
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    for key in ("workdir", "init_from"):
        if key in raw:
            raw[key] = _resolve_path(raw[key], base)
    if isinstance(raw.get("data"), dict):
        data = dict(raw["data"])
        for key in ("train", "validation", "test", "isolated_atoms"):
            if key in data:
                data[key] = _resolve_path(data[key], base)
        raw["data"] = data
    return raw


def _check_files(config: Config) -> None:
    d = config.data
    if d is None:
        return
    for key in ("train", "validation", "test", "isolated_atoms"):
        paths = getattr(d, key)
        for p in [paths] if isinstance(paths, str) else (paths or []):
            if not os.path.isfile(p):
                raise ConfigError(f"data.{key}: file not found: {p}")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict → {"a.b": value}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    """Keys whose values differ between two configs, ignoring budget-only keys."""
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]
