"""Shared MD fixtures: start structures and tiny potentials, session-scoped so that compiled
functions are shared across the MD test modules (2 CPU cores)."""

from __future__ import annotations

import ase.io
import pytest
from md_models import E0, GaussianPair, tiny_nequip

import nnpes


@pytest.fixture(scope="session")
def ethanol(shared_data):
    return ase.io.read(shared_data / "ci" / "rmd17_ethanol_train.xyz", 0)


@pytest.fixture(scope="session")
def water(shared_data):
    return ase.io.read(shared_data / "ci" / "water_10.xyz", 0)


@pytest.fixture(scope="session")
def chno_potential():
    return nnpes.Potential.create(
        tiny_nequip(), [1, 6, 8], cutoff=4.0, seed=1, scale=0.05, e0=E0, avg_num_neighbors=8.0
    )


@pytest.fixture(scope="session")
def water_potential():
    return nnpes.Potential.create(tiny_nequip(), [1, 8], cutoff=3.0, seed=2, scale=0.05, e0=E0, avg_num_neighbors=10.0)


@pytest.fixture(scope="session")
def pair_potential():
    return nnpes.Potential.create(GaussianPair(), [1, 8], cutoff=3.0)


@pytest.fixture(scope="session")
def trained_ethanol_model(tmp_path_factory):
    """The quickstart config trained for 2 000 steps (~30 s on 2 cores; the full quickstart runs
    12 000), or the model directory named by $NNPES_TRAINED_ETHANOL_MODEL."""
    import os
    from pathlib import Path

    from nnpes.train import load_config, train

    if os.environ.get("NNPES_TRAINED_ETHANOL_MODEL"):
        return nnpes.load(os.environ["NNPES_TRAINED_ETHANOL_MODEL"])
    config = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    workdir = tmp_path_factory.mktemp("quickstart")
    overrides = ["training.progress=false", "training.max_steps=2000"]
    result = train(load_config(config, overrides=overrides, workdir=str(workdir)))
    return nnpes.load(result.model_dir)
