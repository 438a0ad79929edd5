"""Work is never lost: Ctrl-C (SIGINT) writes a checkpoint and a model; a run killed between
checkpoints resumes without duplicated metrics rows; `nnpes train` exits 130 on Ctrl-C.

The signals are sent from inside the run (a callback at a given step), never raced from outside.
"""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest
from helpers import PairModel

import nnpes
from nnpes.train import Callback, fit
from nnpes.train.checkpoint import latest_step

CONFIG = {
    "seed": 3,
    "optimizer": {"learning_rate": 0.005, "warmup_steps": 0},
    "training": {"max_steps": 12, "batch_size": 2, "checkpoint_every_steps": 100, "progress": False},
}


class SignalAt(Callback):
    """Send ``signum`` to this process right after step ``at`` (Python raises KeyboardInterrupt)."""

    def __init__(self, at: int, signum=signal.SIGINT):
        self.at, self.signum = at, signum

    def on_step(self, step, metrics):
        if step == self.at:
            os.kill(os.getpid(), self.signum)


class CrashAt(Callback):
    """Stand-in for SIGKILL inside the process: abort at step ``at`` with no clean-up."""

    def __init__(self, at: int):
        self.at = at

    def on_step(self, step, metrics):
        if step == self.at:
            raise RuntimeError("simulated kill")


def _metric_steps(workdir) -> list[int]:
    with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def frames():
    from importlib import resources

    from nnpes.data.io import read_frames

    return read_frames(resources.files("nnpes.data") / "files" / "ethanol_train.xyz", index=":10")


def test_sigint_writes_a_checkpoint_and_a_model_then_resumes_cleanly(tmp_path, frames):
    workdir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        fit(PairModel(), frames[:8], frames[8:], config=CONFIG, workdir=workdir, callbacks=[SignalAt(7)])
    assert latest_step(os.path.join(workdir, "checkpoints")) == 7  # written on the interrupt, not by schedule
    assert nnpes.load(os.path.join(workdir, "model")).atomic_numbers == (1, 6, 8)
    saved = json.loads(open(os.path.join(workdir, "result.json")).read())
    assert saved["stop_reason"] == "interrupted" and saved["step"] == 7

    again = fit(PairModel(), frames[:8], frames[8:], config=CONFIG, workdir=workdir)
    assert again.step == 12 and again.stop_reason == "max_steps"
    steps = _metric_steps(workdir)
    assert steps == sorted(set(steps)) and steps[-1] == 12


def test_a_run_killed_after_an_epoch_row_resumes_without_duplicated_rows(tmp_path, frames):
    workdir = str(tmp_path / "killed")
    config = {**CONFIG, "training": {**CONFIG["training"], "checkpoint_every_steps": 3}}
    # 4 steps per epoch (rows at steps 4, 8, 12), checkpoints every 3 steps: dying at step 8 leaves
    # the checkpoint of step 6 and a metrics row (step 8) newer than it.
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(PairModel(), frames[:8], frames[8:], config=config, workdir=workdir, callbacks=[CrashAt(8)])
    assert latest_step(os.path.join(workdir, "checkpoints")) == 6
    assert _metric_steps(workdir) == [4, 8]  # the row of step 8 is newer than the checkpoint

    fit(PairModel(), frames[:8], frames[8:], config=config, workdir=workdir)
    assert _metric_steps(workdir) == [4, 8, 12]


def test_nnpes_train_exits_130_on_ctrl_c_with_checkpoint_and_model(tmp_path, monkeypatch, tiny_config, write, capsys):
    from nnpes.cli import main
    from nnpes.train.callbacks import CSVWriter

    monkeypatch.setattr(CSVWriter, "on_step", SignalAt(3).on_step, raising=False)
    workdir = str(tmp_path / "cli")
    rc = main(["train", write(tiny_config()), "--workdir", workdir])
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert latest_step(os.path.join(workdir, "checkpoints")) == 3
    assert os.path.isfile(os.path.join(workdir, "model", "potential.json"))


def test_nnpes_train_on_sigterm_writes_checkpoint_and_model_and_exits_143(
    tmp_path, monkeypatch, tiny_config, write, capsys
):
    """What a batch scheduler sends at its time limit: handled as Ctrl-C is."""
    from nnpes.cli import main
    from nnpes.train.callbacks import CSVWriter

    monkeypatch.setattr(CSVWriter, "on_step", SignalAt(4, signal.SIGTERM).on_step, raising=False)
    workdir = str(tmp_path / "cli")
    before = signal.getsignal(signal.SIGTERM)
    rc = main(["train", write(tiny_config()), "--workdir", workdir])
    err = capsys.readouterr().err
    assert rc == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    assert latest_step(os.path.join(workdir, "checkpoints")) == 4
    assert os.path.isfile(os.path.join(workdir, "model", "potential.json"))
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the CLI's only while it runs
