"""optax optimiser and the learning-rate schedule.

The learning rate is a function of how much of the run is done, not of the step alone: with a
wall-clock budget (``training.time_budget_s``) the cosine follows the fraction of the budget
spent or of the step budget, whichever is further along, so a 150 s run decays to its floor in
150 s however many steps that is. The host computes the rate before every step
(:func:`learning_rate_at`) and the jitted step takes it as an argument, so it never recompiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnpes.errors import ConfigError
from nnpes.train.config import OptimizerConfig


def run_progress(step: int, total_steps: int, elapsed_s: float, budget_s: float | None) -> float:
    """Fraction of the run done, in [0, 1]: the larger of step / total_steps and, when a
    wall-clock budget (s) is set, elapsed_s / budget_s."""
    p = step / max(total_steps, 1)
    if budget_s:
        p = max(p, elapsed_s / budget_s)
    return min(max(p, 0.0), 1.0)


def learning_rate_at(cfg: OptimizerConfig, step: int, total_steps: int, progress: float | None = None) -> float:
    """The learning rate of ``step``: linear warm-up from lr/100 to lr over ``warmup_steps``, then
    constant ("constant", "plateau": the plateau factor is applied by the optimiser), a cosine
    from lr to ``min_learning_rate_factor``·lr ("cosine"), or warm-up–stable–decay ("wsd": lr
    until the last ``decay_fraction`` of the run, then a cosine down to the same floor).

    Args:
        cfg: the optimiser section.
        step: optimiser steps taken so far.
        total_steps: the step budget.
        progress: fraction of the run done (:func:`run_progress`); default step / total_steps.
            After the warm-up the cosine follows max(post-warm-up step fraction, progress).
    """
    lr = cfg.learning_rate
    warm = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if step < warm:
        return lr / 100 + (lr - lr / 100) * step / warm
    if cfg.schedule not in ("cosine", "wsd"):
        return lr
    q = (step - warm) / max(total_steps - warm, 1)
    if progress is not None:
        q = max(q, progress)
    q = min(max(q, 0.0), 1.0)
    if cfg.schedule == "wsd":  # stable, then the cosine compressed into the last decay_fraction
        q = max(0.0, (q - (1.0 - cfg.decay_fraction)) / cfg.decay_fraction)
    alpha = cfg.min_learning_rate_factor
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * q)) + alpha)


def learning_rate_floor(cfg: OptimizerConfig) -> float:
    """The rate the schedule ends at (before any plateau reduction)."""
    return cfg.learning_rate * (cfg.min_learning_rate_factor if cfg.schedule in ("cosine", "wsd") else 1.0)


def make_optimizer(cfg: OptimizerConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Clip → Adam/AdamW/AMSGrad (→ reduce-on-plateau, fed the training loss). The result is the
    direction only: the train step multiplies it by −learning_rate (:func:`learning_rate_at`)."""
    parts = []
    if cfg.grad_clip:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(optax.scale_by_amsgrad() if cfg.name == "amsgrad" else optax.scale_by_adam())
    if cfg.name == "adamw" or cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    if cfg.schedule == "plateau":
        parts.append(
            optax.contrib.reduce_on_plateau(
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience_epochs,
                accumulation_size=steps_per_epoch,
                min_scale=cfg.min_learning_rate_factor,
            )
        )
    return optax.chain(*parts)


def parameter_names(params) -> list[str]:
    """'/'-joined path of every parameter leaf below the ``params`` collection, in leaf order,
    e.g. ``layer_0/self_connection/w[0,0] 16x0e,16x0e``."""
    names = []
    for path, _ in jax.tree_util.tree_leaves_with_path(params):
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        names.append("/".join(keys[1:] if keys and keys[0] == "params" else keys))
    return names


def trainable_mask(params, freeze: Sequence[str], added: Any = None) -> Any:
    """Which parameter entries the optimiser may change (``finetune.freeze``).

    Args:
        params: flax variables.
        freeze: flax module names or '/'-joined paths below ``params`` (see :func:`parameter_names`);
            a name freezes every parameter under it.
        added: None, or a pytree like ``params`` with a bool array (or False) per leaf marking the
            entries that are new (rows of elements the base model did not know); those train
            even inside a frozen module, since nothing has fitted them yet.
    Returns:
        None when nothing is frozen, else a pytree like ``params`` of True (trains), False
        (frozen) or a bool array (the entries that train).
    Raises:
        ConfigError: a name matching no parameter (listing the top-level names), or a freeze of everything.
    """
    if not freeze:
        return None
    names = parameter_names(params)
    wanted = [n.strip("/") for n in freeze]
    for name, given in zip(wanted, freeze):
        if not any(p == name or p.startswith(name + "/") for p in names):
            top = sorted({p.split("/")[0] for p in names})
            raise ConfigError(
                f"finetune.freeze: {given!r} names no parameter of the model; top-level names: {', '.join(top)}"
            )
    frozen = [any(p == n or p.startswith(n + "/") for n in wanted) for p in names]
    news = jax.tree.leaves(added) if added is not None else [False] * len(names)
    leaves = [True if not f else (np.asarray(a, bool) if np.any(a) else False) for f, a in zip(frozen, news)]
    if all(leaf is False for leaf in leaves):
        raise ConfigError(f"finetune.freeze: {', '.join(freeze)} freezes every parameter; nothing would train")
    return jax.tree.unflatten(jax.tree.structure(params), leaves)


def keep_trainable(tree, trainable, frozen_value):
    """``tree`` where ``trainable`` allows, ``frozen_value`` (a pytree like it) elsewhere."""
    if trainable is None:
        return tree
    pick = lambda x, f, t: x if t is True else f if t is False else jnp.where(t, x, f)  # noqa: E731
    return jax.tree.map(pick, tree, frozen_value, trainable)


def masked(optimizer: optax.GradientTransformation, trainable) -> optax.GradientTransformation:
    """``optimizer`` whose gradients and directions are zero on frozen entries (``trainable``,
    :func:`trainable_mask`): Adam never sees their gradients, gradient clipping measures only the
    trained ones, and a zero direction leaves a frozen parameter bit-identical."""
    if trainable is None:
        return optimizer

    def zero_frozen(updates, state, params=None):
        return keep_trainable(updates, trainable, jax.tree.map(jnp.zeros_like, updates)), state

    mask = optax.GradientTransformation(lambda params: optax.EmptyState(), zero_frozen)
    return optax.chain(mask, optimizer, mask)
