"""TrainConfig, the learning-rate schedule, evaluate() and fit().

fit() is a generator: it trains with teacher forcing and stateful truncated BPTT and
yields `Report` records (a step, an evaluation, the end) that the CLI renders. It knows
the model only through `forward(ids, state) -> (logits, state)`; it never prints.

Stateful TBPTT: the training text is cut into B contiguous streams (data.Streams) read
in windows of T tokens. The hidden state at the end of one window is the start of the
next, detached so gradients stop at the window boundary but the model still sees
context longer than T.

On several ranks (torchrun; see distributed.World) the text is cut into N*B streams and
rank r reads rows [r*B, (r+1)*B): the ranks together read what one process with batch
N*B reads, and DDP's averaged gradient is that process's gradient. Evaluation is shared
out the same way. Rank 0 alone writes files; all ranks yield the same Reports.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charrnn import checkpoint
from charrnn.data import Streams, shard_rows
from charrnn.distributed import SINGLE, World
from charrnn.model import RNNLanguageModel, State, detach
from charrnn.sample import SampleConfig, sample_text

EVAL_STREAMS = 16  # validation is read as 16 streams whatever the training batch size

# Mixed precision is autocast: matmuls in fp16 or bf16, weights and optimizer state in
# fp32. Under autocast PyTorch runs cuDNN's RNNs in fp16 even when bf16 is asked for
# (aten/src/ATen/cudnn/AutocastRNN.cpp), so bf16 reaches only the decoder and both
# need a GradScaler against fp16 gradients underflowing.
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# What --precision auto picks: fp32 everywhere until `charrnn bench train --precision
# fp16` on a GPU measures mixed precision faster with the same loss curve (not yet done).
AUTO_PRECISION = {"cpu": "fp32", "cuda": "fp32"}


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> the device's choice; fp16 and bf16 need CUDA (a CPU trains in fp32)."""
    device = torch.device(device)
    if name == "auto":
        return AUTO_PRECISION["cuda" if device.type == "cuda" else "cpu"]
    if name not in PRECISIONS:
        raise ValueError(f"--precision must be auto, {', '.join(PRECISIONS)}, not {name!r}")
    if name != "fp32" and device.type != "cuda":
        raise ValueError(f"--precision {name} needs a CUDA device; on {device} training is fp32")
    return name


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = 128  # T: tokens per window; gradients flow back at most this far
    batch_size: int = 32  # B: parallel streams of text
    lr: float = 3e-3  # peak learning rate of AdamW, after warmup
    min_lr_frac: float = 0.1  # the cosine schedule ends at lr * min_lr_frac
    warmup_steps: int = 50  # linear warmup from 0 to lr
    weight_decay: float = 0.01  # AdamW decoupled weight decay on matrices
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = no clipping)
    steps: int | None = None  # stop after this many optimizer steps, or
    epochs: float | None = None  # after this many passes over the training text, or
    time_budget: float | None = None  # after this many seconds of training (evals not counted)
    eval_every: int = 500  # evaluate (and save) every this many steps, and at the end
    val_frac: float = 0.1  # the last part of the text held out for validation
    seed: int = 1337  # model initialisation, dropout and everything random
    deterministic: bool = False  # PyTorch's deterministic algorithms (slower on CUDA)
    precision: str = "fp32"  # fp32 | fp16 | bf16: fp16 and bf16 are autocast, on CUDA only

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")
        for name in ("seq_len", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("steps", "epochs", "time_budget"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if sum(v is not None for v in (self.steps, self.epochs, self.time_budget)) != 1:
            raise ValueError("give exactly one of steps, epochs, time_budget")
        if not 0.0 < self.val_frac < 1.0:
            raise ValueError(f"val_frac must be between 0 and 1, not {self.val_frac}")
        if self.lr <= 0 or not 0 <= self.min_lr_frac <= 1:
            raise ValueError(
                f"need lr > 0 and 0 <= min_lr_frac <= 1, not {self.lr}, {self.min_lr_frac}"
            )
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("warmup_steps, weight_decay and grad_clip cannot be negative")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine decay to lr * min_lr_frac.

    `progress` in [0, 1] is the fraction of the run done: of the steps, or of the time
    budget, so a run with a time budget ends its schedule as the time runs out.
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return config.lr * warm * (config.min_lr_frac + (1.0 - config.min_lr_frac) * cosine)


@dataclass(frozen=True)
class Metrics:
    """Loss of a model on a text, in the units people compare."""

    loss: float  # nats per token
    bpc: float  # bits per character of the text the tokens decode to
    perplexity: float  # per token
    tokens: int
    chars: int

    @classmethod
    def of(cls, nats: float, tokens: int, chars: int) -> Metrics:
        loss = nats / tokens
        return cls(loss, nats / math.log(2) / chars, math.exp(min(loss, 700.0)), tokens, chars)


@torch.inference_mode()
def evaluate(
    model: RNNLanguageModel, ids: np.ndarray, seq_len: int, count_chars, device,
    world: World = SINGLE,
) -> Metrics:  # fmt: skip
    """Loss over every target of `ids` (all but the first token), read as up to 16 streams.

    The tokens left over after cutting the streams continue the last stream, from its
    final state, so no target is skipped. On several ranks each reads its share of the
    streams (the last rank the tail) and the sums are added up: every rank gets the same
    figures.
    """
    was_training = model.training
    model.eval()
    streams_b = max(1, min(EVAL_STREAMS, (len(ids) - 1) // seq_len))
    streams = Streams.of(ids, streams_b)
    mine = streams.shard(world.rank, world.size)  # all of them on one rank
    nats = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    for x, y in mine.windows(seq_len) if mine.batch_size else ():
        logits, state = model(x.to(device, torch.long), state)
        nats += F.cross_entropy(
            logits.flatten(0, 1).float(), y.to(device, torch.long).flatten(), reduction="sum"
        )
    tail = streams_b * streams.length  # inputs ids[tail:-1], targets ids[tail+1:]
    if tail < len(ids) - 1 and world.rank == world.size - 1:
        x = torch.from_numpy(np.asarray(ids[tail:-1], dtype=np.int64))[None].to(device)
        y = torch.from_numpy(np.asarray(ids[tail + 1 :], dtype=np.int64)).to(device)
        last = tuple(s[:, -1:].contiguous() for s in state)  # the last stream's final state
        logits, _ = model(x, last)
        nats += F.cross_entropy(logits[0].float(), y, reduction="sum")
    model.train(was_training)
    return Metrics.of(world.sum_(nats).item(), len(ids) - 1, count_chars(ids[1:]))


@dataclass
class Progress:
    """Where a run is: saved in last/ so that --resume carries on from exactly here."""

    step: int = 0  # optimizer steps taken (skipped ones included)
    epoch: int = 0  # completed passes over the training streams
    window: int = 0  # next window of the current pass
    tokens: int = 0  # training tokens read
    elapsed: float = 0.0  # seconds spent training, evaluations and saves not counted
    best_val_loss: float = math.inf
    best_step: int = 0
    skipped: int = 0  # steps skipped because the loss or gradient was not finite
    rollbacks: int = 0  # times the run went back to last/ after diverging
    lr_scale: float = 1.0  # halved at each rollback


@dataclass
class Report:
    """What fit() tells its caller: after a step, after an evaluation, and at the end."""

    kind: str  # "step" | "eval" | "rollback" | "diverged" | "stopped" | "done"
    progress: Progress  # a snapshot, not the live record
    total_steps: int | None  # None with a time budget
    lr: float
    loss: float | None = None  # mean training loss (nats/token) of recent steps, when read
    tokens_per_sec: float = 0.0
    train: Metrics | None = None  # training loss since the previous evaluation
    val: Metrics | None = None
    improved: bool = False  # this evaluation is the best so far and was saved
    sample: str | None = None  # a short sample from the model at this evaluation
    message: str | None = None  # what went wrong: a failed save, a divergence


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


STREAMS_ON_DEVICE = 1 << 30  # bytes of training streams that may be kept on a GPU


def streams_on(device: torch.device, streams: Streams) -> Streams:
    """On CUDA, the training streams live on the GPU when they fit in STREAMS_ON_DEVICE
    bytes: a window is then a slice there, with no host-to-device copy in the step."""
    size = streams.x.nbytes + streams.y.nbytes
    if device.type != "cuda" or size > STREAMS_ON_DEVICE:
        return streams
    return Streams(streams.x.to(device), streams.y.to(device))


class Trainer:
    """The moving parts of one run; fit() drives it. Knows the model only by its forward."""

    def __init__(
        self, model, tokenizer, train_ids, val_ids, config: TrainConfig, device, run_dir,
        world: World = SINGLE,
    ):  # fmt: skip
        self.tokenizer, self.config, self.world = tokenizer, config, world
        self.device, self.run_dir = torch.device(device), Path(run_dir)
        self.module = model  # the model itself: what is saved, evaluated and sampled
        self.model = world.wrap(model, self.device)  # what trains: in DDP on several ranks
        # N*B streams cut as one process with batch N*B would; this rank reads its B.
        streams = Streams.of(train_ids, config.batch_size * world.size)
        self.streams = streams_on(self.device, streams.shard(world.rank, world.size))
        self.val_ids = val_ids
        self.windows_per_epoch = self.streams.num_windows(config.seq_len)
        # bits/char of training windows: their nats times the split's tokens-per-char ratio
        self.tokens_per_char = (len(train_ids) - 1) / max(1, tokenizer.count_chars(train_ids[1:]))
        self.optimizer = make_optimizer(model, config, self.device)
        self.amp_dtype = PRECISIONS[config.precision]
        if self.amp_dtype is not None and self.device.type != "cuda":
            raise ValueError(f"precision {config.precision} needs CUDA, not {self.device}")
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is not None else None
        self.progress = Progress()
        self.state: State | None = None
        self.total_steps = total_steps(config, self.windows_per_epoch)
        self.since_eval = Meter(self.device)  # training loss since the last evaluation
        self.guard = Guard(self.device)
        if world.rank > 0:  # its own dropout masks, not a copy of rank 0's
            torch.manual_seed(rank_seed(config.seed, world.rank, 0))

    def progress_frac(self) -> float:
        if self.config.time_budget is not None:
            return self.progress.elapsed / self.config.time_budget
        return self.progress.step / self.total_steps

    def done(self) -> bool:
        return self.progress_frac() >= 1.0

    def lr(self) -> float:
        p = self.progress
        return lr_at(self.config, p.step, self.progress_frac()) * p.lr_scale

    def report(self, kind: str, **fields) -> Report:
        return Report(kind, replace(self.progress), self.total_steps, self.lr(), **fields)

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the next window -> (summed loss, tokens), both on the
        device and both 0 for a skipped step. The host never waits for the device here.

        A step whose loss or gradient is not finite changes nothing but the position:
        the fused AdamW skips its update on the device (found_inf), and the hidden state
        from before it carries on. The guard counts it; fit() reads the counts later.
        """
        p, cfg = self.progress, self.config
        if p.window >= self.windows_per_epoch:  # a new pass starts at the top of the text
            p.epoch, p.window, self.state = p.epoch + 1, 0, None
        x, y = self.streams.window(p.window, cfg.seq_len)  # each [B, T]
        x = x.to(self.device, torch.long, non_blocking=True)
        y = y.to(self.device, torch.long, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()
        with torch.autocast(self.device.type, self.amp_dtype, enabled=self.scaler is not None):
            logits, state = self.model(x, self.state)  # [B, T, V]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # records its own found_inf for update()
        else:
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or math.inf)
        # A NaN anywhere in the loss reaches the gradient, so the norm alone tells.
        skip = ~torch.isfinite(norm)  # [] bool, on the device
        self.optimizer.found_inf, self.optimizer.grad_scale = skip.float(), None
        self.optimizer.step()  # fused: a no-op on the device when found_inf is 1
        if self.scaler is not None:
            self.scaler.update()
        # With a GradScaler an overflowing fp16 gradient is routine (the scale shrinks);
        # only a non-finite loss counts towards divergence.
        bad = ~torch.isfinite(loss.detach()) if self.scaler is not None else skip
        self.guard.add(skip, bad)
        # (under autocast the RNNs return fp16 states: carry them in fp32 like the weights)
        self.state = keep_state(skip, self.state, tuple(s.float() for s in detach(state)))
        p.step, p.window = p.step + 1, p.window + 1
        p.tokens += y.numel() * self.world.size  # every rank reads as many
        # `skip` agrees on every rank: DDP gave them all the same averaged gradient.
        nats = torch.where(skip, 0.0, loss.detach().double() * y.numel())
        return nats, (~skip).double() * y.numel()

    def read_guard(self) -> int:
        """Bring the device's counts to the host: add the skipped steps to the progress
        and return the longest run of bad steps since the last read."""
        skipped, longest = self.guard.take()
        self.progress.skipped += skipped
        return longest

    def trainer_state(self) -> dict:
        """Everything beyond the weights that an exact resume needs; loadable weights_only.

        It describes the whole run, not one rank: the carried state of all N*B streams
        [L, N*B, H] and the training loss summed over ranks, so that a run can resume on
        another number of ranks. The random states are rank 0's. On several ranks every
        rank must call this (it gathers); rank 0 saves the result.
        """
        nats, tokens = self.since_eval.total(self.world)
        state = [self.world.gather_rows(s) for s in self.state] if self.state is not None else []
        return {
            "optimizer": self.optimizer.state_dict(),  # the same on every rank
            "progress": asdict(self.progress),
            "state": state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "python_rng": random.getstate(),
            "since_eval": [nats, tokens],
            "world_size": self.world.size,
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
        }

    def restore(self, saved: dict) -> None:
        """Carry on from `saved`, on this world: each rank takes its rows of the state."""
        self.optimizer.load_state_dict(saved["optimizer"])
        self.progress = Progress(**saved["progress"])
        streams = self.config.batch_size * self.world.size
        if saved["state"] and saved["state"][0].shape[1] != streams:
            raise ValueError(
                f"{checkpoint.LAST}/{checkpoint.TRAINER_STATE} carries the hidden state of "
                f"{saved['state'][0].shape[1]} streams, but this run reads {streams} "
                f"({self.world.size} ranks x --batch-size {self.config.batch_size})"
            )
        rows = shard_rows(streams, self.world.rank, self.world.size)
        self.state = tuple(s[:, rows].to(self.device) for s in saved["state"]) or None
        random.setstate(saved["python_rng"])
        if self.world.rank == 0:
            torch.set_rng_state(saved["torch_rng"].cpu())
            if self.device.type == "cuda" and saved["cuda_rng"]:
                states = saved["cuda_rng"][: torch.cuda.device_count()]
                torch.cuda.set_rng_state_all([s.cpu() for s in states])
            self.since_eval.sums.copy_(torch.tensor(saved["since_eval"], dtype=torch.float64))
        else:  # only rank 0's random state is saved; the loss so far is in rank 0's meter
            torch.manual_seed(rank_seed(self.config.seed, self.world.rank, self.progress.step))
            self.since_eval.sums.zero_()
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.guard.reset()

    def save_last(self) -> str | None:
        """Save last/; a failed save (a full disk) keeps the previous one and says why.

        On several ranks: all call it, rank 0 writes, and none goes on before it is written.
        """
        state, message = self.trainer_state(), None
        if self.world.is_main:
            try:
                checkpoint.save_last(self.run_dir, self.module, state)
            except OSError as e:
                message = (
                    f"could not save {self.run_dir / checkpoint.LAST} ({e}); "
                    "the previous one is kept"
                )
        self.world.barrier()
        return message

    def roll_back(self, run: int) -> Report:
        """After `run` >= MAX_BAD_STEPS non-finite steps in a row: back to last/ with half
        the learning rate, once; if the run diverges again, it stops."""
        p = self.progress
        no_last = self.world.any(checkpoint.last_dir(self.run_dir) is None)  # every rank reads it
        if p.rollbacks >= 1 or no_last:
            where = "again after rolling back" if p.rollbacks else "before any checkpoint"
            return self.report(
                "diverged",
                message=f"training diverged {where} ({run} non-finite steps in a row by "
                f"step {p.step}); the saved checkpoints are intact; try a lower --lr",
            )
        last, saved = checkpoint.load_last(self.run_dir, self.device)
        self.module.load_state_dict(last.state_dict())
        self.restore(saved)
        self.progress.rollbacks, self.progress.lr_scale = p.rollbacks + 1, p.lr_scale / 2
        return self.report(
            "rollback",
            message=f"{run} non-finite steps in a row by step {p.step}: rolled back "
            f"to step {self.progress.step} with the learning rate halved",
        )


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of rank r > 0's random stream (dropout) from `step` on: distinct per rank
    and per resume point, since only rank 0's random state is saved."""
    return ((seed * 1_000_003 + rank) * 1_000_003 + step) % 2**63


def total_steps(config: TrainConfig, windows_per_epoch: int) -> int | None:
    if config.steps is not None:
        return config.steps
    if config.epochs is not None:
        return max(1, math.ceil(config.epochs * windows_per_epoch))
    return None


def make_optimizer(model, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    # Decay matrices only: biases and the forget-gate bias of 1 should stay where set.
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Fused on CPU and CUDA alike: one kernel for all parameters, and the AdamW that can
    # skip a step on the device (Trainer.step sets found_inf). On a CPU it is also faster
    # than the for-each and for-loop ones: `python bench/adamw_cpu.py` times the three.
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99), fused=True)


def fit(
    model: RNNLanguageModel,
    tokenizer,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    config: TrainConfig,
    device,
    run_dir: Path,
    resume: dict | None = None,
    should_stop=lambda: False,
    world: World = SINGLE,
    preview: SampleConfig = SampleConfig(length=200, temperature=0.8),
) -> Iterator[Report]:
    """Train `model`, yielding a Report after every step and every evaluation.

    Every `eval_every` steps and at the end: evaluate on the whole validation split,
    save model.safetensors if it is the best so far, save last/ for resuming, append
    to metrics.jsonl. `should_stop()` is polled between steps (a signal handler sets it):
    when true, last/ is saved and a "stopped" report ends the run.

    On several ranks every rank runs this with its own `world`; they agree after each
    step on the clock and on stopping, so all take the same decisions at the same step.
    """
    trainer = Trainer(model, tokenizer, train_ids, val_ids, config, device, run_dir, world)
    if resume is not None:
        trainer.restore(resume)
    model.train()
    recent = Meter(trainer.device)
    clock, stop_agreed = time.perf_counter(), False
    while not trainer.done():
        if should_stop() if world.size == 1 else stop_agreed:
            trainer.read_guard()  # the skipped count goes into last/
            yield trainer.report("stopped", message=trainer.save_last())
            return
        t0 = time.perf_counter()
        nats, n = trainer.step()
        elapsed = trainer.progress.elapsed + time.perf_counter() - t0
        if world.size > 1:  # one small collective: the slowest clock, and any rank's signal
            elapsed, stop_agreed = world.agree(elapsed, should_stop())
        trainer.progress.elapsed = elapsed
        recent.add(nats, n)
        trainer.since_eval.add(nats, n)
        step = trainer.progress.step
        evaluate_now = step % config.eval_every == 0 or trainer.done()
        if step % LOG_EVERY and not evaluate_now:
            yield trainer.report("step")
            continue
        run = trainer.read_guard()  # the host reads the device: a sync
        if run >= MAX_BAD_STEPS:
            report = trainer.roll_back(run)
            yield report
            if report.kind == "diverged":
                return
            recent.take(world)
            clock = time.perf_counter()
            continue
        report = trainer.report("step")
        nats_sum, tokens = recent.take(world)
        now = time.perf_counter()
        if tokens:
            report.loss, report.tokens_per_sec = nats_sum / tokens, tokens / (now - clock)
        clock = now
        yield report
        if evaluate_now:
            yield evaluate_and_save(trainer, preview)
            recent.take(world)
            clock = time.perf_counter()  # evaluation time is not training throughput
    yield trainer.report("done")


def evaluate_and_save(trainer: Trainer, preview: SampleConfig) -> Report:
    """Evaluate on the whole validation split; save the best model, last/ and metrics;
    sample a short `preview` of what the model writes now."""
    p, model, world = trainer.progress, trainer.module, trainer.world
    nats, tokens = trainer.since_eval.take(world)
    train = Metrics.of(nats, tokens, round(tokens / trainer.tokens_per_char)) if tokens else None
    val = evaluate(
        model,
        trainer.val_ids,
        trainer.config.seq_len,
        trainer.tokenizer.count_chars,
        trainer.device,
        world,
    )
    improved = val.loss < p.best_val_loss  # False for NaN: NaN weights never replace good ones
    if improved:
        p.best_val_loss, p.best_step = val.loss, p.step
    messages = []
    summary = {"step": p.step, "best_val_loss": p.best_val_loss, "best_step": p.best_step}
    try:
        if world.is_main:  # rank 0 alone writes
            if improved:
                checkpoint.save_best(trainer.run_dir, model, summary)
            else:
                checkpoint.update_config(trainer.run_dir, summary)
            checkpoint.append_metrics(trainer.run_dir, metrics_record(trainer, train, val))
    except OSError as e:
        messages.append(f"could not save in {trainer.run_dir} ({e}); the previous files are kept")
    if math.isfinite(val.loss):  # the same on every rank, so all of them gather for last/
        messages.append(trainer.save_last() or "")
    text = None
    if world.is_main:  # only rank 0 shows it
        text = sample_text(
            model, trainer.tokenizer, "", preview,
            # its own generator: training's random stream stays untouched
            torch.Generator(trainer.device).manual_seed(p.step),
        )[0]  # fmt: skip
    model.train()
    message = "; ".join(m for m in messages if m) or None
    return trainer.report(
        "eval", train=train, val=val, improved=improved, sample=text, message=message
    )


def metrics_record(trainer: Trainer, train: Metrics | None, val: Metrics) -> dict:
    """One line of metrics.jsonl."""
    p = trainer.progress
    record = {
        "step": p.step,
        "epoch": p.epoch + p.window / trainer.windows_per_epoch,
        "tokens": p.tokens,
        "elapsed": round(p.elapsed, 3),
        "lr": trainer.lr(),
    }
    for split, m in (("train", train), ("val", val)):
        if m is not None:
            record.update({f"{split}_loss": m.loss, f"{split}_bpc": m.bpc})
            record[f"{split}_perplexity"] = m.perplexity
    return record


def set_deterministic() -> None:
    """The deterministic settings PyTorch offers (see the README for what they promise)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it before use
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


# Defaults that suit each kind of device; flags override any of them. They are what
# bench/quality.py measures: on 2 CPU cores, the most a 3-minute run can learn.
RECIPES = {
    "cpu": {
        "cell": "lstm", "layers": 1, "hidden": 512, "embedding": 64, "dropout": 0.0,
        "batch_size": 16, "seq_len": 128, "lr": 8e-3, "min_lr_frac": 0.02,
        "time_budget": 180.0,
    },
    "cuda": {
        "cell": "lstm", "layers": 2, "hidden": 1024, "embedding": 128, "dropout": 0.2,
        "batch_size": 128, "seq_len": 128, "lr": 2e-3, "time_budget": 120.0,
    },
}  # fmt: skip


def recipe(device: torch.device) -> dict:
    return RECIPES["cuda" if device.type == "cuda" else "cpu"]
