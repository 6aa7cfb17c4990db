"""How many passes over its training split a new run will make, known before it starts:
exact for --steps and --epochs; for --time-budget, from a few steps of the run's own model
timed on its device. The defaults fitted to the text (fitting.py) depend on it: a text
read many times in a run overfits, and needs more regularising than one read once.

The probe trains a throwaway copy of the model on random tokens (the run's batch, window,
optimizer and precision), with the random state put back afterwards, so a run's results
do not depend on it; on several ranks the slowest rank's time counts, as the time budget
does (World.agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn.distributed import SINGLE, World
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.settings import format_duration
from charrnn.timing import time_steps
from charrnn.training.config import PRECISIONS, TrainConfig
from charrnn.training.schedule import EVAL_SHARE
from charrnn.training.trainer import make_optimizer

PROBE_STEPS = 3  # timed one by one after an untimed one; the fastest counts


@dataclass(frozen=True)
class Pace:
    epochs: float  # passes over the training split the run is asked for, or will fit
    steps: float  # the steps that makes
    how: str  # "7.2 epochs", "about 7.2 epochs in 25s at 21,400 tokens/s"
    timed: bool = False  # under a time budget: a faster model makes more steps


def planned(
    config: TrainConfig, model: ModelConfig, windows_per_epoch: int, tokens_per_step: int,
    device: torch.device, world: World = SINGLE,
) -> Pace:  # fmt: skip
    """The passes a run of `config` makes over a split of `windows_per_epoch` windows (each
    a step of `tokens_per_step` over all ranks); under a time budget, the steps the probe's
    pace fits in it, less the share evaluations may take."""
    if config.time_budget is None:
        epochs = config.epochs if config.steps is None else config.steps / windows_per_epoch
        return Pace(epochs, epochs * windows_per_epoch, f"{passes(epochs)} epochs")
    seconds, _ = world.agree(step_seconds(config, model, device), False)
    steps = config.time_budget * (1 - EVAL_SHARE) / seconds
    epochs = steps / windows_per_epoch
    return Pace(epochs, steps, f"about {passes(epochs)} epochs in "
                f"{format_duration(config.time_budget)} at {tokens_per_step / seconds:,.0f} "
                "tokens/s", timed=True)  # fmt: skip


def passes(epochs: float) -> str:
    return f"{epochs:.2g}" if epochs < 10 else f"{epochs:,.0f}"


def step_seconds(config: TrainConfig, model_cfg: ModelConfig, device: torch.device) -> float:
    """Seconds of one training step of a fresh `model_cfg` on `device` (one rank's batch)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = RNNLanguageModel(model_cfg).to(device)
        optimizer = make_optimizer(model, config, device)
        amp = PRECISIONS[config.precision]
        # Zipf's ids (p(id) ~ 1 / (id + 1)): a text's tokens, numbered commonest first, as
        # often as a shortlist (model.py) finds its targets among the rest
        zipf = 1.0 / torch.arange(1, model_cfg.vocab_size + 1, dtype=torch.float)
        n = config.batch_size * (config.seq_len + 1)
        ids = torch.multinomial(zipf, n, replacement=True).view(config.batch_size, -1).to(device)

        def step() -> None:
            with torch.autocast(device.type, amp, enabled=amp is not None):
                nats, _ = model(ids[:, :-1], None, ids[:, 1:])
            loss = nats.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()
        return min(time_steps(step, 0, 1, device)[0] for _ in range(PROBE_STEPS))
