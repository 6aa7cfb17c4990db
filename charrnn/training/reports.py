"""What a training run tells its caller, and where it is: Progress (saved in last/ for an
exact resume), Saved (what the run directory holds) and Report (one per step, evaluation
and ending), which the CLI renders and an API caller reads."""

from __future__ import annotations

import math
from dataclasses import dataclass

from charrnn.metrics import Metrics
from charrnn.training.meters import GradStats


@dataclass
class Progress:
    """Where a run is: saved in last/ so that --resume carries on from exactly here."""

    step: int = 0  # optimizer steps taken (skipped ones included)
    epoch: int = 0  # completed passes over the training streams
    window: int = 0  # next window of the current pass
    tokens: int = 0  # training tokens read
    elapsed: float = 0.0  # seconds spent training, evaluations and saves not counted
    best_val_loss: float = math.inf  # of model.safetensors, once saved (inf: none yet)
    best_step: int = 0
    skipped: int = 0  # steps skipped because the loss or gradient was not finite
    rollbacks: int = 0  # times the run went back to last/ after diverging
    lr_scale: float = 1.0  # times --lr-decay at each evaluation without a better val loss,
    # and halved at each rollback
    stale: int = 0  # evaluations since the last better val loss (--patience counts them)
    # --ngram: the network's own best val loss. While it still improves, validation has not
    # stalled, even where the mixture, which the n-gram may carry early on, does not move.
    best_net_loss: float = math.inf
    ended: str | None = None  # why the run ended before its length: "patience"


@dataclass
class Saved:
    """What the run directory holds besides the best model (Progress.best_step: it moves only
    once model.safetensors is written), as this run knows it: the step of last/, and why the
    latest save failed, if it did."""

    last_step: int | None = None
    failed: str | None = None


@dataclass
class Report:
    """What fit() tells its caller: after a step, after an evaluation, and at the end."""

    kind: str  # "step" | "eval" | "rollback" | "diverged" | "stopped" | "done" | "failed"
    progress: Progress  # a snapshot, not the live record
    total_steps: int | None  # None with a time budget
    lr: float
    loss: float | None = None  # mean training loss (nats/token) of recent steps, when read
    tokens_per_sec: float = 0.0
    train: Metrics | None = None  # training loss since the previous evaluation
    val: Metrics | None = None
    grads: GradStats | None = None  # the gradient norm since the previous evaluation
    improved: bool = False  # this evaluation is the best so far and was saved
    averaged: bool = False  # the val loss is the averaged weights' (--average)
    sample: str | None = None  # a short sample from the model at this evaluation
    message: str | None = None  # what went wrong: a failed save, a divergence
    saved: Saved | None = None  # what the run directory holds (rank 0's view)
    signal: int | None = None  # "stopped": the signal that stopped it


def ending(p: Progress, patience: int) -> str:
    """Why a run that is done ended, in words."""
    if p.ended == "patience":
        return (f"ended early at step {p.step}: no better val loss in {patience} evaluations "
                f"(--patience {patience})")  # fmt: skip
    return f"ran its length, {p.step} steps"


def has_best(p: Progress) -> bool:
    """Whether the run directory holds a best model (model.safetensors) yet."""
    return math.isfinite(p.best_val_loss)
