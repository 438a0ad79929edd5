"""Set-up of a training session: the graphs, the bucket ladder, the optimiser, the jitted step
and the (restored) state, held in one :class:`Session` for the loop (:mod:`nnpes.train.loop`)."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnpes import compilation
from nnpes.data.graph import frame_to_graph, species_indices
from nnpes.data.io import Frame
from nnpes.data.sanity import warn_units
from nnpes.errors import ConfigError, where
from nnpes.potential import Potential
from nnpes.train import checkpoint
from nnpes.train.batches import BucketLadder, epoch_batches, fit_ladder, member_batches, shard_batch
from nnpes.train.callbacks import Callback, CSVWriter, ProgressBar, RunInfo, TensorBoardWriter
from nnpes.train.config import Config
from nnpes.train.loss import LOSS_TERMS
from nnpes.train.optimizer import learning_rate_at, make_optimizer, masked, run_progress, trainable_mask
from nnpes.train.setup import check_dtype, residual_graphs, warn_untrained_labels
from nnpes.train.state import TrainState, init_state
from nnpes.train.step import make_train_step

Inputs = tuple[Potential, str, list[Frame], list[Frame], list[Frame]] | tuple[Potential, str, list, list, list, Any]
"""(potential, statistics report, train, validation, test frames[, added]): what set-up starts
from; ``added`` (fine-tuning) marks the parameter entries that are new, which train even inside
a frozen module (:func:`nnpes.train.new_species.grow_species`)."""


@dataclasses.dataclass
class Session:
    """Everything fixed for one training session (one process), built by :func:`setup`."""

    cfg: Config
    workdir: str
    potential: Potential
    train_graphs: list
    val_frames: list[Frame]
    val_graphs: list
    test_frames: list[Frame]
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    weights: dict
    step_fn: Callable
    sharding: object
    callbacks: list[Callback]
    t_start: float
    ladder: BucketLadder | None = None
    clock: Callable[[], float] = time.perf_counter
    elapsed0: float = 0.0
    start_step: int = 0
    shapes: set = dataclasses.field(default_factory=set)
    traces0: int = 0
    compile0: dict = dataclasses.field(default_factory=compilation.stats)
    best_metrics: dict | None = None
    learning_rate: float = float("nan")
    current: TrainState | None = None  # the state after the last completed step (what an interrupt saves)

    @property
    def ckpt_dir(self) -> str:
        return os.path.join(self.workdir, "checkpoints")

    def elapsed(self) -> float:
        """Seconds of the run so far; the budget counts data loading, statistics and compilation."""
        return self.elapsed0 + self.clock() - self.t_start

    def learning_rate_now(self, step: int) -> float:
        """The rate of the next step: the schedule at the fraction of the step or time budget spent."""
        progress = run_progress(step, self.total_steps, self.elapsed(), self.cfg.training.time_budget_s)
        return learning_rate_at(self.cfg.optimizer, step, self.total_steps, progress)

    def compile_stats(self) -> dict:
        """Compile seconds and persistent-cache hits of this session (JAX's monitoring events)."""
        now = compilation.stats()
        return {k: now[k] - self.compile0[k] for k in now}

    def notify(self, method: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, method)(*args)


def setup(
    cfg: Config,
    workdir: str,
    inputs: Inputs,
    callbacks: Sequence[Callback],
    t_start: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Session, TrainState]:
    """Graphs, optimiser, jitted step and the (restored) state; calls ``on_start``."""
    potential, report, train_frames, val_frames, test_frames, *added = inputs
    warn_units([*train_frames, *val_frames, *test_frames])  # kbar stress, kcal/mol energies: say so now
    warn_untrained_labels(cfg, train_frames)  # stress in the data, stress_weight 0: say so now
    for f in test_frames:  # evaluated only at the end: an element the model cannot know must fail now
        species_indices(f.numbers, potential.atomic_numbers, where(f.source, f.index))
    potential = potential.astype(check_dtype(cfg))
    train_graphs = residual_graphs(potential, train_frames)
    val_graphs = [frame_to_graph(f, potential.cutoff, potential.atomic_numbers) for f in val_frames]
    t, n_dev = cfg.training, jax.device_count()  # all hosts' devices: every process builds the same batch
    batch_size = max(t.batch_size, n_dev)
    steps_per_epoch = math.ceil(len(train_graphs) / batch_size)
    total_steps = t.max_steps if t.max_steps is not None else t.max_epochs * steps_per_epoch
    optimizer, trainable = _optimizer(cfg, potential.params, steps_per_epoch, added[0] if added else None)
    weights = {name: getattr(cfg.loss, f"{name}_weight") for name in LOSS_TERMS}
    step_fn = make_train_step(
        potential, optimizer, weights, cfg.loss.kind, cfg.loss.huber_delta, cfg.optimizer.ema_decay, trainable
    )
    writers: list[Callback] = [CSVWriter(workdir)]
    if t.tensorboard:
        writers.append(TensorBoardWriter(workdir))
    writers.append(ProgressBar(t.progress, t.log_every_s))
    session = Session(
        cfg,
        workdir,
        potential,
        train_graphs,
        val_frames,
        val_graphs,
        test_frames,
        batch_size,
        steps_per_epoch,
        total_steps,
        weights,
        step_fn,
        _data_sharding(n_dev, potential.deep_members),
        writers + list(callbacks),
        t_start,
        ladder=fit_ladder(train_graphs, batch_size, n_dev, cfg.seed, t.max_bucket_shapes),
        clock=clock,
        traces0=compilation.count("train_step"),
    )
    state = init_state(potential.params, optimizer, potential.deep_members)
    restored = checkpoint.restore(session.ckpt_dir, jax.device_get(state))
    if restored is not None:
        state = jax.tree.map(jnp.asarray, restored)
    elif checkpoint.latest_step(session.ckpt_dir) is not None:  # never start over a run silently
        raise ConfigError(
            f"{session.ckpt_dir}: no checkpoint there can be restored into this run (written by another "
            "nnpes version, or damaged); use a new --workdir, or delete the checkpoints to start over"
        )
    session.start_step, session.elapsed0 = int(state.step), float(state.elapsed_s)
    session.notify(
        "on_start",
        RunInfo(
            workdir,
            session.start_step,
            total_steps,
            steps_per_epoch,
            len(train_graphs),
            len(val_graphs),
            len(test_frames),
            n_dev,
            report,
            cfg,
            t.time_budget_s,
            session.ladder.shapes,
            jax.devices()[0].platform,
        ),
    )
    return session, state


def _optimizer(cfg: Config, params, steps_per_epoch: int, added) -> tuple:
    """The optimiser, frozen entries (``finetune.freeze``) masked, and the trainable mask (None: all)."""
    trainable = trainable_mask(params, cfg.finetune.freeze, added)
    return masked(make_optimizer(cfg.optimizer, steps_per_epoch), trainable), trainable


def _data_sharding(n_dev: int, members: int = 0):
    if n_dev == 1:
        return None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    spec = PartitionSpec(None, "data") if members else PartitionSpec("data")  # an ensemble: (member, shard, ...)
    return NamedSharding(Mesh(np.array(jax.devices()), ("data",)), spec)


def batch(s: Session, epoch: int, b: int):
    n, n_dev = len(s.train_graphs), jax.device_count()
    if s.potential.deep_members:  # member m draws its own data order (seed + m)
        orders = [epoch_batches(n, s.batch_size, s.cfg.seed + m, epoch)[b] for m in range(s.potential.deep_members)]
        lists = [[s.train_graphs[i] for i in idx] for idx in orders]
        batch = member_batches(lists, n_dev, s.potential.dtype, s.ladder)
    else:
        idx = epoch_batches(n, s.batch_size, s.cfg.seed, epoch)[b]
        batch = shard_batch([s.train_graphs[i] for i in idx], n_dev, s.potential.dtype, s.ladder)
    s.shapes.add((batch.nodes["positions"].shape, batch.senders.shape))
    if s.sharding is not None:
        # each process hands over only the shards its own devices hold (works multi-host too)
        batch = jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, s.sharding, lambda i: x[i]), batch)
    return batch


def save_checkpoint(s: Session, state: TrainState) -> TrainState:
    """Write the state (with the elapsed time so far) as the checkpoint of its step."""
    state = state.replace(elapsed_s=np.asarray(s.elapsed()))
    checkpoint.save(s.ckpt_dir, int(state.step), state, keep=s.cfg.training.keep_checkpoints)
    return state
