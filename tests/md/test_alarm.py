"""The extrapolation alarm: an ensemble trained on rMD17 ethanol (500 K MD frames) stays quiet
in a 300 K run and fires in a 1 500 K one, and so does a shallow ensemble trained on
acetylacetone frames from 300 K MD (../shared/data, when present); a run asked to stop stops at
the uncertain frame and keeps the frames before it; ``nnpes md`` writes uncertain frames to
uncertain.xyz."""

from __future__ import annotations

from importlib import resources

import ase.io
import numpy as np
import pytest

import nnpes
from nnpes.cli import main as cli_main
from nnpes.md import UncertaintyStop, UncertaintyWarning, run_md
from nnpes.md.config import MDConfig

ETHANOL_TEST = str(resources.files("nnpes.data") / "files" / "ethanol_test.xyz")


@pytest.fixture(scope="module")
def ensemble(trained_ensemble):
    return nnpes.load(trained_ensemble)


def _run(ensemble, temperature_k: float, backend: str = "ase", atoms=None, **options):
    atoms = ase.io.read(ETHANOL_TEST, index=0) if atoms is None else atoms
    config = MDConfig(ensemble="nvt", temperature_k=temperature_k, tau_t_fs=20.0, every=50, seed=1, **options)
    return run_md(ensemble, atoms, 600, config, backend=backend)


@pytest.fixture(scope="module")
def acac_shallow(shared_data, tmp_path_factory):
    """A shallow DeepSets ensemble (8 heads) trained for 1 500 steps on 90 + 10 acetylacetone
    frames of 300 K MD (BOTNet's acac set, ../shared/data/acac/train_300K.xyz), and a 300 K test
    frame. (By hand: largest σ_F 1.8 eV/Å at 300 K, 4.8 at 1 500 K, threshold 3.4.)"""
    from nnpes.data.io import read_frames
    from nnpes.models import DeepSets
    from nnpes.train import fit

    frames = read_frames(str(shared_data / "acac" / "train_300K.xyz"))
    model = DeepSets(num_basis=8, embed_features=8, phi_features=(16, 16), rho_features=(16,))
    config = {"training": {"max_steps": 1500, "batch_size": 4, "progress": False}, "optimizer": {"learning_rate": 0.01}}
    workdir = tmp_path_factory.mktemp("acac")
    result = fit(model, frames[:90], frames[90:100], cutoff=4.0, workdir=workdir, config=config, ensemble=8,
                 ensemble_kind="shallow")  # fmt: skip
    return nnpes.load(result.model_dir), ase.io.read(shared_data / "acac" / "test_MD_300K.xyz", index=0)


def test_alarm_of_a_model_trained_on_300_k_frames_fires_at_1500_k_not_at_300_k(acac_shallow, recwarn):
    ensemble, atoms = acac_shallow
    assert ensemble.shallow
    cool = _run(ensemble, 300.0, "jax-md", atoms)
    assert np.all(cool.force_std_ev_a < ensemble.force_std_alarm_ev_a) and len(cool.uncertain()) == 0
    assert not [w for w in recwarn if issubclass(w.category, UncertaintyWarning)]
    hot = _run(ensemble, 1500.0, "jax-md", atoms)
    assert hot.temperature_k[len(hot.temperature_k) // 2 :].mean() > 900
    assert np.any(hot.force_std_ev_a > ensemble.force_std_alarm_ev_a) and len(hot.uncertain()) > 0


@pytest.mark.parametrize("backend", ["ase", "jax-md"])
def test_alarm_quiet_at_300_k_and_fires_at_1500_k(ensemble, recwarn, backend):
    threshold = ensemble.force_std_alarm_ev_a  # fitted on the validation frames at training
    cool = _run(ensemble, 300.0, backend)
    assert cool.uncertainty_threshold_ev_a == threshold
    assert cool.force_std_ev_a.shape == cool.epot.shape
    assert np.all(cool.force_std_ev_a < threshold) and len(cool.uncertain()) == 0
    assert not [w for w in recwarn if issubclass(w.category, UncertaintyWarning)]

    hot = _run(ensemble, 1500.0, backend)
    assert hot.temperature_k[len(hot.temperature_k) // 2 :].mean() > 900
    assert np.any(hot.force_std_ev_a > threshold) and len(hot.uncertain()) > 0
    warned = [w for w in recwarn if issubclass(w.category, UncertaintyWarning)]
    assert warned and "outside the training data" in str(warned[0].message)


def test_stop_on_uncertainty_keeps_the_frames_up_to_the_uncertain_one(ensemble):
    with pytest.warns(UncertaintyWarning), pytest.raises(UncertaintyStop, match="force uncertainty") as info:
        _run(ensemble, 1500.0, stop_on_uncertainty=True)
    result = info.value.result
    assert result.stopped == "uncertainty"
    assert result.force_std_ev_a[-1] > result.uncertainty_threshold_ev_a
    assert np.all(result.force_std_ev_a[:-1] <= result.uncertainty_threshold_ev_a)


def test_cli_writes_uncertain_frames_and_stops(trained_ensemble, tmp_path, capsys):
    out, uncertain = tmp_path / "traj.xyz", tmp_path / "uncertain.xyz"
    args = ["md", trained_ensemble, ETHANOL_TEST, "--steps", "20", "--every", "10", "--backend", "ase", "-q"]
    args += ["--out", str(out), "--uncertainty-threshold", "1e-6", "--stop-on-uncertainty"]
    assert cli_main(args) == 3
    assert "above the threshold" in capsys.readouterr().err
    frames = ase.io.read(uncertain, index=":")
    assert len(frames) == 1 and frames[0].info["force_std_ev_a"] > 1e-6  # the start frame, then the stop
    assert len(ase.io.read(out, index=":")) == 1


def test_single_network_has_no_alarm(tmp_path):
    from helpers import TINY_MODELS

    pot = nnpes.Potential.create(TINY_MODELS["deepsets"](), [1, 6, 8], 3.0)
    atoms = ase.io.read(ETHANOL_TEST, index=0)
    result = run_md(pot, atoms, 10, MDConfig(every=5, uncertainty_threshold_ev_a=1e-9), backend="ase")
    assert result.force_std_ev_a is None and result.uncertainty_threshold_ev_a is None
