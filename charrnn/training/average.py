"""--average: the trained weights' moving average, which validation may pick over them.

SGD at a high learning rate (a word model's 20, annealed only to 2 over the run) leaves
the weights rattling around a minimum; their average over the last steps sits nearer to
it. AWD-LSTM (Merity et al. 2017, "Regularizing and Optimizing LSTM Language Models")
averages the iterates from the point where validation stops improving (NT-ASGD). Here the
average is an exponential one over about `span` steps, kept from the start, and validation
decides at each evaluation: when the trained weights do not beat the best val loss, the
average is evaluated too, and the better of the two is the run's model there (saved as
model.safetensors if it is the best so far). While a run still improves fast the average
lags behind it and is not even tried; once it stalls, the average is.

The average takes a sample of the weights every `span / SAMPLES` steps, so that keeping
it costs next to nothing beside a step. It is the EMA of torch.optim.swa_utils'
get_ema_multi_avg_fn (one foreach lerp), kept here with its count on the host: AveragedModel
keeps its count in a tensor and copies it to the device at every sample, which on CUDA
would make the host wait for the step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

SAMPLES = 16  # samples of the weights in one span: every span / 16 steps


class Average:
    """An exponential moving average of `model`'s weights over about `span` steps."""

    def __init__(self, model: nn.Module, span: int):
        self.every = max(1, round(span / SAMPLES))
        self.share = min(1.0, self.every / span)  # each new sample's weight in the average
        self.model = copy.deepcopy(model).eval().requires_grad_(False)  # evaluated, sampled
        self.samples = 0

    def update(self, model: nn.Module, step: int) -> None:
        """After optimizer step `step` (1, 2, ...): take a sample of `model` when due (the
        first sample is taken as it is)."""
        if step % self.every:
            return
        mine, theirs = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        with torch.no_grad():
            if self.samples == 0:
                torch._foreach_copy_(mine, theirs)
            else:
                torch._foreach_lerp_(mine, theirs, self.share)
        self.samples += 1

    def state_dict(self) -> dict:
        return {"samples": self.samples, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.samples = state["samples"]
        self.model.load_state_dict(state["weights"])
