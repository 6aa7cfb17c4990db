"""--average: the trained weights' moving average, which validation may pick over them.

SGD at a high, constant learning rate (a word model's 20) leaves the weights rattling
around a minimum; their average over the last steps sits nearer to it. AWD-LSTM (Merity et
al. 2017, "Regularizing and Optimizing LSTM Language Models") averages the iterates from
the point where validation stops improving (NT-ASGD). Here the average is an exponential
one over about `span` steps (torch.optim.swa_utils.AveragedModel), kept from the start,
and validation decides at each evaluation: when the trained weights do not beat the best
val loss, the average is evaluated too, and the better of the two is the run's model
there (saved as model.safetensors if it is the best so far). While a run still improves
fast the average lags behind it and is not even tried; once it stalls, the average is.

The average takes a sample of the weights every `span / SAMPLES` steps, so that keeping
it costs next to nothing beside a step.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

SAMPLES = 16  # samples of the weights in one span: every span / 16 steps


class Average:
    """An exponential moving average of `model`'s weights over about `span` steps."""

    def __init__(self, model: nn.Module, span: int):
        self.every = max(1, round(span / SAMPLES))
        decay = max(0.0, 1.0 - self.every / span)  # each sample's weight: every / span
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                      use_buffers=True)  # fmt: skip
        self.averaged.eval()  # never trained: evaluated and sampled

    @property
    def model(self) -> nn.Module:
        """The averaged weights in a model like the trained one (what is evaluated, saved)."""
        return self.averaged.module

    def update(self, model: nn.Module, step: int) -> None:
        """After optimizer step `step` (1, 2, ...): take a sample of `model` when due."""
        if step % self.every == 0:
            self.averaged.update_parameters(model)

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)
