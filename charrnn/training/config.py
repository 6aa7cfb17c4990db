"""TrainConfig: every training setting, declared once (see settings.py), and the precision
a device trains in. Nothing here trains."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn import settings
from charrnn.errors import ConfigError
from charrnn.settings import (
    SEED,
    at_least,
    format_duration,
    not_negative,
    off_or,
    parse_duration,
    positive,
    setting,
    shown_off,
    within,
)

DURATION = "duration"  # the group of --steps, --epochs, --time-budget: one of them
OPTIMIZERS = ("adamw", "sgd")
# Mixed precision is autocast: matmuls in fp16 or bf16, weights and optimizer state in
# fp32. Under autocast PyTorch runs cuDNN's RNNs in fp16 even when bf16 is asked for
# (aten/src/ATen/cudnn/AutocastRNN.cpp), so bf16 reaches only the decoder and both
# need a GradScaler against fp16 gradients underflowing.
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> the device's choice; fp16 and bf16 need CUDA (a CPU trains in fp32)."""
    device = torch.device(device)
    if name == "auto":
        return settings.default_of(TrainConfig, "precision", [device.type])
    if name != "fp32" and device.type != "cuda":
        raise ConfigError(f"--precision {name} needs a CUDA device; on {device} training is fp32")
    return name


# The defaults are what bench/quality.py measures: on 2 CPU cores, the most a 3-minute run
# learns of tiny-shakespeare; on one GPU, of 2 minutes.
@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = setting(
        128, "Tokens per BPTT window: gradients flow back at most this far.",
        by={"word": 35}, check=at_least(1), announce=True,
    )  # fmt: skip
    batch_size: int = setting(
        16, "Parallel streams of text (per rank under torchrun).", by={"cuda": 128},
        check=at_least(1),
    )  # fmt: skip
    optimizer: str = setting(
        "adamw", "AdamW, or plain SGD (as pytorch/examples' word model trains).",
        by={"word": "sgd"}, choices=OPTIMIZERS,
    )  # fmt: skip
    lr: float = setting(
        8e-3, "Peak learning rate.", by={"cuda": 2e-3, "sgd": 20.0, "cuda sgd": 20.0},
        check=positive,
    )  # fmt: skip
    # SGD (a word model's) anneals too: to lr/10 over a run of 25 s, the zoo's word rows
    # ended better on 4 of 5 (bench/RESULTS.md, "Word split"); the plateau decay still acts.
    min_lr_frac: float = setting(
        0.02, "The cosine schedule ends at lr times this.", by={"cuda": 0.1, "sgd": 0.1},
        check=within(0, 1),
    )  # fmt: skip
    warmup_steps: int = setting(
        50, "Steps of linear warmup from 0.", by={"sgd": 0}, check=not_negative
    )
    weight_decay: float = setting(
        0.01, "Weight decay (matrices only; AdamW's is decoupled).", by={"sgd": 0.0},
        check=not_negative,
    )  # fmt: skip
    grad_clip: float = setting(
        1.0, "Clip the gradient norm to this (0: off).", by={"sgd": 0.25}, check=not_negative
    )
    steps: int | None = setting(
        None, "Train for this many steps.", check=at_least(1), group=DURATION, on_resume="change"
    )
    epochs: float | None = setting(
        None, "Train for this many passes over the text.", check=positive, group=DURATION,
        on_resume="change",
    )  # fmt: skip
    time_budget: float | None = setting(
        None, "Train for this long (evaluations not counted).", by={"cpu": 180.0, "cuda": 120.0},
        check=positive, group=DURATION, on_resume="change", parse=parse_duration,
        show=format_duration, metavar="DURATION",
    )  # fmt: skip
    eval_every: int | None = setting(
        None, "Evaluate and save every N steps.", check=at_least(1),
        fitted="fitted to the text",
    )  # fmt: skip
    patience: int = setting(
        4, "Evaluations without a better val loss before the run ends (off: never).",
        check=not_negative, parse=off_or(int, 0), show=shown_off(0),
        on_resume="change", metavar="N|off",
    )  # fmt: skip
    lr_decay: float = setting(
        0.5, "Multiply the lr by this when val loss stalls (see --lr-patience).",
        by={"sgd": 0.25}, check=within(0, 1, low_open=True),
        parse=off_or(float, 1.0), show=shown_off(1.0), on_resume="change", metavar="X|off",
    )  # fmt: skip
    lr_patience: int = setting(
        1, "Evaluations without a better val loss before each --lr-decay.", by={"sgd": 2},
        check=at_least(1),
        on_resume="change",
    )  # fmt: skip
    average: int | None = setting(
        None, "When val loss does not improve, also try the weights averaged over about N "
        "steps; the better is kept (off: never).",
        check=not_negative, parse=off_or(int, 0), show=shown_off(0), metavar="N|off",
        fitted="fitted to the text",
    )  # fmt: skip
    val_frac: float = setting(
        0.1, "The last part of the text, held out.", check=within(0, 1, True, True)
    )
    seed: int = SEED.field("train")
    deterministic: bool = setting(False, "PyTorch's deterministic algorithms (slower on CUDA).")
    # What --precision auto picks: fp32 everywhere until `charrnn bench train --precision
    # fp16` on a GPU measures mixed precision faster with the same loss curve (not yet done).
    precision: str = setting(
        "fp32", "Mixed precision (autocast, CUDA only); auto: the device's default.",
        by={"cpu": "fp32", "cuda": "fp32"}, choices=("auto", *PRECISIONS), on_resume="change",
    )  # fmt: skip

    def __post_init__(self):
        settings.validate(self)
        if sum(v is not None for v in (self.steps, self.epochs, self.time_budget)) != 1:
            raise ConfigError("give one of --steps, --epochs, --time-budget")
        if self.precision == "auto":
            raise ConfigError("--precision auto is resolved for a device first")

    def to_dict(self) -> dict:
        return settings.to_json(self)
