"""The process group: who am I, set up, tear down, and the few collectives training needs.

torchrun starts one process per rank and tells each who it is in its environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). A plain `charrnn train` is world size 1:
no process group, and every collective here returns its input untouched, so the
single-process path runs exactly the code it ran before any of this existed.

On several ranks the gradients are averaged by PyTorch's DistributedDataParallel; the rest
is a handful of small collectives that every rank calls in the same order: agreeing on
the clock and on stopping after each step, summing losses, gathering the carried hidden
state for a save. Nothing here knows about models' insides, files or printing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from charrnn.errors import ConfigError
from charrnn.settings import format_duration, option, parse_duration

COLLECTIVE_TIMEOUT = option(
    "collective_timeout", float, 600.0,
    "Under torchrun: how long a rank waits for the others, then fails.",
    parse=parse_duration, show=format_duration, metavar="DURATION",
)  # fmt: skip


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run."""

    rank: int = 0  # 0 .. size-1; rank 0 alone writes files and renders progress
    size: int = 1  # number of ranks (processes), one per GPU on CUDA
    local_rank: int = 0  # rank on this node: the index of this rank's GPU
    control: object = None  # gloo group for the host-side collectives (None: the default group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module that trains: DDP around `model` on several ranks, `model` itself on one.

        DDP broadcasts rank 0's weights on construction and averages the gradients over
        the ranks during backward, so after each step every rank holds the same weights.
        """
        if self.size == 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Add `tensor` up over the ranks, in place; every rank gets the sum."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def agree(self, elapsed: float, stop: bool) -> tuple[float, bool]:
        """(the slowest rank's clock, whether any rank was told to stop): one collective on
        the host, so that a time budget or a signal ends every rank at the same step."""
        if self.size == 1:
            return elapsed, stop
        both = torch.tensor([elapsed, float(stop)], dtype=torch.float64)
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.control)
        return both[0].item(), bool(both[1].item())

    def any(self, flag: bool) -> bool:
        return self.agree(0.0, flag)[1]

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's [L, B, H] -> the global [L, size*B, H], rank r's rows at [r*B, (r+1)*B)."""
        if self.size == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=1)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier(group=self.control)


SINGLE = World()


def from_env() -> World:
    """Who this process is, from what torchrun sets; World size 1 without torchrun."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({e})") from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"RANK {rank} and WORLD_SIZE {size} do not describe a rank")
    return World(rank=rank, size=size, local_rank=local_rank)


def rank_device(world: World, device: torch.device, asked: str = "auto") -> torch.device:
    """On several ranks, CUDA means this rank's own GPU: cuda:LOCAL_RANK (`asked`: what
    --device said; a GPU of its own choosing is refused)."""
    if world.size == 1 or device.type != "cuda":
        return device
    if asked not in ("auto", "cuda"):
        raise ConfigError(
            f"--device {asked}: under torchrun each rank uses the GPU of its LOCAL_RANK; "
            "give --device cuda or auto"
        )
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {world.local_rank} has no GPU: this node has "
            f"{torch.cuda.device_count()}; start at most that many processes per node"
        )
    return torch.device("cuda", world.local_rank)


@contextmanager
def group(world: World, device: torch.device, timeout: float) -> Iterator[World]:
    """Join the process group for the length of the block; World size 1 joins nothing.

    nccl on CUDA, gloo on CPU; host-side agreements go over a gloo group either way, so
    they never wait on the GPU. A collective that waits longer than `timeout` seconds
    (a rank died, a node is unreachable) raises instead of hanging; on NCCL, PyTorch's
    watchdog then ends the process (TORCH_NCCL_ASYNC_ERROR_HANDLING).
    """
    if world.size == 1:
        yield world
        return
    limit = timedelta(seconds=timeout)
    if device.type == "cuda":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")  # tear down on error
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=limit, device_id=device)
        control = dist.new_group(backend="gloo", timeout=limit)
    else:
        dist.init_process_group("gloo", timeout=limit)
        control = None
    try:
        yield replace(world, control=control)
    finally:
        dist.destroy_process_group()
