"""The learning-rate schedule: linear warmup, then cosine decay to lr * min_lr_frac over
the run's length (its steps, or its time budget). Pure functions of the config and where
the run is; the Trainer applies them."""

from __future__ import annotations

import math

from charrnn.training.config import TrainConfig
from charrnn.training.reports import Progress


def lr_at(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine decay to lr * min_lr_frac.

    `progress` in [0, 1] is the fraction of the run done: of the steps, or of the time
    budget, so a run with a time budget ends its schedule as the time runs out.
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return config.lr * warm * (config.min_lr_frac + (1.0 - config.min_lr_frac) * cosine)


EVALS_PER_EPOCH = 4  # evaluations in one pass over the text, when passes are short
MOST_STEPS_APART = 500  # evaluations at least this often, unless EVAL_SHARE needs longer
EVAL_SHARE = 0.1  # the most of the time evaluations may take, beside training
# A token evaluated (forward only, 16 streams) costs about this much of a token trained
# (forward, backward and the optimizer step): measured 1 : 4.5 on a CPU for a 1x512 LSTM.
EVAL_COST = 0.25


def eval_interval(windows_per_epoch: int, val_tokens: int, tokens_per_step: int) -> int:
    """--eval-every's default, fitted to the text: EVALS_PER_EPOCH times a pass (a small
    text overfits within one), at most MOST_STEPS_APART steps apart, and never so often
    that evaluating the whole validation split takes more than EVAL_SHARE of the time."""
    per_epoch = math.ceil(windows_per_epoch / EVALS_PER_EPOCH)
    share = math.ceil(EVAL_COST * (1 / EVAL_SHARE - 1) * val_tokens / tokens_per_step)
    return max(1, share, min(per_epoch, MOST_STEPS_APART))


def after_evaluation(config: TrainConfig, p: Progress, improved: bool) -> None:
    """Validation decides: every --lr-patience evaluations in a row without a better val
    loss (`improved`; with an n-gram, of the mixture or of the network alone) multiply the
    learning rate by --lr-decay (as ReduceLROnPlateau and pytorch/examples' word model do),
    and --patience of them end the run (as EarlyStopping does): the length asked for is a
    cap. Updates `p` (saved in last/, so a resumed run decides as this one would)."""
    p.stale = 0 if improved else p.stale + 1
    if p.stale and p.stale % config.lr_patience == 0:
        p.lr_scale *= config.lr_decay
    if config.patience and p.stale >= config.patience:
        p.ended = "patience"


def total_steps(config: TrainConfig, windows_per_epoch: int) -> int | None:
    if config.steps is not None:
        return config.steps
    if config.epochs is not None:
        return max(1, math.ceil(config.epochs * windows_per_epoch))
    return None
