"""The training loop: data → statistics → jitted steps → validation → checkpoints → model/.

Everything that changes during training lives in one state pytree (parameters, optimiser
state, EMA, best parameters, early-stopping counters, step, elapsed time); the data order is a
pure function of (seed, epoch), so a resumed run continues exactly where the checkpoint left.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from nnpes.data.graph import FrameGraph, batch_graphs, bucket, frame_to_graph
from nnpes.data.io import Frame, read_frames
from nnpes.data.statistics import fit_e0, force_rms, mean_neighbors
from nnpes.errors import ConfigError, DataError
from nnpes.evaluate import error_metrics, predict_graphs, validation_loss
from nnpes.models import fit_to_data
from nnpes.physics import TRACE_COUNT as PHYSICS_TRACES
from nnpes.potential import Potential
from nnpes.train import checkpoint
from nnpes.train.config import Config, changed_keys, load_config
from nnpes.train.optimizer import make_optimizer
from nnpes.train.step import TRACE_COUNT, make_train_step


@dataclasses.dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    workdir: str
    model_dir: str
    step: int
    epochs: int
    stop_reason: str
    compilations: int
    buckets: int
    best_validation: dict | None
    test: dict | None
    elapsed_s: float


def _as_list(p) -> list[str]:
    return [] if p is None else [p] if isinstance(p, str) else list(p)


def _read(paths: Sequence[str], cfg: Config, require: Sequence[str]) -> list[Frame]:
    d = cfg.data
    frames: list[Frame] = []
    for p in paths:
        frames += read_frames(p, energy_key=d.energy_key, forces_key=d.forces_key, stress_key=d.stress_key,
                              virial_key=d.virial_key, require=require)
    return frames


def required_labels(cfg: Config) -> tuple[str, ...]:
    """Labels every training frame must carry, from the non-zero loss weights."""
    w = cfg.loss
    return tuple(n for n, x in (("energy", w.energy_weight), ("forces", w.forces_weight),
                                ("stress", w.stress_weight)) if x > 0)


def load_datasets(cfg: Config) -> tuple[list[Frame], list[Frame], list[Frame]]:
    """(train, validation, test) frames; validation split off train when no file is given."""
    require = required_labels(cfg)
    train = _read(_as_list(cfg.data.train), cfg, require)
    val = _read(_as_list(cfg.data.validation), cfg, require)
    test = _read(_as_list(cfg.data.test), cfg, ())
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    if not val and cfg.data.validation_fraction > 0 and len(train) > 1:
        n_val = max(1, int(round(cfg.data.validation_fraction * len(train))))
        val = [train[i] for i in order[:n_val]]
        train = [train[i] for i in sorted(order[n_val:])]
    if cfg.data.max_train_frames is not None:
        train = train[: cfg.data.max_train_frames]
    if not train:
        raise DataError(f"{_as_list(cfg.data.train)[0]}: no training frames left after the validation split")
    return train, val, test


def build_potential(cfg: Config, train: Sequence[Frame], extra: Sequence[Frame] = ()) -> tuple[Potential, str]:
    """A fresh potential with E0, scale and neighbour count fitted on the training frames."""
    numbers = sorted({int(z) for f in list(train) + list(extra) for z in f.numbers})
    isolated = read_frames(cfg.data.isolated_atoms, energy_key=cfg.data.energy_key) if cfg.data.isolated_atoms else None
    e0, method = fit_e0(train, numbers, isolated)
    scale = force_rms(train)
    cutoff = cfg.model.cutoff
    model = cfg.build_model()
    probe = [frame_to_graph(f, cutoff, numbers) for f in train[:1000]]
    potential = Potential.create(model, numbers, cutoff, cfg.seed, e0=e0, e0_method=method, scale=scale,
                                 avg_num_neighbors=mean_neighbors(probe))
    potential = potential.replace(model=fit_to_data(potential.model, probe))
    report = (f"E0 ({method}): " + ", ".join(f"Z={z}: {e:.4f} eV" for z, e in zip(numbers, e0))
              + f"; scale {scale:.4f} eV (force RMS); mean neighbours {potential.avg_num_neighbors:.2f}")
    return potential, report


def residual_graphs(potential: Potential, frames: Sequence[Frame]) -> list[FrameGraph]:
    """Graphs whose energy label is E − Σ E0 (float64 on the host), what the loss compares."""
    out = []
    for f in frames:
        g = frame_to_graph(f, potential.cutoff, potential.atomic_numbers)
        if g.energy is not None:
            g = dataclasses.replace(g, energy=g.energy - potential.reference_energy(f.numbers))
        out.append(g)
    return out


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Frame indices of every batch of an epoch: a seeded permutation, the last batch filled up
    from the start of the permutation so every batch is full (one padded shape per dataset)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps = math.ceil(n / batch_size)
    padded = np.concatenate([perm, perm[: steps * batch_size - n]]) if n >= batch_size else np.resize(perm, steps * batch_size)
    return [padded[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def shard_batch(graphs: Sequence[FrameGraph], n_shards: int, dtype) -> jax.Array:
    """Split a batch over devices: one padded graph per shard, stacked on a leading axis."""
    chunks = [list(c) for c in np.array_split(np.arange(len(graphs)), n_shards)]
    parts = [[graphs[i] for i in c] for c in chunks]
    n_node = bucket(max(sum(g.n_node for g in p) for p in parts) + 1)
    n_edge = bucket(max(sum(g.n_edge for g in p) for p in parts))
    n_graph = max(len(p) for p in parts) + 1
    padded = [batch_graphs(p, n_node, n_edge, n_graph, dtype=dtype) for p in parts]
    return jax.tree.map(lambda *x: np.stack(x), *padded)


def _init_state(potential: Potential, optimizer) -> dict:
    params = potential.params
    return {
        "step": jnp.asarray(0, jnp.int32),
        "params": params,
        "opt_state": optimizer.init(params),
        "ema": params,
        "best_params": params,
        "best_val": np.asarray(np.inf, np.float64),
        "bad_epochs": np.asarray(0, np.int64),
        "elapsed_s": np.asarray(0.0, np.float64),
    }


class _Progress:
    """A rich progress bar with live loss and ETA (or nothing, when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                transient=False)
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, info: str):
        if self.bar:
            self.bar.update(self.task, completed=step, info=info)

    def log(self, msg: str):
        if self.bar:
            self.bar.console.print(msg)
        else:
            print(msg, flush=True)

    def close(self):
        if self.bar:
            self.bar.stop()


def train(cfg: Config, config_path: str | None = None) -> TrainResult:
    """Train a potential as the config says; resume from the newest checkpoint in the run
    directory if there is one. Writes ``WORKDIR/{config.yaml, metrics.csv, checkpoints/, model/}``.
    """
    t_start = time.perf_counter()
    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    dtype = np.float64 if cfg.dtype == "float64" else np.float32
    workdir = os.path.abspath(cfg.workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    os.makedirs(workdir, exist_ok=True)

    resolved_path = os.path.join(workdir, "config.yaml")
    resuming = checkpoint.latest_step(ckpt_dir) is not None
    if resuming and os.path.isfile(resolved_path):
        old = load_config(resolved_path)
        diff = changed_keys(old, cfg)
        if diff:
            raise ConfigError(f"{workdir}: cannot resume with a changed config; changed keys: {', '.join(diff)} "
                              "(use a new --workdir, or change only training.max_steps/max_epochs/time_budget_s)")
    with open(resolved_path + ".tmp", "w") as f:
        yaml.safe_dump(cfg.model_dump(mode="json"), f, sort_keys=False)
    os.replace(resolved_path + ".tmp", resolved_path)

    train_frames, val_frames, test_frames = load_datasets(cfg)
    potential, stats_report = build_potential(cfg, train_frames, val_frames)
    potential = potential.astype(dtype)
    train_graphs = residual_graphs(potential, train_frames)
    val_graphs = [frame_to_graph(f, potential.cutoff, potential.atomic_numbers) for f in val_frames]

    t = cfg.training
    n_dev = jax.device_count()  # all hosts' devices: every process builds the same batch
    batch_size = max(t.batch_size, n_dev)
    steps_per_epoch = math.ceil(len(train_graphs) / batch_size)
    total_steps = t.max_steps if t.max_steps is not None else t.max_epochs * steps_per_epoch
    optimizer = make_optimizer(cfg.optimizer, total_steps, steps_per_epoch)
    weights = {"energy": cfg.loss.energy_weight, "forces": cfg.loss.forces_weight, "stress": cfg.loss.stress_weight}
    ema_decay = cfg.optimizer.ema_decay
    step_fn = make_train_step(potential, optimizer, weights, cfg.loss.kind, cfg.loss.huber_delta, ema_decay)

    state = _init_state(potential, optimizer)
    if resuming:
        restored = checkpoint.restore(ckpt_dir, jax.device_get(state))
        if restored is not None:
            state = jax.tree.map(jnp.asarray, restored)
            for k in ("best_val", "bad_epochs", "elapsed_s"):
                state[k] = np.asarray(restored[k])

    sharding = None
    if n_dev > 1:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(jax.devices()), ("data",))
        sharding = NamedSharding(mesh, PartitionSpec("data"))

    step = int(state["step"])
    start_step = step
    progress = _Progress(t.progress, total_steps, step)
    progress.log(f"nnpes train: {len(train_graphs)} train / {len(val_graphs)} validation / {len(test_frames)} test "
                 f"frames; {stats_report}; {n_dev} device(s); "
                 + (f"resuming from step {step}" if step else "starting at step 0"))
    metrics_path = os.path.join(workdir, "metrics.csv")
    columns = ["epoch", "step", "elapsed_s", "train_loss", "val_loss", "val_energy_mae_mev_per_atom",
               "val_energy_rmse_mev_per_atom", "val_forces_mae_mev_per_a", "val_forces_rmse_mev_per_a",
               "val_stress_rmse_mev_per_a3"]
    if not os.path.isfile(metrics_path) or step == 0:
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(columns)
    writer = _tensorboard(workdir) if t.tensorboard else None

    elapsed0 = float(state["elapsed_s"])
    t_session = t_start  # the budget counts data loading, statistics and compilation too
    shapes: set = set()
    traces0 = TRACE_COUNT["train_step"]
    stop_reason = "max_steps" if t.max_steps is not None else "max_epochs"
    best_metrics = None
    train_loss = float("nan")

    def elapsed() -> float:
        return elapsed0 + time.perf_counter() - t_session

    def save_checkpoint():
        state["elapsed_s"] = np.asarray(elapsed())
        checkpoint.save(ckpt_dir, step, state, keep=t.keep_checkpoints)

    stop = step >= total_steps
    while not stop:
        epoch, b = divmod(step, steps_per_epoch)
        if epoch >= t.max_epochs:
            break
        idx = epoch_batches(len(train_graphs), batch_size, cfg.seed, epoch)[b]
        batch = shard_batch([train_graphs[i] for i in idx], n_dev, dtype)
        shapes.add((batch.nodes["positions"].shape, batch.senders.shape))
        if sharding is not None:
            # each process hands over only the shards its own devices hold (works multi-host too)
            batch = jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, sharding, lambda i: x[i]), batch)
        state, m = step_fn(state, batch)
        step += 1
        if step % 10 == 0 or step == total_steps or b == steps_per_epoch - 1:
            train_loss = float(m["loss"])
            if not math.isfinite(train_loss):
                progress.close()
                raise DataError(f"{workdir}: training loss became {train_loss} at step {step}; "
                                "lower optimizer.learning_rate or check the data")
        progress.update(step, f"loss {train_loss:.3g}")
        if step % t.checkpoint_every_steps == 0:
            save_checkpoint()
        if t.time_budget_s is not None and elapsed() >= t.time_budget_s:
            stop, stop_reason = True, "time_budget"
        if step >= total_steps:
            stop = True
        if b == steps_per_epoch - 1 or stop:  # end of an epoch (or of the run): validate
            params = state["ema"] if ema_decay is not None else state["params"]
            row = {"epoch": epoch + 1, "step": step, "elapsed_s": round(elapsed(), 2), "train_loss": train_loss}
            if val_graphs:
                vm = error_metrics(val_frames, predict_graphs(potential.replace(params=params), val_graphs,
                                                              max(batch_size, 16)))
                vl = validation_loss(vm, weights)
                row["val_loss"] = vl
                row.update({c: vm.get(c[4:]) for c in columns[5:]})
                if vl < float(state["best_val"]):
                    state["best_val"], state["bad_epochs"] = np.asarray(vl), np.asarray(0)
                    state["best_params"] = params
                    best_metrics = vm
                else:
                    state["bad_epochs"] = np.asarray(int(state["bad_epochs"]) + 1)
                progress.log(f"epoch {epoch + 1} step {step}: train loss {train_loss:.4g}, val E "
                             f"{_fmt(vm['energy_mae_mev_per_atom'])} meV/atom, F {_fmt(vm['forces_mae_mev_per_a'])} meV/Å")
                if t.early_stopping_patience and int(state["bad_epochs"]) >= t.early_stopping_patience:
                    stop, stop_reason = True, "early_stopping"
            else:
                state["best_params"] = params
            with open(metrics_path, "a", newline="") as f:
                csv.writer(f).writerow([row.get(c) for c in columns])
            if writer is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and v is not None and k not in ("epoch", "step"):
                        writer.add_scalar(k, v, step)
    progress.close()
    if step > start_step or not os.path.isdir(os.path.join(workdir, "model")):
        save_checkpoint()

    final = potential.replace(params=state["best_params"])
    model_dir = os.path.join(workdir, "model")
    final.save(model_dir)
    compilations = TRACE_COUNT["train_step"] - traces0
    test_metrics = None
    if test_frames:
        from nnpes.evaluate import evaluate_frames

        test_metrics, _ = evaluate_frames(final, test_frames)
    result = TrainResult(workdir, model_dir, step, math.ceil(step / steps_per_epoch), stop_reason, compilations,
                         len(shapes), best_metrics, test_metrics, elapsed())
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(dataclasses.asdict(result), f, indent=2)
    print(f"nnpes train: stopped ({stop_reason}) at step {step} after {elapsed():.1f} s; "
          f"{compilations} train-step compilation(s) for {len(shapes)} bucket shape(s) "
          f"(energy function traced {PHYSICS_TRACES['energy_forces_stress']} times in total); model written to {model_dir}",
          flush=True)
    if writer is not None:
        writer.close()
    return result


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _tensorboard(workdir: str):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError("training.tensorboard: needs the tensorboardX package (pip install -e '.[tensorboard]')") from None
    return SummaryWriter(os.path.join(workdir, "tensorboard"))
