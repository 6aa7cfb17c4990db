"""What the training step sums on the device, so that it never waits for the host: the
loss (Meter), the gradient's norm before clipping (GradNorms), and the divergence guard's
count of bad steps (Guard). The host reads them every LOG_EVERY steps and at each
evaluation; a bad step keeps the state from before it (keep_state). Nothing here knows
the model or the optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn.distributed import SINGLE, World
from charrnn.model import State

LOG_EVERY = 10  # read the running loss and the guard's counts back every this many steps
MAX_BAD_STEPS = 5  # non-finite steps in a row before rolling back to last/


class Meter:
    """Sums token losses on the device so the training step never waits for the host."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # [nats, tokens]

    def add(self, nats: torch.Tensor, tokens: torch.Tensor) -> None:
        self.sums += torch.stack((nats, tokens))

    def peek(self) -> list[float]:
        """[summed nats, tokens] since the last take; reading them is a host sync."""
        return self.sums.tolist()

    def total(self, world: World = SINGLE) -> list[float]:
        """[summed nats, tokens] over all ranks (every rank must call it): a host sync."""
        return self.peek() if world.size == 1 else world.sum_(self.sums.clone()).tolist()

    def take(self, world: World = SINGLE) -> tuple[float, int]:
        """(summed nats, tokens) since the last take, over all ranks; then start again."""
        nats, tokens = self.total(world)
        self.sums.zero_()
        return nats, round(tokens)


@dataclass(frozen=True)
class GradStats:
    """The gradient's global norm before clipping, over the steps since an evaluation."""

    mean: float
    max: float
    clipped: float  # the fraction of steps whose norm was over --grad-clip
    steps: int  # steps with a finite norm


class GradNorms:
    """Sums the gradient norm on the device, so the step never waits for the host:
    [sum of norms, largest, steps clipped, steps counted]. Non-finite norms (skipped
    steps) are not counted."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)

    def add(self, norm: torch.Tensor, clip: float) -> None:
        finite = torch.isfinite(norm)
        value = torch.where(finite, norm.double(), 0.0)
        clipped = finite & (norm > clip) if clip > 0 else torch.zeros_like(finite)
        s = self.sums
        self.sums.copy_(torch.stack((s[0] + value, torch.maximum(s[1], value), s[2] + clipped,
                                     s[3] + finite)))  # fmt: skip

    def take(self) -> GradStats | None:
        """The stats since the last take (None if no step counted), then start again."""
        total, largest, clipped, steps = self.sums.tolist()
        self.sums.zero_()
        return GradStats(total / steps, largest, clipped / steps, int(steps)) if steps else None


class Guard:
    """The divergence guard's counts, kept on the device and read every few steps.

    A step is bad when its loss or gradient norm is not finite; bad steps are skipped
    on the device (see Trainer.step). The host reads the counts every LOG_EVERY steps
    and at each evaluation, so a run of MAX_BAD_STEPS bad steps is acted on up to
    LOG_EVERY - 1 steps late: the weights are safe meanwhile, since bad steps change
    nothing, and the longest run since the last read is kept so no run is missed.
    """

    def __init__(self, device: torch.device):
        self.counts = torch.zeros(3, dtype=torch.int64, device=device)  # [skipped, run, longest]

    def add(self, skipped: torch.Tensor, bad: torch.Tensor) -> None:
        """skipped: the update was skipped; bad: counts towards a run. Both bool []."""
        run = (self.counts[1] + 1) * bad  # a good step ends the run
        longest = torch.maximum(self.counts[2], run)
        self.counts.copy_(torch.stack((self.counts[0] + skipped, run, longest)))

    def take(self) -> tuple[int, int]:
        """(steps skipped, the longest run of bad steps) since the last take: a host sync."""
        skipped, run, longest = self.counts.tolist()
        self.counts.copy_(torch.tensor([0, run, run]))  # the current run goes on
        return skipped, longest

    def reset(self) -> None:
        self.counts.zero_()


def keep_state(bad: torch.Tensor, old: State | None, new: State) -> State:
    """The state to carry on: `new`, or after a bad step the one from before it."""
    if old is None:  # the first window of a pass starts from zeros
        old = tuple(torch.zeros_like(s) for s in new)
    return tuple(torch.where(bad, o, n) for o, n in zip(old, new))
