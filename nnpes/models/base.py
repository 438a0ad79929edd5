"""The model contract: what a family (ours or a user's) provides to the rest of nnpes.

A family is a flax module that maps the edges of a padded graph to one dimensionless output
per atom. :class:`nnpes.Potential` scales the outputs to site energies (eV), adds reference
energies and other physical terms, and :mod:`nnpes.physics` differentiates the sum: a model
knows nothing of forces, stress, padding graphs or reference energies.

**Call.** ``model.apply(params, vectors, species, senders, receivers, edge_mask) -> (N,)``

- ``vectors`` (E, 3) Å: r_ij = R_j − R_i (+ periodic shift) for edge j → i. Padding edges and
  edges beyond the cutoff are already replaced by :func:`safe_vector` and flagged False in
  ``edge_mask``, so a model may take norms freely; it must zero their contribution itself.
- ``species`` (N,) int: indices into the potential's species table (never atomic numbers).
- ``senders`` (j) and ``receivers`` (i), (E,) int.
- returns (N,) float in the dtype of ``vectors``.

**Fields filled in by** :meth:`nnpes.Potential.create` (:data:`FILLED_FIELDS`): ``cutoff`` (Å),
``num_species``, ``avg_num_neighbors`` (mean neighbour count of the training data) and
``num_outputs``: 1, or 2 when a physical term reads per-atom charges (a charge head: the
readout then returns (N, 2), site output and raw charge, from the same invariant features; see
:func:`site_outputs`). Subclass :class:`SiteModel` to have them; a module without them still
works, it is then given only the fields it declares (and cannot host a charge head).

**Hyper-parameters** are the module's other dataclass fields. Their annotations carry their
ranges (``Annotated[int, Field(ge=1)]``, see the aliases below); :func:`hyperparameter_schema`
turns them into the pydantic schema that validates YAML configs, :meth:`Potential.create` and
saved models, so a bad value is one line naming the key. A family may add cross-field checks
as a ``check_hyperparameters(values: dict)`` static method that raises ``ValueError``.

**Constants fitted on training data** are fields annotated ``Annotated[..., Fitted("name")]``:
they are not user keys; the data layer (:func:`nnpes.data.statistics.fit_model_statistics`)
computes the named statistic and hands it to the model through its field. Statistics known
today: ``"descriptor_mean"`` / ``"descriptor_std"``: per-species mean and standard deviation of
the model's ``descriptors`` method (same call signature, no parameters, (N, F) output), each a
flat tuple of num_species·F numbers.

**New elements** (fine-tuning, :mod:`nnpes.train.new_species`): a parameter axis of length
num_species is a species axis (old rows are kept, new elements get fresh ones). A family with
another axis that grows with num_species (F above) declares ``feature_positions(num_species,
old_to_new) -> (F,)``: where each of its columns goes in the model with more elements.

**Receptive field.** :func:`receptive_hops`: how many cutoff spheres a site output can see
(message passing: its number of layers); the locality law of :mod:`nnpes.testing` uses it.

Adding a family is one module plus one line in :data:`nnpes.models.FAMILIES` (or
:func:`nnpes.models.register_family` for a user's module).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any

import flax.linen as nn
import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from nnpes.terms import safe_vector  # noqa: F401  (re-exported: part of the contract)

FILLED_FIELDS = ("cutoff", "num_species", "avg_num_neighbors", "num_outputs")
_FLAX_FIELDS = ("parent", "name")

# Annotated types for hyper-parameter ranges (pydantic reads them; flax ignores them).
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
EnvelopeOrder = Annotated[int, Field(ge=1, le=32)]  # polynomial cutoff order p
Widths = tuple[PositiveInt, ...]  # hidden layer widths (may be empty)


@dataclasses.dataclass(frozen=True)
class Fitted:
    """Annotation marker: this field is a constant fitted on training data (not a user key)."""

    statistic: str


class SiteModel(nn.Module):
    """Base class of model families: the fields :meth:`nnpes.Potential.create` fills in.

    Subclasses add their hyper-parameters as annotated fields and implement ``__call__`` with
    the contract's signature (module docstring).
    """

    cutoff: float = 5.0
    num_species: int = 1
    avg_num_neighbors: float = 1.0
    num_outputs: int = 1

    @property
    def receptive_hops(self) -> int:
        """Cut-off spheres a site output depends on (1: strictly local)."""
        return 1

    @property
    def reads_mirrored_edges(self) -> bool:
        """True for families whose ``__call__`` takes ``mirrored=True``: then edge E/2 + k is
        edge k reversed (:mod:`nnpes.data.neighbors`), and pair quantities may be computed once."""
        return False

    @property
    def readout_layers(self) -> tuple[str, ...]:
        """Names (below ``params``, as ``finetune.freeze`` reads them) of the layers that map the
        last features to the ``num_outputs`` outputs: a shallow ensemble's heads, the only
        parameters its likelihood loss trains. (): not declared (it then trains every one)."""
        return ()


def site_outputs(x: jnp.ndarray, num_outputs: int) -> jnp.ndarray:
    """A readout's (N, num_outputs) array as the contract returns it: (N,) for one output."""
    return x[:, 0] if num_outputs == 1 else x


def receptive_hops(model) -> int:
    """How many cut-off spheres a site output of ``model`` can see (its receptive field is
    hops·r_c). Modules that do not declare it are taken as strictly local."""
    return int(getattr(model, "receptive_hops", 1))


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _fitted_marker(annotation) -> Fitted | None:
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, Fitted):
            return meta
    return None


def model_fields(cls) -> list[dataclasses.Field]:
    """Dataclass fields of a flax module class, flax's own (parent, name) left out."""
    return [f for f in dataclasses.fields(cls) if f.name not in _FLAX_FIELDS]


def fitted_fields(cls) -> dict[str, str]:
    """{field: statistic} of the fields fitted on training data."""
    hints = _hints(cls)
    out = {}
    for f in model_fields(cls):
        marker = _fitted_marker(hints.get(f.name))
        if marker is not None:
            out[f.name] = marker.statistic
    return out


def hyperparameter_names(cls) -> list[str]:
    """The user-settable hyper-parameters of a family (filled and fitted fields excluded)."""
    fitted = fitted_fields(cls)
    return [f.name for f in model_fields(cls) if f.name not in FILLED_FIELDS and f.name not in fitted]


def hyperparameter_schema(cls, extra_fields: dict[str, Any] | None = None, name: str | None = None) -> type[BaseModel]:
    """A frozen pydantic model (unknown keys refused) of a family's hyper-parameters, built from
    the module's annotated fields, plus ``extra_fields`` ({name: (type, default)})."""
    hints = _hints(cls)
    fields: dict[str, Any] = dict(extra_fields or {})
    for f in model_fields(cls):
        if f.name in hyperparameter_names(cls):
            default = f.default if f.default is not dataclasses.MISSING else ...
            fields[f.name] = (hints.get(f.name, Any), default)
    check = getattr(cls, "check_hyperparameters", None)
    validators = {}
    if check is not None:

        def _check(values):
            check(dict(values))
            return values

        validators["_family_check"] = model_validator(mode="after")(_check)
    return create_model(
        name or f"{cls.__name__}Config",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __validators__=validators,
        **fields,
    )


def validate_hyperparameters(model, where: str) -> None:
    """Check a module instance's hyper-parameters against its schema; a bad value raises one
    ``ValueError`` line naming ``where`` and the key."""
    cls = type(model)
    values = {n: getattr(model, n) for n in hyperparameter_names(cls)}
    try:
        hyperparameter_schema(cls).model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "hyper-parameters"
        raise ValueError(f"{where}: {cls.__name__}.{key}: {err['msg']} (got {err.get('input')!r})") from None
