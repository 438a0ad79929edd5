"""The training loop: exact resume after SIGKILL, corrupt checkpoints, data parallelism, fitted
statistics, ``nnpes.train.fit`` on frames with a user's module, callbacks, NaN losses."""

from __future__ import annotations

import json
import os
import textwrap
from importlib import resources

import jax
import numpy as np
import pytest
from helpers import PairModel

from nnpes.data.io import read_frames
from nnpes.errors import ConfigError, TrainingError
from nnpes.train import Callback, TrainState, fit, load_config

# -- resume after SIGKILL gives the same parameters as an uninterrupted run --------------------

KILL_AT_STEP_15 = textwrap.dedent('''
    """Train through the Python API and SIGKILL the process right after the step-15 checkpoint."""
    import os
    import signal
    import sys

    import jax

    jax.config.update("jax_enable_x64", True)

    from nnpes.train import Callback, load_config, train


    class KillAfterStep15(Callback):
        def on_step(self, step, metrics):  # runs after the step's checkpoint is written
            if step == 15:
                os.kill(os.getpid(), signal.SIGKILL)


    train(load_config(sys.argv[1], workdir=sys.argv[2]), callbacks=[KillAfterStep15()])
''')


@pytest.mark.slow
def test_sigkilled_training_resumes_to_identical_parameters(
    tmp_path, tiny_config, write, run_train, run_python, checkpoint_leaves
):
    from nnpes.train.checkpoint import latest_step

    path = write(tiny_config(dtype="float64"))
    ref_dir, kill_dir = str(tmp_path / "ref"), str(tmp_path / "killed")

    ref = run_train(path, ref_dir)
    assert ref.returncode == 0, ref.stderr[-2000:]

    script = tmp_path / "kill_at_15.py"
    script.write_text(KILL_AT_STEP_15)
    killed = run_python(str(script), path, kill_dir)
    assert killed.returncode == -9, killed.stderr[-2000:]
    killed_at = latest_step(os.path.join(kill_dir, "checkpoints"))
    assert killed_at == 15

    resumed = run_train(path, kill_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from step {killed_at}" in resumed.stdout
    assert "stopped (max_steps) at step 30" in resumed.stdout

    a, b = checkpoint_leaves(ref_dir, 30), checkpoint_leaves(kill_dir, 30)
    assert a.keys() == b.keys()
    for key in a:
        if key == "/elapsed_s":  # wall clock, the one thing that may differ
            continue
        np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=1e-12, err_msg=key)

    changed = run_train(path, kill_dir, "optimizer.learning_rate=0.1")
    assert changed.returncode == 2
    assert "optimizer.learning_rate" in changed.stderr and changed.stderr.strip().count("\n") == 0


def test_corrupt_last_checkpoint_falls_back_with_warning(tmp_path):
    from nnpes.train import checkpoint

    d = str(tmp_path / "ck")
    checkpoint.save(d, 1, {"x": np.arange(3.0)})
    checkpoint.save(d, 2, {"x": np.arange(3.0) + 1})
    with open(os.path.join(d, "step_00000002.msgpack"), "wb") as f:
        f.write(b"\x00garbage")
    with pytest.warns(UserWarning, match="step_00000002.msgpack"):
        state = checkpoint.restore(d, {"x": np.zeros(3)})
    np.testing.assert_array_equal(state["x"], np.arange(3.0))


# -- data parallel: two devices give the loss of one ------------------------------------------


@pytest.mark.slow
def test_two_device_data_parallel_matches_one_device(tmp_path, tiny_config, write, run_train):
    path = write(tiny_config(training={"max_steps": 20, "batch_size": 4, "checkpoint_every_steps": 100}))
    losses = []
    for n in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        env.pop("JAX_ENABLE_X64", None)
        out = run_train(path, str(tmp_path / f"dev{n}"), env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        assert f"{n} cpu device(s)" in out.stdout
        with open(tmp_path / f"dev{n}" / "metrics.csv") as f:
            rows = list(f)[1:]
        losses.append(float(rows[-1].split(",")[3]))
    assert abs(losses[1] - losses[0]) <= 1e-5 * abs(losses[0])


def test_training_fits_behler_parrinello_standardisation_on_the_training_data(tiny_config):
    from nnpes.train.setup import build_potential, load_datasets

    model = {
        "family": "behler_parrinello",
        "cutoff": 4.0,
        "num_radial": 4,
        "zetas": [1],
        "lambdas": [1, -1],
        "hidden_features": [8],
    }
    cfg = load_config(raw=tiny_config(model=model) | {"model": model})
    train_frames, _, _ = load_datasets(cfg)
    potential, _ = build_potential(cfg, train_frames)
    mean, std = np.asarray(potential.model.feature_mean), np.asarray(potential.model.feature_std)
    assert mean.size > 0 and mean.shape == std.shape
    assert np.all(np.isfinite(mean)) and np.all(std > 0) and np.any(mean != 0)


# -- nnpes.train.fit: a user's module, frames in memory, callbacks -----------------------------


class Recorder(Callback):
    def __init__(self, workdir):
        self.workdir, self.calls, self.steps, self.rows = workdir, [], [], []

    def on_start(self, info):
        self.calls.append(("start", info.start_step, info.total_steps, info.n_train, info.n_validation))

    def on_step(self, step, metrics):
        ckpt = os.path.join(self.workdir, "checkpoints", f"step_{step:08d}.msgpack")
        self.steps.append((step, float(metrics["loss"]), os.path.exists(ckpt)))

    def on_epoch_end(self, row):
        self.rows.append(row)

    def on_end(self, result):
        self.calls.append(("end", result.step, result.stop_reason))

    def close(self):
        self.calls.append(("close",))


@pytest.fixture(scope="module")
def frames():
    return read_frames(str(resources.files("nnpes.data") / "files" / "ethanol_train.xyz"), index=":10")


def test_fit_trains_a_user_module_on_frames_and_calls_the_callbacks_in_order(tmp_path, frames):
    workdir = str(tmp_path / "fit")
    rec = Recorder(workdir)
    config = {"seed": 2, "training": {"max_steps": 6, "batch_size": 2, "checkpoint_every_steps": 3, "progress": False}}
    result = fit(PairModel(cutoff=4.0), frames[:8], frames[8:], config=config, workdir=workdir, callbacks=[rec])
    assert result.step == 6 and result.stop_reason == "max_steps" and result.compilations == 1
    assert rec.calls == [("start", 0, 6, 8, 2), ("end", 6, "max_steps"), ("close",)]
    assert [s for s, _, _ in rec.steps] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _, on_disk in rec.steps if on_disk] == [3, 6]  # on_step sees the step's checkpoint
    assert all(np.isfinite(loss) for _, loss, _ in rec.steps)
    assert [r["step"] for r in rec.rows] == [4, 6] and all(r["val_loss"] > 0 for r in rec.rows)
    with open(os.path.join(workdir, "metrics.csv")) as f:
        assert len(f.read().splitlines()) == 3
    saved = json.loads(open(os.path.join(workdir, "result.json")).read())
    assert set(saved) == {
        "workdir",
        "model_dir",
        "step",
        "epochs",
        "stop_reason",
        "compilations",
        "buckets",
        "best_validation",
        "test",
        "elapsed_s",
        "compile_s",
        "cache_hits",
        "cache_misses",
        "learning_rate",
    }
    assert os.path.isfile(os.path.join(workdir, "config.yaml"))
    assert load_config(os.path.join(workdir, "config.yaml")).data is None

    from nnpes.train import checkpoint

    state = checkpoint.restore(os.path.join(workdir, "checkpoints"), jax.device_get(_fresh_state(result)))
    assert isinstance(state, TrainState) and int(state.step) == 6

    again = fit(PairModel(cutoff=4.0), frames[:8], frames[8:], config=config, workdir=workdir)  # resumes, done
    assert again.step == 6 and again.compilations == 0


def _fresh_state(result):
    import nnpes
    from nnpes.train.optimizer import make_optimizer
    from nnpes.train.state import init_state

    potential = nnpes.load(result.model_dir)
    cfg = load_config(os.path.join(result.workdir, "config.yaml"))
    return init_state(potential.params, make_optimizer(cfg.optimizer, 4))


def test_fit_takes_file_paths_and_a_potential(tmp_path, ethanol10):
    import nnpes

    potential = nnpes.Potential.create(PairModel(), [1, 6, 8], 4.0, scale=0.1)
    result = fit(
        potential,
        [ethanol10],
        config={"training": {"max_steps": 2, "batch_size": 5, "progress": False}},
        workdir=tmp_path / "pot",
        test=ethanol10,
    )
    assert result.step == 2 and result.test["frames"] == 10
    assert nnpes.load(result.model_dir).cutoff == 4.0


def test_fit_refuses_bad_config_keys_and_a_non_finite_loss(tmp_path, frames):
    with pytest.raises(ConfigError, match="unknown key 'training.bogus'"):
        fit(PairModel(), frames, config={"training": {"bogus": 1}}, workdir=tmp_path / "bad")
    config = {"training": {"max_steps": 10, "batch_size": 5, "progress": False}}
    with pytest.raises(TrainingError, match="training loss became nan at step 2") as err:
        fit(PairModel(nan=True), frames, config=config, workdir=tmp_path / "nan")
    assert "\n" not in str(err.value)


def test_fit_adds_the_config_terms_to_a_bare_module_and_refuses_them_with_a_potential(tmp_path, frames):
    import nnpes

    config = {"terms": {"zbl": {"outer_radius": 1.5}}, "training": {"max_steps": 1, "batch_size": 5, "progress": False}}
    result = fit(PairModel(cutoff=4.0), frames[:5], config=config, workdir=tmp_path / "zbl")
    terms = nnpes.load(result.model_dir).terms
    assert [type(t).__name__ for t in terms] == ["ZBL"]  # once dropped silently: the model had no terms
    with pytest.raises(ConfigError, match="keeps its own terms"):
        fit(nnpes.load(result.model_dir), frames[:5], config=config, workdir=tmp_path / "again")
