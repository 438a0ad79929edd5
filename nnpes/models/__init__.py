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


# Families whose inputs need constants fitted on the training data before training starts
# (Behler–Parrinello: per-species descriptor mean and standard deviation).
DATA_FITS = {
    "behler_parrinello": fit_standardization,
}


def fit_to_data(model, graphs):
    """The model with any data-derived constants fitted on training graphs (a no-op for
    families that have none). ``model`` has cutoff, num_species and avg_num_neighbors set."""
    fit = DATA_FITS.get(family_name(model))
    return fit(model, graphs) if fit is not None else model


def family_name(model) -> str:
    """The registered family name of a model instance."""
    for name, cls in FAMILIES.items():
        if type(model) is cls:
            return name
    raise KeyError(f"model class {type(model).__name__} is not registered in nnpes.models.FAMILIES")


__all__ = ["DATA_FITS", "FAMILIES", "BehlerParrinello", "DeepSets", "NequIP", "family_name", "fit_standardization",
           "fit_to_data"]
