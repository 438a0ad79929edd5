"""Fitted statistics say what they could fit: E0 from one composition, the scale of energy-only data."""

from __future__ import annotations

import dataclasses
from importlib import resources

import numpy as np
import pytest

from nnpes.data.io import read_frames
from nnpes.data.statistics import e0_report, energy_scale, fit_e0

ETHANOL = resources.files("nnpes.data") / "files" / "ethanol_train.xyz"


@pytest.fixture(scope="module")
def frames():
    return read_frames(ETHANOL, index=":20")


def test_one_composition_e0_is_reported_as_equal_for_every_element(frames):
    e0, method = fit_e0(frames, [1, 6, 8])
    assert method == "mean_per_atom" and np.allclose(e0, e0[0])
    line = e0_report([1, 6, 8], e0, method)
    assert "every element" in line and "one composition" in line and "isolated_atoms" in line


def test_energy_only_data_gets_an_energy_scale_not_a_force_rms(frames):
    energy_only = [dataclasses.replace(f, forces=None) for f in frames]
    e0, _ = fit_e0(energy_only, [1, 6, 8])
    scale, how = energy_scale(energy_only, [1, 6, 8], e0)
    per_atom = np.array([f.energy / f.n_atoms for f in frames])
    assert scale == pytest.approx(np.std(per_atom), rel=1e-6) and "no forces" in how
    assert energy_scale(frames, [1, 6, 8], e0)[1] == "force RMS"


def test_a_trained_model_remembers_the_label_keys_of_its_data(tmp_path):
    from nnpes.train.config import load_config
    from nnpes.train.setup import build_potential

    cfg = load_config(
        raw={
            "data": {"train": str(ETHANOL), "energy_key": "REF_energy", "forces_key": "REF_forces"},
            "model": {
                "family": "deepsets",
                "num_basis": 2,
                "embed_features": 2,
                "phi_features": [4],
                "rho_features": [],
            },
        }
    )
    potential, _ = build_potential(cfg, read_frames(ETHANOL, index=":4"))
    assert potential.label_key("energy") == "REF_energy" and potential.label_key("forces") == "REF_forces"
    potential.save(tmp_path / "model")
    import nnpes

    assert nnpes.load(tmp_path / "model").label_key("forces") == "REF_forces"
