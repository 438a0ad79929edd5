"""Fine-tuning keys of a training config: ``init_from`` (a trained model to start from) and the
``finetune:`` section (:mod:`nnpes.train.finetune` builds the run from them).

With ``init_from`` the base model fixes the architecture: its family, cutoff and
hyper-parameters become the config's ``model:`` section (so ``nnpes config`` shows them and a
resumed run compares them like any key). A ``model:`` key the user gives must agree with the
base model; a different value is refused in one line, since the weights would not fit it.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nnpes.errors import ConfigError, ModelError

_STRICT = ConfigDict(extra="forbid", frozen=True)


class FinetuneConfig(BaseModel):
    """How a run starting from ``init_from`` treats the base model. ``freeze`` applies to any run
    (from Python too: :func:`nnpes.train.fit`); the other keys need ``init_from``."""

    model_config = _STRICT
    freeze: tuple[str, ...] = Field(
        (),
        description="parameters kept as they are: flax module names or '/'-joined paths (layer_0, layer_0/radial)",
    )
    refit_e0: bool = Field(True, description="E0 refitted on the new data (else only new elements get one)")
    learning_rate_factor: float = Field(0.1, gt=0.0, description="with init_from: lr = optimizer.learning_rate × this")


def _needs_init_from(raw: dict, source: str) -> None:
    """``finetune`` keys other than ``freeze`` act only with ``init_from``: refuse them without it."""
    try:
        section = FinetuneConfig.model_validate(raw.get("finetune") or {})
    except (ValueError, TypeError):
        return  # the config's own validation names the bad key
    for key in ("refit_e0", "learning_rate_factor"):
        if getattr(section, key) != FinetuneConfig.model_fields[key].default:
            raise ConfigError(f"{source}: key 'finetune.{key}' needs init_from (the trained model to fine-tune)")


def with_base_model(raw: dict, source: str) -> dict:
    """``raw`` (a config dict, paths resolved) with ``model:`` taken from the ``init_from`` model.

    Raises:
        ConfigError: one line naming the key: init_from is not a model directory, is an ensemble
            or an unregistered family, or a given ``model.<key>`` / ``terms`` contradicts the base.
    """
    path = raw.get("init_from")
    if path is None:
        _needs_init_from(raw, source)
        return raw
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{source}: key 'init_from' must be a model or run directory, got {path!r}")
    workdir = os.path.abspath(str(raw.get("workdir", "runs/default")))
    if os.path.abspath(path) in (workdir, os.path.join(workdir, "model")):
        raise ConfigError(f"{source}: key 'init_from' is the run directory itself ({path}): use another workdir")
    meta = _base_metadata(path, source)
    base = _base_section(meta, path, source)
    given = raw.get("model")
    if given is not None:
        _check_agrees(given, base, path, source)
    terms = raw.get("terms")
    if terms and any(v is not None for v in (terms.values() if isinstance(terms, dict) else [terms])):
        raise ConfigError(
            f"{source}: key 'terms' is set, but with init_from the physical terms are the base model's ({path}); "
            "drop the terms section"
        )
    return {**raw, "model": base}


def _base_metadata(path: str, source: str) -> dict:
    from nnpes.model_files import _read_metadata

    try:
        _, meta = _read_metadata(path)
    except ModelError as e:
        raise ConfigError(f"{source}: key 'init_from': {e}") from None
    members = int(meta.get("ensemble_members") or 0)
    if members:
        raise ConfigError(
            f"{source}: key 'init_from': {path} is an ensemble of {members} networks; fine-tuning an ensemble "
            "is not supported (fine-tune one network, or train the ensemble from scratch)"
        )
    return meta


def _base_section(meta: dict, path: str, source: str) -> dict:
    """The base model's ``model:`` section (family, cutoff, hyper-parameters) as JSON values."""
    from nnpes.models import FAMILIES
    from nnpes.models.base import hyperparameter_names
    from nnpes.train.config import model_section

    family = meta.get("family")
    if family not in FAMILIES:
        raise ConfigError(
            f"{source}: key 'init_from': {path} holds a model of family {family!r}, not a registered family; "
            "fine-tune it from Python with nnpes.train.fit(nnpes.load(DIR), ...)"
        )
    names = hyperparameter_names(FAMILIES[family])
    hyper = {k: v for k, v in meta.get("hyperparameters", {}).items() if k in names}
    section = model_section({"family": family, "cutoff": meta["cutoff_a"], **hyper})
    return section.model_dump(mode="json")


def _check_agrees(given: Any, base: dict, path: str, source: str) -> None:
    """Refuse a user's ``model:`` key whose value differs from the base model's."""
    from nnpes.train.config import model_section

    if not isinstance(given, dict):
        raise ConfigError(f"{source}: key 'model' must be a mapping (or left out with init_from), got {given!r}")
    if given.get("family", base["family"]) != base["family"]:
        raise ConfigError(
            f"{source}: key 'model.family' is {given['family']!r}, but the init_from model ({path}) is a "
            f"{base['family']!r}; with init_from the model comes from the base: drop the model section"
        )
    try:
        values = model_section({**given, "family": base["family"]}).model_dump(mode="json")
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    for key in given:
        if values[key] != base[key]:
            raise ConfigError(
                f"{source}: key 'model.{key}' is {values[key]!r}, but the init_from model ({path}) has "
                f"{base[key]!r}; with init_from the model comes from the base: drop the model section"
            )
