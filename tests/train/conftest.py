"""Shared training fixtures: a tiny ethanol config (10 frames, a 4-channel NequIP), writing it
as YAML, running ``nnpes train`` in a subprocess, reading checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources

import flax.serialization
import numpy as np
import pytest
import yaml

ETHANOL = str(resources.files("nnpes.data") / "files" / "ethanol_train.xyz")
TINY_MODEL = {
    "family": "nequip",
    "cutoff": 4.0,
    "channels": 4,
    "l_max": 1,
    "parity": False,
    "num_layers": 1,
    "radial_features": [8],
    "readout_features": 4,
}


@pytest.fixture
def ethanol_test_path() -> str:
    return str(resources.files("nnpes.data") / "files" / "ethanol_test.xyz")


@pytest.fixture
def ethanol10(tmp_path) -> str:
    """The first 10 frames of the shipped ethanol training file (energies, forces)."""
    path = tmp_path / "ethanol10.xyz"
    if not path.exists():
        import ase.io

        ase.io.write(path, ase.io.read(ETHANOL, index=":10"))
    return str(path)


@pytest.fixture
def tiny_config(tmp_path, ethanol10):
    """``tiny_config(**sections)``: the raw config dict, each given section merged over the default."""

    def make(**sections) -> dict:
        cfg = {
            "workdir": str(tmp_path / "run"),
            "seed": 1,
            "data": {"train": ethanol10, "validation_fraction": 0.0},
            "model": dict(TINY_MODEL),
            "optimizer": {"learning_rate": 0.005, "schedule": "cosine", "ema_decay": 0.9},
            "training": {"batch_size": 2, "max_steps": 30, "checkpoint_every_steps": 5, "progress": False},
        }
        for k, v in sections.items():
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
        return cfg

    return make


@pytest.fixture
def write(tmp_path):
    """``write(cfg, name="config.yaml") -> path``: a config dict as a YAML file in tmp_path."""

    def write_yaml(cfg: dict, name: str = "config.yaml") -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return str(path)

    return write_yaml


def _python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_ENABLE_X64="1") if env is None else env
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def run_python():
    """``run_python(*args, env=None)``: ``python ARGS`` in a fresh process (64-bit JAX on by default)."""
    return _python


@pytest.fixture
def run_train():
    """``run_train(config_path, workdir, *overrides)``: ``nnpes train`` in a subprocess."""

    def run(config_path: str, workdir: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return _python("-m", "nnpes", "train", config_path, "--workdir", workdir, *extra, env=env)

    return run


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k], f"{prefix}/{k}")
    else:
        yield prefix, np.asarray(tree)


@pytest.fixture
def checkpoint_leaves():
    """``checkpoint_leaves(workdir, step) -> {"/path/of/leaf": array}`` of a checkpoint file."""

    def read(workdir: str, step: int) -> dict:
        with open(os.path.join(workdir, "checkpoints", f"step_{step:08d}.msgpack"), "rb") as f:
            return dict(_leaves(flax.serialization.msgpack_restore(f.read())))

    return read
