"""The model contract (nnpes/models/base.py): hyper-parameter ranges refused with one line naming
the key, models free of data/physics/training/MD code, user modules registrable as families."""

from __future__ import annotations

import ast
from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import pytest

import nnpes
from nnpes.errors import ConfigError, ModelError
from nnpes.models import FAMILIES, SiteModel, register_family
from nnpes.models.base import fitted_fields, hyperparameter_names
from nnpes.train.config import load_config

MODELS_DIR = Path(nnpes.__file__).parent / "models"
FORBIDDEN = ("nnpes.data", "nnpes.physics", "nnpes.train", "nnpes.md", "nnpes.potential", "nnpes.evaluate")
TRAIN = str(Path(nnpes.__file__).parent / "data" / "files" / "ethanol_train.xyz")

# One impossible value for every hyper-parameter of every family (the test below fails when a
# family gains a hyper-parameter that has no row here, so every new key gets its range).
BAD_VALUES = {
    "nequip": {
        "channels": 0,
        "l_max": -1,
        "parity": "maybe",
        "num_layers": 0,
        "num_basis": 0,
        "radial_features": [16, -2],
        "envelope_p": 0,
        "readout_features": 0,
        "hidden_irreps": "8x1o",
        "edge_chunk": -1,
        "edge_memory_mb": 0.0,
    },
    "mace": {
        "channels": 0,
        "l_max": 5,
        "hidden_l_max": 3,  # above the default l_max = 2: the family's cross-field check
        "correlation": 0,
        "num_layers": 0,
        "num_basis": 0,
        "radial_features": [0],
        "envelope_p": 33,
        "readout_features": -1,
        "edge_chunk": -1,
        "edge_memory_mb": -1.0,
    },
    "behler_parrinello": {
        "num_radial": 0,
        "radial_shifts": [],
        "radial_etas": [1.0, 2.0, 3.0],
        "angular_etas": [-1.0],
        "zetas": [0],
        "lambdas": [2],
        "hidden_features": [0],
        "envelope_p": 0,
        "edge_chunk": -1,
    },
    "deepsets": {
        "num_basis": 0,
        "envelope_p": 0,
        "embed_features": 0,
        "angular_order": -1,
        "phi_features": [],
        "rho_features": [3, 0],
    },
}


def _imports(path: Path) -> list[str]:
    """Every module an import statement names, at top level or inside a function."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_model_modules_import_no_data_physics_training_or_md_code(path):
    bad = [m for m in _imports(path) if m.startswith(FORBIDDEN)]
    assert not bad, f"{path.name} imports {bad}"


def test_every_hyperparameter_of_every_family_has_an_out_of_range_case():
    assert set(BAD_VALUES) == set(FAMILIES)
    for family, cls in FAMILIES.items():
        assert set(BAD_VALUES[family]) == set(hyperparameter_names(cls)), family


CASES = [(family, key, value) for family, table in BAD_VALUES.items() for key, value in table.items()]


@pytest.mark.parametrize("family, key, value", CASES, ids=[f"{f}.{k}" for f, k, _ in CASES])
def test_config_refuses_out_of_range_hyperparameter_in_one_line_naming_the_key(family, key, value):
    raw = {"data": {"train": TRAIN}, "model": {"family": family, key: value}}
    with pytest.raises(ConfigError) as err:
        load_config(raw=raw)
    message = str(err.value)
    assert "\n" not in message and key in message and "model" in message, message


@pytest.mark.parametrize("family, key, value", CASES[::3], ids=[f"{f}.{k}" for f, k, _ in CASES[::3]])
def test_potential_create_refuses_out_of_range_hyperparameter_in_one_line(family, key, value):
    value = tuple(value) if isinstance(value, list) else value
    model = FAMILIES[family](**{key: value})
    with pytest.raises(ModelError) as err:
        nnpes.Potential.create(model, [1, 8], cutoff=3.0)
    assert "\n" not in str(err.value) and key in str(err.value)


def test_fitted_constants_are_not_user_keys():
    assert fitted_fields(FAMILIES["behler_parrinello"]) == {
        "feature_mean": "descriptor_mean",
        "feature_std": "descriptor_std",
    }
    with pytest.raises(ConfigError, match="unknown key 'model.feature_mean'"):
        load_config(raw={"data": {"train": TRAIN}, "model": {"family": "behler_parrinello", "feature_mean": [0.0]}})


class Harmonic(SiteModel):
    """A registrable user family: ε_i = k Σ_j (r_ij − r0)² f(r_ij)."""

    r0: float = 1.0

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        k = self.param("k", nn.initializers.ones, (self.num_species,))
        r = jnp.linalg.norm(vectors, axis=-1)
        pair = jnp.where(edge_mask, (r - self.r0) ** 2 * (1 - r / self.cutoff) ** 2, 0.0)
        return (
            jnp.zeros(species.shape[0], vectors.dtype)
            .at[receivers]
            .add((k[species[receivers]] * pair).astype(vectors.dtype))
        )


def test_registered_user_family_is_a_config_family_and_round_trips(tmp_path):
    register_family("test_harmonic", Harmonic)
    try:
        cfg = load_config(raw={"data": {"train": TRAIN}, "model": {"family": "test_harmonic", "r0": 1.2}})
        assert cfg.build_model() == Harmonic(r0=1.2)
        potential = nnpes.Potential.create(cfg.build_model(), [1, 6, 8], cutoff=4.0)
        potential.save(tmp_path / "m")
        assert nnpes.load(tmp_path / "m").model == potential.model
    finally:
        del FAMILIES["test_harmonic"]


def test_registering_a_taken_family_name_is_refused():
    with pytest.raises(ModelError, match="already registered"):
        register_family("nequip", Harmonic)
