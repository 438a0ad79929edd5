"""Callbacks: what a training run reports, and to whom (metrics.csv, TensorBoard, the console).

Order within one optimiser step (the loop in :mod:`nnpes.train.loop`):

1. the jitted step runs; the loss is checked for NaN every 10 steps and at epoch ends;
2. at the end of an epoch (or of the run) the validation runs, then ``on_epoch_end(row)``;
3. the checkpoint of the step is written when it is due (``training.checkpoint_every_steps``);
4. ``on_step(step, metrics)``: so a callback sees a step only once its checkpoint is on disk.

``on_start(info)`` runs once after set-up (state restored), ``on_end(result)`` once after the
final checkpoint, model/ and result.json are written, and ``close()`` always (also on errors).
Built-in writers run first, in the order CSV, TensorBoard, progress bar; user callbacks after.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
import time
from typing import Any

from nnpes import compilation
from nnpes.errors import ConfigError
from nnpes.train.state import TrainResult

VAL_COLUMNS = [
    "val_energy_mae_mev_per_atom",
    "val_energy_rmse_mev_per_atom",
    "val_forces_mae_mev_per_a",
    "val_forces_rmse_mev_per_a",
    "val_stress_mae_mev_per_a3",
    "val_stress_rmse_mev_per_a3",
]
COLUMNS = ["epoch", "step", "elapsed_s", "train_loss", "learning_rate", "val_loss", *VAL_COLUMNS]
"""Columns of metrics.csv: one row per epoch; losses dimensionless, energies meV/atom,
forces meV/Å, stress meV/Å³, elapsed_s seconds, learning_rate that of the epoch's last step."""


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What ``on_start`` is told about the run.

    Attributes:
        workdir: run directory; start_step: the step the session starts at (0, or the resumed one);
        total_steps / steps_per_epoch: the step budget; n_train / n_validation / n_test: frames;
        n_devices: devices sharing each batch; statistics: one line on the fitted E0/scale/neighbours;
        config: the run's :class:`nnpes.train.Config`; time_budget_s: the wall-clock budget or None;
        bucket_shapes: the padded (n_node, n_edge) shapes of training batches (one compilation each);
        platform: the JAX platform of the devices ("cpu", "gpu", "tpu"; chosen by ``JAX_PLATFORMS``).
    """

    workdir: str
    start_step: int
    total_steps: int
    steps_per_epoch: int
    n_train: int
    n_validation: int
    n_test: int
    n_devices: int
    statistics: str
    config: Any
    time_budget_s: float | None = None
    bucket_shapes: tuple = ()
    platform: str = "cpu"


class Callback:
    """Base class of training callbacks; every method is a no-op unless overridden."""

    def on_start(self, info: RunInfo) -> None:
        """Once, after set-up, before the first step of this session."""

    def on_step(self, step: int, metrics: dict) -> None:
        """After each step (its checkpoint written): ``metrics`` holds the step's device scalars
        (``loss``, ``grad_norm``, ``*_mse``) and ``last_loss``, the latest loss read on the host."""

    def on_epoch_end(self, row: dict) -> None:
        """After each epoch's validation: ``row`` is the metrics.csv row (keys :data:`COLUMNS`)."""

    def on_end(self, result: TrainResult) -> None:
        """Once, after the final checkpoint, model/ and result.json are written."""

    def close(self) -> None:
        """Always called last (also when training raises); must be safe to call twice."""


class CSVWriter(Callback):
    """``WORKDIR/metrics.csv``: header (re)written on a fresh run, one row per epoch appended.

    On a resume from the checkpoint of step S, rows of steps after S (written after that
    checkpoint, before the run was killed) are dropped, so no step appears twice.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.csv")

    def on_start(self, info: RunInfo) -> None:
        rows = []
        if info.start_step > 0 and os.path.isfile(self.path):
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if _int(r.get("step")) <= info.start_step]
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows([[r.get(c) for c in COLUMNS] for r in rows])
        os.replace(tmp, self.path)

    def on_epoch_end(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(c) for c in COLUMNS])


class TensorBoardWriter(Callback):
    """TensorBoard scalars of every epoch row under ``WORKDIR/tensorboard`` (needs tensorboardX)."""

    def __init__(self, workdir: str):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ConfigError(
                "training.tensorboard: needs the tensorboardX package (pip install -e '.[tensorboard]')"
            ) from None
        self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def on_epoch_end(self, row: dict) -> None:
        for k, v in row.items():
            if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                self.writer.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self.writer.close()


class ProgressBar(Callback):
    """A rich progress bar with live loss, learning rate, time budget and ETA (on a terminal only:
    piped to a file, there is no bar), plus plain, unwrapped lines ``nnpes train: ...`` at the start
    and end and per validated epoch, at most one every ``log_every_s`` seconds (and the last one)."""

    def __init__(self, enabled: bool = True, log_every_s: float = 10.0):
        self.enabled = enabled and sys.stdout.isatty()
        self.log_every_s = log_every_s
        self.bar = None
        self.budget = None
        self._last_line = -float("inf")
        self._pending = None

    def on_start(self, info: RunInfo) -> None:
        self.budget = info.time_budget_s
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.bar.add_task("train", total=info.total_steps, completed=info.start_step, info="")
            self.bar.start()
        step = info.start_step
        budget = f"; time budget {info.time_budget_s:g} s" if info.time_budget_s else ""
        self.log(
            f"nnpes train: {info.workdir}: {info.n_train} train / {info.n_validation} validation / {info.n_test} test "
            f"frames; {info.statistics}; {info.n_devices} {info.platform} device(s); "
            f"{len(info.bucket_shapes)} batch shape(s){budget}; "
            + (f"resuming from step {step}" if step else "starting at step 0")
        )

    def on_step(self, step: int, metrics: dict) -> None:
        if self.bar:
            budget = f" · {metrics['elapsed_s']:.0f}/{self.budget:g} s" if self.budget else ""
            self.bar.update(self.task, completed=step, info=f"loss {metrics['last_loss']:.3g}{budget}")

    def on_epoch_end(self, row: dict) -> None:
        if "val_loss" not in row:
            return
        line = f"epoch {row['epoch']} step {row['step']} ({row['elapsed_s']:.0f} s): train loss {row['train_loss']:.4g}"
        line += f", lr {row['learning_rate']:.3g}, val E {_fmt(row['val_energy_mae_mev_per_atom'])} meV/atom"
        line += f", F {_fmt(row['val_forces_mae_mev_per_a'])} meV/Å"
        if row.get("val_stress_mae_mev_per_a3") is not None:
            line += f", σ {_fmt(row['val_stress_mae_mev_per_a3'])} meV/Å³"
        now = time.monotonic()
        if now - self._last_line >= self.log_every_s:
            self.log(line)
            self._last_line, self._pending = now, None
        else:
            self._pending = line  # printed at the end if it was the last one

    def on_end(self, result: TrainResult) -> None:
        if self._pending:
            self.log(self._pending)
            self._pending = None
        self.close()
        cache = f", {result.cache_hits} loaded from the compilation cache" if result.cache_hits else ""
        print(
            f"nnpes train: stopped ({result.stop_reason}) at step {result.step} after {result.elapsed_s:.1f} s "
            f"({result.compile_s:.1f} s compiling{cache}); {result.compilations} train-step compilation(s) for "
            f"{result.buckets} bucket shape(s) (energy function traced "
            f"{compilation.count('energy_forces_stress')} times in total); model written to {result.model_dir}"
            + ("; rerun the same command to resume" if result.stop_reason == "interrupted" else ""),
            flush=True,
        )

    def log(self, msg: str) -> None:
        """Print a line above the bar (or plainly, never wrapped, without one)."""
        if self.bar:
            self.bar.console.print(msg, soft_wrap=True)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar = None


def _int(x) -> int:
    try:
        return int(float(x))
    except (TypeError, ValueError):
        return 1 << 62


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"
