"""The training loop in phases: set-up → run (steps, validation, checkpoints) → finish.

Everything that changes during training lives in one :class:`TrainState` (parameters, optimiser
state, EMA, best parameters, early-stopping counters, step, elapsed time); the data order is a
pure function of (seed, epoch), so a resumed run continues exactly where the checkpoint left.
Both entry points, :func:`train` (a config, the ``nnpes train`` path) and :func:`fit` (a model
and frames, from Python), run the same phases.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import numpy as np

from nnpes import compilation
from nnpes.data.io import Frame
from nnpes.errors import ConfigError, DataError, TrainingError
from nnpes.evaluate import error_metrics, predict_graphs, validation_loss
from nnpes.potential import Potential
from nnpes.train.callbacks import VAL_COLUMNS, Callback
from nnpes.train.config import Config, load_config
from nnpes.train.finetune import finetune_potential, run_config
from nnpes.train.session import Inputs, Session, batch, save_checkpoint, setup
from nnpes.train.setup import (
    build_potential,
    check_dtype,
    gather_frames,
    load_datasets,
    potential_for_model,
    prepare_workdir,
    required_labels,
)
from nnpes.train.state import TrainResult, TrainState

__all__ = ["TrainResult", "TrainState", "fit", "train", "build_potential", "load_datasets"]


def run(s: Session, state: TrainState) -> tuple[TrainState, str]:
    """The loop over steps until a budget, the epoch limit or early stopping ends it.

    Returns the state and the stop reason; a Ctrl-C (KeyboardInterrupt) ends it too, with the
    state of the last completed step and the reason "interrupted". Raises TrainingError when
    the loss becomes NaN/inf.
    """
    t = s.cfg.training
    stop_reason = "max_steps" if t.max_steps is not None else "max_epochs"
    s.current = state
    try:
        return _steps(s, state, stop_reason)
    except KeyboardInterrupt:
        return s.current, "interrupted"


def _steps(s: Session, state: TrainState, stop_reason: str) -> tuple[TrainState, str]:
    t = s.cfg.training
    step, train_loss = int(state.step), float("nan")
    stop = step >= s.total_steps
    while not stop:
        epoch, b = divmod(step, s.steps_per_epoch)
        if epoch >= t.max_epochs:
            break
        s.learning_rate = s.learning_rate_now(step)
        new_state, m = s.step_fn(state, batch(s, epoch, b), np.asarray(s.learning_rate, np.float32))
        state, step = new_state, step + 1
        s.current = new_state  # what an interrupt saves: always a completed step (old or new)
        if step % 10 == 0 or step == s.total_steps or b == s.steps_per_epoch - 1:
            train_loss = float(m["loss"])
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"{s.workdir}: training loss became {train_loss} at step {step}; "
                    "lower optimizer.learning_rate or check the data"
                )
        if t.time_budget_s is not None and s.elapsed() >= t.time_budget_s:
            stop, stop_reason = True, "time_budget"
        stop = stop or step >= s.total_steps
        if b == s.steps_per_epoch - 1 or stop:  # end of an epoch (or of the run): validate
            state, early = validate(s, state, epoch, train_loss)
            s.current = state
            if early:
                stop, stop_reason = True, "early_stopping"
        if step % t.checkpoint_every_steps == 0:
            state = s.current = save_checkpoint(s, state)
        s.notify("on_step", step, {**m, "last_loss": train_loss, "elapsed_s": s.elapsed()})
    return state, stop_reason


def validate(s: Session, state: TrainState, epoch: int, train_loss: float) -> tuple[TrainState, bool]:
    """End of an epoch: validation metrics, best parameters, early-stopping counter, ``on_epoch_end``.

    Returns the state and whether early stopping is due.
    """
    params = state.ema if s.cfg.optimizer.ema_decay is not None else state.params
    step = int(state.step)
    row = {
        "epoch": epoch + 1,
        "step": step,
        "elapsed_s": round(s.elapsed(), 2),
        "train_loss": train_loss,
        "learning_rate": s.learning_rate,
    }
    early = False
    if s.val_graphs:
        predictions = predict_graphs(s.potential.replace(params=params), s.val_graphs, max(s.batch_size, 16))
        vm = error_metrics(s.val_frames, predictions)
        vl = validation_loss(vm, s.weights)
        row["val_loss"] = vl
        row.update({c: vm.get(c[4:]) for c in VAL_COLUMNS})
        if vl < float(state.best_val):
            state = state.replace(best_val=np.asarray(vl), bad_epochs=np.asarray(0), best_params=params)
            s.best_metrics = vm
        else:
            state = state.replace(bad_epochs=np.asarray(int(state.bad_epochs) + 1))
        patience = s.cfg.training.early_stopping_patience
        early = bool(patience) and int(state.bad_epochs) >= patience
    else:
        state = state.replace(best_params=params)
    s.notify("on_epoch_end", row)
    return state, early


def finish(s: Session, state: TrainState, stop_reason: str) -> TrainResult:
    """Final checkpoint, model/ (best validated parameters; after an interrupt before any
    validation, the current ones), test metrics, result.json; calls ``on_end``."""
    step = int(state.step)
    model_dir = os.path.join(s.workdir, "model")
    if step > s.start_step or not os.path.isdir(model_dir):
        state = save_checkpoint(s, state)
    params = state.best_params
    if stop_reason == "interrupted" and not np.isfinite(float(state.best_val)):  # never validated yet
        params = state.ema if s.cfg.optimizer.ema_decay is not None else state.params
    final = s.potential.replace(params=params)
    if final.members and s.val_graphs:  # an ensemble's σ calibrated so its variances match validation errors
        from nnpes.uncertainty import calibrate

        final = calibrate(final, s.val_frames, predict_graphs(final, s.val_graphs, max(s.batch_size, 16)))
    final.save(model_dir)
    test_metrics = None
    if s.test_frames and stop_reason != "interrupted":
        from nnpes.evaluate import evaluate_frames

        test_metrics, _ = evaluate_frames(final, s.test_frames)
    result = TrainResult(
        s.workdir,
        model_dir,
        step,
        math.ceil(step / s.steps_per_epoch),
        stop_reason,
        compilation.count("train_step") - s.traces0,
        len(s.shapes),
        s.best_metrics,
        test_metrics,
        s.elapsed(),
        **s.compile_stats(),
        learning_rate=s.learning_rate,
    )
    with open(os.path.join(s.workdir, "result.json"), "w") as f:
        json.dump(dataclasses.asdict(result), f, indent=2)
    s.notify("on_end", result)
    return result


def _execute(
    cfg: Config,
    inputs: Callable[[], Inputs],
    callbacks: Sequence[Callback],
    clock: Callable[[], float] | None = None,
) -> TrainResult:
    """The phases both entry points share: work directory, inputs, set-up, run, finish.

    A Ctrl-C during the steps writes the checkpoint of the last completed step and the model,
    then raises KeyboardInterrupt again (rerunning the same command resumes from there).
    """
    clock = clock or time.perf_counter  # looked up per call: tests replace the clock
    t_start = clock()
    check_dtype(cfg)
    workdir = prepare_workdir(cfg)
    potential, report, train_frames, val_frames, test_frames, *added = inputs()
    # long-range terms fix their k grids (static shapes) for every structure the run evaluates
    potential = potential.for_structures(list(train_frames) + list(val_frames) + list(test_frames))
    prepared = (potential, report, train_frames, val_frames, test_frames, *added)
    session, state = setup(run_config(cfg), workdir, prepared, callbacks, t_start, clock)
    try:
        state, stop_reason = run(session, state)
        result = finish(session, state, stop_reason)
    finally:
        session.notify("close")
    if stop_reason == "interrupted":
        raise KeyboardInterrupt(f"training interrupted at step {result.step}; checkpoint and model written")
    return result


def train(cfg: Config, config_path: str | None = None, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train the potential ``cfg`` describes on ``cfg.data``; resume from the newest checkpoint
    in the run directory if there is one. Writes ``WORKDIR/{config.yaml, metrics.csv,
    checkpoints/, model/, result.json}``. ``config_path`` is unused (kept for callers).

    Raises:
        ConfigError: no data section, float64 without 64-bit JAX, resuming with a changed config.
        DataError: unusable data. TrainingError: the loss became NaN/inf.
    """
    if cfg.data is None:
        raise ConfigError("missing required key 'data.train'")

    def inputs() -> Inputs:
        train_frames, val_frames, test_frames = load_datasets(cfg)
        if cfg.init_from is not None:  # fine-tuning: the base model, grown to the data's elements
            potential, report, added = finetune_potential(cfg, train_frames, val_frames)
            return potential, report, train_frames, val_frames, test_frames, added
        potential, report = build_potential(cfg, train_frames, val_frames)
        return potential, report, train_frames, val_frames, test_frames

    return _execute(cfg, inputs, callbacks)


def as_config(config: Config | dict | None = None, workdir: str | os.PathLike | None = None) -> Config:
    """A :class:`Config` from a Config, a dict (validated like a YAML file: ConfigError naming the
    key) or None (defaults); ``workdir`` wins over the config's."""
    if config is None or isinstance(config, dict):
        return load_config(raw=config or {}, workdir=None if workdir is None else os.fspath(workdir))
    if not isinstance(config, Config):
        raise TypeError(f"config must be an nnpes.train.Config, a dict or None, got {type(config).__name__}")
    return config if workdir is None else config.model_copy(update={"workdir": os.fspath(workdir)})


def _potential(
    model_or_potential: nn.Module | Potential,
    cutoff: float | None,
    cfg: Config,
    train_frames: list[Frame],
    val_frames: list[Frame],
    ensemble: int = 0,
    ensemble_kind: str = "deep",
) -> tuple[Potential, str]:
    if ensemble_kind not in ("deep", "shallow") or (ensemble_kind == "shallow" and ensemble < 2):
        raise ConfigError(f"ensemble_kind: {ensemble_kind!r} with ensemble={ensemble}: 'deep', or 'shallow' with ≥ 2")
    shallow = ensemble_kind == "shallow"
    if isinstance(model_or_potential, Potential):
        pot = model_or_potential
        if ensemble >= 2 and (ensemble, shallow) != (pot.members, pot.shallow):
            kind = "shallow" if pot.shallow else "deep"
            raise ConfigError(
                f"ensemble: {ensemble} {ensemble_kind} members asked for, the given potential has {pot.members} {kind}"
            )
        if cutoff is not None and float(cutoff) != pot.cutoff:
            raise ConfigError(f"cutoff: {cutoff} Å differs from the given potential's {pot.cutoff} Å")
        if cfg.terms.electrostatics is not None or cfg.terms.zbl is not None:
            raise ConfigError("terms: a given Potential keeps its own terms; pass the bare model to fit to add them")
        report = f"E0 ({pot.e0_method}) and scale of the given potential; mean neighbours {pot.avg_num_neighbors:.2f}"
        return pot, report
    if not isinstance(model_or_potential, nn.Module):
        raise TypeError(f"fit: expected a flax module or an nnpes.Potential, got {type(model_or_potential).__name__}")
    r_c = float(cutoff if cutoff is not None else getattr(model_or_potential, "cutoff", 5.0))
    return potential_for_model(
        model_or_potential, r_c, train_frames, val_frames, cfg.seed, terms=cfg.terms.build, members=ensemble,
        shallow=shallow,
    )  # fmt: skip


def fit(
    model_or_potential: nn.Module | Potential,
    train: Sequence[Frame | str | os.PathLike] | str | os.PathLike,
    validation: Sequence[Frame | str | os.PathLike] | str | os.PathLike | None = None,
    *,
    config: Config | dict | None = None,
    workdir: str | os.PathLike | None = None,
    test: Sequence[Frame | str | os.PathLike] | str | os.PathLike | None = None,
    callbacks: Sequence[Callback] = (),
    cutoff: float | None = None,
    ensemble: int = 0,
    ensemble_kind: str = "deep",
) -> TrainResult:
    """Train a flax module (any module following :mod:`nnpes.models.base`, a user's own
    included) or an :class:`nnpes.Potential` on frames, with the loop of ``nnpes train``.

    Args:
        model_or_potential: a bare module gets E0 (eV), scale (eV, force RMS), the mean
            neighbour count and its fitted constants from the training frames; a Potential is
            trained as it is (its weights, E0 and scale are the starting point: fine-tuning).
        train, validation, test: lists of :class:`nnpes.data.io.Frame` and/or file paths. Without
            validation frames the last epoch's parameters are the ones saved.
        config: a :class:`Config`, a dict of its sections (``{"training": {"max_steps": 100}}``)
            or None for defaults; its ``data`` and ``model`` sections are not used; its ``terms``
            are added to a bare module (a Potential given with ``terms`` is refused: it keeps its own).
        workdir: run directory (wins over ``config.workdir``); a run resumes from its newest
            checkpoint. Layout as :func:`train`.
        callbacks: extra :class:`Callback` objects, called after the built-in writers.
        cutoff: r_c, Å, for a bare module (default: its ``cutoff`` field, else 5 Å).
        ensemble: M ≥ 2 trains a bare module as an ensemble of M networks (seeds seed…seed+M−1,
            each its own data order) whose spread is the uncertainty (:mod:`nnpes.uncertainty`).
        ensemble_kind: "deep" (M networks) or "shallow" (one network with M readout heads, their
            spread fitted by negative log-likelihoods of energies and projected forces).

    Returns:
        The :class:`TrainResult` (also in ``WORKDIR/result.json``); the model is in ``WORKDIR/model``.
    """
    cfg = as_config(config, workdir)

    def inputs() -> Inputs:
        require = required_labels(cfg)
        train_frames = gather_frames(train, require, "train")
        if not train_frames:
            raise DataError("fit: no training frames")
        val_frames = gather_frames(validation, require, "validation")
        test_frames = gather_frames(test, (), "test")
        potential, report = _potential(
            model_or_potential, cutoff, cfg, train_frames, val_frames, ensemble, ensemble_kind
        )
        return potential, report, train_frames, val_frames, test_frames

    return _execute(cfg, inputs, callbacks)
