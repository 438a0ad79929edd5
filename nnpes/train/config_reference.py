"""The config reference (docs/config_reference.md, ``nnpes config``), generated from the config classes:
every key with its type, range and default, never written by hand."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel

from nnpes.train.config import (
    Config,
    DataConfig,
    ElectrostaticsConfig,
    FinetuneConfig,
    LossConfig,
    OptimizerConfig,
    TrainingConfig,
    ZBLConfig,
    _model_schema,
    _section,
)

_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥", "max_length": "length ≤"}


def describe_type(ann: Any, metadata: Sequence[Any] = ()) -> str:
    """A readable type with its range, e.g. ``int ≥ 1``, ``tuple[float > 0, ...] or None``."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Annotated:
        return describe_type(args[0], [*metadata, *args[1:]])
    if origin is Literal:
        text = " / ".join(repr(a) for a in args)
    elif origin in (Union, types.UnionType):  # bounds apply to the non-None member
        return " or ".join("None" if a is type(None) else describe_type(a, metadata) for a in args)
    elif origin is tuple:
        text = (
            f"tuple[{describe_type(args[0])}, ...]"
            if len(args) == 2 and args[1] is Ellipsis
            else f"tuple[{', '.join(describe_type(a) for a in args)}]"
        )
    elif origin is list:
        text = f"list[{describe_type(args[0])}]"
    else:
        text = getattr(ann, "__name__", str(ann))
    bounds = []
    for meta in metadata:
        for item in [meta, *getattr(meta, "metadata", [])]:  # a FieldInfo carries its bounds in .metadata
            for attr, symbol in _BOUNDS.items():
                if getattr(item, attr, None) is not None and type(item).__name__.lower().startswith(attr[:2]):
                    bounds.append(f"{symbol} {getattr(item, attr)}")
    return " ".join([text, *dict.fromkeys(bounds)])


def reference_markdown() -> str:
    """The config reference of docs/config_reference.md, generated from the config classes (never by hand):
    ``nnpes config``."""
    from nnpes.models import FAMILIES

    def rows(model: type[BaseModel], prefix: str) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if name == "model" or _section(ann) is not None:
                continue
            default = "required" if field.is_required() else f"`{field.get_default(call_default_factory=False)!r}`"
            out.append(f"| `{prefix}{name}` | {describe_type(ann, field.metadata)} | {default} |")
        return out

    lines = ["| key | type | default |", "|---|---|---|"]
    lines += rows(Config, "")
    for section, cls in (
        ("data", DataConfig),
        ("loss", LossConfig),
        ("optimizer", OptimizerConfig),
        ("training", TrainingConfig),
        ("terms.electrostatics", ElectrostaticsConfig),
        ("terms.zbl", ZBLConfig),
        ("finetune", FinetuneConfig),
    ):
        lines += rows(cls, f"{section}.")
    for family, cls in FAMILIES.items():
        lines += [r.replace("` |", f"` ({family}) |", 1) for r in rows(_model_schema(family, cls), "model.")]
    return "\n".join(lines)
