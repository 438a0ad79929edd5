"""optax optimiser and learning-rate schedule from the config."""

from __future__ import annotations

import optax

from nnpes.train.config import OptimizerConfig


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up, then constant (also under "plateau") or cosine decay to
    min_learning_rate_factor·lr at ``total_steps``."""
    lr = cfg.learning_rate
    warm = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(total_steps - warm, 1), alpha=cfg.min_learning_rate_factor)
    else:
        main = optax.constant_schedule(lr)
    if warm == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(lr / 100, lr, warm), main], [warm])


def make_optimizer(cfg: OptimizerConfig, total_steps: int, steps_per_epoch: int) -> optax.GradientTransformation:
    """Clip → Adam/AdamW/AMSGrad → schedule (→ reduce-on-plateau, fed the training loss)."""
    parts = []
    if cfg.grad_clip:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(optax.scale_by_amsgrad() if cfg.name == "amsgrad" else optax.scale_by_adam())
    if cfg.name == "adamw" or cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts.append(optax.scale_by_learning_rate(learning_rate_schedule(cfg, total_steps)))
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
