"""The typed training state (one pytree, what a checkpoint holds) and the result of a run."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Everything that changes while training; a checkpoint is exactly this pytree.

    Attributes:
        step: optimiser steps taken (int32 scalar).
        params: flax variables being optimised.
        opt_state: optax state of the optimiser.
        ema: exponential moving average of ``params`` (equal to params when EMA is off).
        best_params: parameters of the best validation epoch so far (the ones saved in model/).
        best_val: best validation loss so far (dimensionless weighted sum; inf before the first).
        bad_epochs: epochs since the validation loss last improved (early stopping).
        elapsed_s: wall-clock seconds spent on the run so far, all sessions together.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema: Any
    best_params: Any
    best_val: Any
    bad_epochs: Any
    elapsed_s: Any


def init_state(params: Any, optimizer: optax.GradientTransformation, members: int = 0) -> TrainState:
    """The state at step 0: ``params`` everywhere, no best validation yet; an ensemble's
    (``members`` > 0, stacked parameters) optimiser state is one per member, stacked too."""
    return TrainState(
        step=jnp.asarray(0, jnp.int32),
        params=params,
        opt_state=jax.vmap(optimizer.init)(params) if members else optimizer.init(params),
        ema=params,
        best_params=params,
        best_val=np.asarray(np.inf, np.float64),
        bad_epochs=np.asarray(0, np.int64),
        elapsed_s=np.asarray(0.0, np.float64),
    )


@dataclasses.dataclass
class TrainResult:
    """What a finished (or stopped) run produced (also written to ``WORKDIR/result.json``).

    Attributes:
        workdir: the run directory.
        model_dir: where the trained potential was saved (``WORKDIR/model``).
        step: optimiser steps taken in total.
        epochs: epochs started (ceil of step / steps per epoch).
        stop_reason: ``max_steps``, ``max_epochs``, ``time_budget`` or ``early_stopping``.
        compilations: train-step compilations in this session.
        buckets: distinct padded batch shapes seen in this session.
        best_validation: validation metrics of the best epoch (units as in metrics.csv), or None.
        test: test-set metrics of the saved model, or None without test frames.
        elapsed_s: wall-clock seconds, all sessions together.
        compile_s: seconds of this session spent tracing and compiling (or loading compiled
            programs from the persistent cache), part of elapsed_s.
        cache_hits / cache_misses: persistent compilation cache lookups of this session.
        learning_rate: the rate of the last step.
    """

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
    compile_s: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    learning_rate: float = float("nan")
