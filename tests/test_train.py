"""Training: config validation, resume after SIGKILL, data-parallel equivalence, evaluate CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources

import flax.serialization
import numpy as np
import pytest
import yaml

from nnpes.cli import main as cli_main
from nnpes.errors import ConfigError, DataError
from nnpes.train import load_config

ETHANOL = str(resources.files("nnpes.data") / "files" / "ethanol_train.xyz")
ETHANOL_TEST = str(resources.files("nnpes.data") / "files" / "ethanol_test.xyz")
TINY_MODEL = {"family": "nequip", "cutoff": 4.0, "channels": 4, "l_max": 1, "parity": False, "num_layers": 1,
              "radial_features": [8], "readout_features": 4}


def tiny_config(tmp_path, **sections) -> dict:
    first10 = tmp_path / "ethanol10.xyz"
    if not first10.exists():
        import ase.io

        ase.io.write(first10, ase.io.read(ETHANOL, index=":10"))
    cfg = {
        "workdir": str(tmp_path / "run"),
        "seed": 1,
        "data": {"train": str(first10), "validation_fraction": 0.0},
        "model": dict(TINY_MODEL),
        "optimizer": {"learning_rate": 0.005, "schedule": "cosine", "ema_decay": 0.9},
        "training": {"batch_size": 2, "max_steps": 30, "checkpoint_every_steps": 5, "progress": False},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


def write(tmp_path, cfg: dict, name="config.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


# -- config errors: one line naming the key or file ------------------------------------------

@pytest.mark.parametrize(
    "section, patch, expected",
    [
        ("training", {"batchsize": 4}, "unknown key 'training.batchsize'"),
        ("optimizer", {"learning_rate": "fast"}, "optimizer.learning_rate"),
        ("optimizer", {"name": "sgdd"}, "'adam', 'adamw' or 'amsgrad'"),
        ("training", {"batch_size": 0}, "training.batch_size"),
        ("model", {"chanels": 8}, "unknown key 'model.chanels'"),
    ],
)
def test_config_error_names_the_key(tmp_path, section, patch, expected):
    cfg = tiny_config(tmp_path, **{section: patch})
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, cfg))
    msg = str(err.value)
    assert expected in msg and "\n" not in msg


def test_config_missing_data_file_names_the_file(tmp_path):
    cfg = tiny_config(tmp_path, data={"train": str(tmp_path / "nope.xyz")})
    with pytest.raises(ConfigError, match=r"data\.train: file not found: .*nope\.xyz"):
        load_config(write(tmp_path, cfg))


def test_config_label_missing_from_data_names_file_frame_and_label(tmp_path):
    from nnpes.train.loop import load_datasets

    cfg = load_config(raw=tiny_config(tmp_path, loss={"stress_weight": 1.0}))
    with pytest.raises(DataError, match=r"ethanol10\.xyz: frame 0: label 'stress'"):
        load_datasets(cfg)


def test_cli_prints_config_error_as_one_line(tmp_path, capsys):
    cfg = tiny_config(tmp_path, training={"bogus": 1})
    assert cli_main(["train", write(tmp_path, cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "training.bogus" in err


def test_overrides_and_workdir_win(tmp_path):
    cfg = load_config(write(tmp_path, tiny_config(tmp_path)), ["training.batch_size=3", "optimizer.name=adamw"],
                      workdir=str(tmp_path / "elsewhere"))
    assert cfg.training.batch_size == 3 and cfg.optimizer.name == "adamw"
    assert cfg.workdir == str(tmp_path / "elsewhere")


# -- resume after SIGKILL gives the same parameters as an uninterrupted run --------------------

def _run_train(config_path: str, workdir: str, *extra, wait=True):
    cmd = [sys.executable, "-m", "nnpes", "train", config_path, "--workdir", workdir, *extra]
    env = dict(os.environ, JAX_ENABLE_X64="1")
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_state(workdir: str, step: int) -> dict:
    path = os.path.join(workdir, "checkpoints", f"step_{step:08d}.msgpack")
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k], f"{prefix}/{k}")
    else:
        yield prefix, np.asarray(tree)


@pytest.mark.slow
def test_sigkilled_training_resumes_to_identical_parameters(tmp_path):
    cfg = tiny_config(tmp_path, dtype="float64")
    path = write(tmp_path, cfg)
    ref_dir, kill_dir = str(tmp_path / "ref"), str(tmp_path / "killed")

    ref = _run_train(path, ref_dir)
    assert ref.returncode == 0, ref.stderr[-2000:]

    proc = _run_train(path, kill_dir, wait=False)
    first = os.path.join(kill_dir, "checkpoints", "step_00000005.msgpack")
    deadline = time.time() + 300
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(first), "no checkpoint appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from nnpes.train.checkpoint import latest_step

    killed_at = latest_step(os.path.join(kill_dir, "checkpoints"))
    assert killed_at is not None and killed_at < 30, "the run finished before it could be killed"

    resumed = _run_train(path, kill_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from step {killed_at}" in resumed.stdout
    assert "stopped (max_steps) at step 30" in resumed.stdout

    a, b = dict(_leaves(_final_state(ref_dir, 30))), dict(_leaves(_final_state(kill_dir, 30)))
    assert a.keys() == b.keys()
    for key in a:
        if key == "/elapsed_s":  # wall clock, the one thing that may differ
            continue
        np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=1e-12, err_msg=key)

    changed = _run_train(path, kill_dir, "optimizer.learning_rate=0.1")
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
def test_two_device_data_parallel_matches_one_device(tmp_path):
    cfg = tiny_config(tmp_path, training={"max_steps": 20, "batch_size": 4, "checkpoint_every_steps": 100})
    path = write(tmp_path, cfg)
    losses = []
    for n in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        env.pop("JAX_ENABLE_X64", None)
        out = subprocess.run([sys.executable, "-m", "nnpes", "train", path, "--workdir", str(tmp_path / f"dev{n}")],
                             env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        assert f"{n} device(s)" in out.stdout
        with open(tmp_path / f"dev{n}" / "metrics.csv") as f:
            rows = list(f)[1:]
        losses.append(float(rows[-1].split(",")[3]))
    assert abs(losses[1] - losses[0]) <= 1e-5 * abs(losses[0])


# -- evaluate -----------------------------------------------------------------------------------

def test_evaluate_cli_writes_json_with_nulls_for_absent_labels(tmp_path):
    import ase.io

    import nnpes

    pot = nnpes.Potential.create(nnpes.models.NequIP(channels=4, l_max=1, num_layers=1, radial_features=(8,)),
                                 [1, 6, 8], 4.0)
    pot.save(tmp_path / "model")
    energies_only = tmp_path / "energies_only.xyz"
    frames = ase.io.read(ETHANOL_TEST, index=":5")
    for a in frames:
        e = a.get_potential_energy()
        a.calc = None
        a.info["energy"] = e
    ase.io.write(energies_only, frames)
    out = tmp_path / "out.json"
    plot = tmp_path / "parity.png"
    rc = cli_main(["evaluate", str(tmp_path / "model"), ETHANOL_TEST, str(energies_only), "--json", str(out),
                   "--plot", str(plot)])
    assert rc == 0
    result = json.loads(out.read_text())
    full, partial = result["files"]
    assert full["frames"] == 100 and full["atoms"] == 900
    assert full["forces_mae_mev_per_a"] > 0 and full["stress_mae_mev_per_a3"] is None
    assert partial["energy_mae_mev"] > 0 and partial["forces_mae_mev_per_a"] is None
    assert plot.stat().st_size > 1000


def test_every_shipped_config_validates():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    configs = sorted(p for p in os.listdir(os.path.join(root, "configs")) if p.endswith(".yaml"))
    assert "quickstart.yaml" in configs
    for name in configs:
        try:
            cfg = load_config(os.path.join(root, "configs", name))
        except ConfigError as e:
            if "file not found" in str(e) and "shared/data" in str(e):
                continue  # reference data absent on this machine
            raise
        assert cfg.build_model() is not None


def test_readme_config_reference_is_generated_from_the_config_classes():
    from nnpes.train.config import reference_markdown

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    assert reference_markdown() in readme, "README config reference is stale: regenerate it with `nnpes config`"


def test_training_fits_behler_parrinello_standardisation_on_the_training_data(tmp_path):
    from nnpes.train.loop import build_potential, load_datasets

    model = {"family": "behler_parrinello", "cutoff": 4.0, "num_radial": 4, "zetas": [1], "lambdas": [1, -1],
             "hidden_features": [8]}
    cfg = load_config(raw=tiny_config(tmp_path, model=model) | {"model": model})
    train_frames, _, _ = load_datasets(cfg)
    potential, _ = build_potential(cfg, train_frames)
    mean, std = np.asarray(potential.model.feature_mean), np.asarray(potential.model.feature_std)
    assert mean.size > 0 and mean.shape == std.shape
    assert np.all(np.isfinite(mean)) and np.all(std > 0) and np.any(mean != 0)
