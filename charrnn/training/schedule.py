"""The learning-rate schedule: linear warmup, then cosine decay to lr * min_lr_frac over
the run's length (its steps, or its time budget). Pure functions of the config and where
the run is; the Trainer applies them."""

from __future__ import annotations

import math

from charrnn.training.config import TrainConfig


def lr_at(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine decay to lr * min_lr_frac.

    `progress` in [0, 1] is the fraction of the run done: of the steps, or of the time
    budget, so a run with a time budget ends its schedule as the time runs out.
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return config.lr * warm * (config.min_lr_frac + (1.0 - config.min_lr_frac) * cosine)


def total_steps(config: TrainConfig, windows_per_epoch: int) -> int | None:
    if config.steps is not None:
        return config.steps
    if config.epochs is not None:
        return max(1, math.ceil(config.epochs * windows_per_epoch))
    return None
