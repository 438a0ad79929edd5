"""Model families: flax modules mapping the edges of a padded graph to one output per atom.

The contract every family follows (call signature, filled-in fields, hyper-parameter ranges,
constants fitted on training data, receptive field) is written in :mod:`nnpes.models.base`.
:data:`FAMILIES` is the one mapping from a family name (config key ``model.family``, saved
models) to its module; :func:`register_family` adds a user's own module to it.
"""

from __future__ import annotations

from nnpes.errors import ModelError
from nnpes.models.base import SiteModel, receptive_hops
from nnpes.models.behler_parrinello import BehlerParrinello
from nnpes.models.deepsets import DeepSets
from nnpes.models.mace import MACE
from nnpes.models.nequip import NequIP

FAMILIES: dict[str, type] = {
    "nequip": NequIP,
    "mace": MACE,
    "behler_parrinello": BehlerParrinello,
    "deepsets": DeepSets,
}


def register_family(name: str, cls: type, *, replace: bool = False) -> type:
    """Make a flax module class a named family: configs (``model.family: NAME``), saving and
    loading then know it. Returns ``cls``, so it works as a decorator factory's target:
    ``register_family("pair_mlp", PairMLP)``.

    A model whose class is not registered still saves and loads: the saved model records the
    class's import path (and its source file), see :func:`nnpes.load`.
    """
    if not name or not name.replace("_", "").isalnum():
        raise ModelError(f"family name must be letters, digits and underscores, got {name!r}")
    if name in FAMILIES and FAMILIES[name] is not cls and not replace:
        raise ModelError(f"family {name!r} is already registered to {FAMILIES[name].__name__} (pass replace=True)")
    FAMILIES[name] = cls
    return cls


def family_name(model) -> str | None:
    """The registered family name of a model instance, or None for an unregistered class."""
    for name, cls in FAMILIES.items():
        if type(model) is cls:
            return name
    return None


def family_class(name: str, where: str = "model") -> type:
    """The module class of a registered family; a one-line ModelError for an unknown name."""
    if name not in FAMILIES:
        raise ModelError(f"{where}: unknown model family {name!r}, expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


__all__ = [
    "FAMILIES",
    "BehlerParrinello",
    "DeepSets",
    "MACE",
    "NequIP",
    "SiteModel",
    "family_class",
    "family_name",
    "receptive_hops",
    "register_family",
]
