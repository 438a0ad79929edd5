"""Model families. Each is a flax module mapping (vectors, species, senders, receivers,
edge_mask) of a padded graph to one dimensionless output per atom, with the fields
``cutoff``, ``num_species`` and ``avg_num_neighbors`` that :class:`nnpes.Potential` fills in."""

from nnpes.models.behler_parrinello import BehlerParrinello, fit_standardization
from nnpes.models.deepsets import DeepSets
from nnpes.models.nequip import NequIP

# The one mapping from a family name (config key ``model.family``, saved models) to its module.
FAMILIES = {
    "nequip": NequIP,
    "behler_parrinello": BehlerParrinello,
    "deepsets": DeepSets,
}


def family_name(model) -> str:
    """The registered family name of a model instance."""
    for name, cls in FAMILIES.items():
        if type(model) is cls:
            return name
    raise KeyError(f"model class {type(model).__name__} is not registered in nnpes.models.FAMILIES")


__all__ = ["FAMILIES", "BehlerParrinello", "DeepSets", "NequIP", "family_name", "fit_standardization"]
