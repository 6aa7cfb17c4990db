"""The moving parts of one training run: the step, the divergence guard's rollback, and what
an exact resume needs (trainer_state, restore, save_last). loop.fit() drives a Trainer;
nothing here prints.

Stateful TBPTT: the training text is cut into B contiguous streams (data.Streams) read
in windows of T tokens. The hidden state at the end of one window is the start of the
next, detached so gradients stop at the window boundary but the model still sees
context longer than T.

On several ranks (torchrun; see distributed.World) the text is cut into N*B streams and
rank r reads rows [r*B, (r+1)*B): the ranks together read what one process with batch
N*B reads, and DDP's averaged gradient is that process's gradient.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from charrnn import checkpoint
from charrnn.checkpoint import CheckpointError
from charrnn.data import Streams, shard_rows
from charrnn.distributed import SINGLE, World
from charrnn.metrics import Metrics, text_counts
from charrnn.model import RNNLanguageModel, State, detach
from charrnn.sample import SampleConfig
from charrnn.training.average import Average
from charrnn.training.config import PRECISIONS, TrainConfig
from charrnn.training.meters import GradNorms, Guard, Meter, keep_state
from charrnn.training.reports import Progress, Report, Saved
from charrnn.training.schedule import eval_interval, lr_at, total_steps

if TYPE_CHECKING:
    import numpy as np

    from charrnn.tokenizers import Tokenizer


@dataclass
class Job:
    """Everything a training session needs: run.create() and run.resume() make one."""

    model: RNNLanguageModel
    tokenizer: Tokenizer
    train_ids: np.ndarray  # [N] token ids, <eos> first
    val_ids: np.ndarray
    config: TrainConfig
    device: torch.device
    run_dir: Path
    world: World = SINGLE
    resume: dict | None = None  # last/'s trainer state, to carry on from exactly there
    preview: SampleConfig = field(default_factory=lambda: SampleConfig(200, temperature=0.8))
    notes: list[str] = field(default_factory=list)  # what set-up has to say, for the caller


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

    def __init__(self, job: Job):
        model, train_ids, config, world = job.model, job.train_ids, job.config, job.world
        self.tokenizer, self.config, self.world = job.tokenizer, config, world
        self.device, self.run_dir = torch.device(job.device), Path(job.run_dir)
        self.module = model  # the model itself: what is saved, evaluated and sampled
        self.model = world.wrap(model, self.device)  # what trains: in DDP on several ranks
        # N*B streams cut as one process with batch N*B would; this rank reads its B.
        streams = Streams.of(train_ids, config.batch_size * world.size)
        self.streams = streams_on(self.device, streams.shard(world.rank, world.size))
        self.val_ids = job.val_ids
        self.windows_per_epoch = self.streams.num_windows(config.seq_len)
        self.eval_every = config.eval_every or eval_interval(
            self.windows_per_epoch, len(job.val_ids), config.batch_size * config.seq_len
        )
        # bits/char of training windows: their nats times the split's tokens-per-char ratio
        # (tokens per character, per word) of the training split, for the metrics of the
        # training windows; the validation split's counts, once for every evaluation
        counts = text_counts(self.tokenizer, train_ids)
        self.tokens_per = tuple((len(train_ids) - 1) / max(1, n) for n in counts)
        self.val_counts = text_counts(self.tokenizer, job.val_ids)
        self.optimizer = make_optimizer(model, config, self.device)
        self.amp_dtype = PRECISIONS[config.precision]
        assert self.amp_dtype is None or self.device.type == "cuda", "resolve_precision checks"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is not None else None
        self.progress = Progress()
        self.saved = Saved()
        self.state: State | None = None
        self.total_steps = total_steps(config, self.windows_per_epoch)
        self.since_eval = Meter(self.device)  # training loss since the last evaluation
        self.guard = Guard(self.device)
        self.grads = GradNorms(self.device)  # the gradient's norm since the last evaluation
        # the weights' moving average, for validation to pick (None: off, or not fitted)
        self.average = Average(model, config.average) if config.average else None
        if world.rank > 0:  # its own dropout masks, not a copy of rank 0's
            torch.manual_seed(rank_seed(config.seed, world.rank, 0))

    def progress_frac(self) -> float:
        if self.config.time_budget is not None:
            return self.progress.elapsed / self.config.time_budget
        return self.progress.step / self.total_steps

    def done(self) -> bool:
        return self.progress.ended is not None or self.progress_frac() >= 1.0

    def lr(self) -> float:
        p = self.progress
        return lr_at(self.config, p.step, self.progress_frac()) * p.lr_scale

    def report(self, kind: str, **fields) -> Report:
        return Report(kind, replace(self.progress), self.total_steps, self.lr(),
                      saved=replace(self.saved), **fields)  # fmt: skip

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
            nats, state = self.model(x, self.state, y)  # [B, T]
        loss = nats.mean()
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
        self.grads.add(norm, cfg.grad_clip)
        # (under autocast the RNNs return fp16 states: carry them in fp32 like the weights)
        self.state = keep_state(skip, self.state, tuple(s.float() for s in detach(state)))
        p.step, p.window = p.step + 1, p.window + 1
        if self.average is not None:
            self.average.update(self.module, p.step)
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
            "grad_norms": self.grads.sums.tolist(),  # the same on every rank (DDP)
            "world_size": self.world.size,
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "average": self.average.state_dict() if self.average is not None else {},
        }

    def restore(self, saved: dict) -> None:
        """Carry on from `saved`, on this world: each rank takes its rows of the state."""
        self.optimizer.load_state_dict(saved["optimizer"])
        self.progress = p = Progress(**saved["progress"])
        self.saved.last_step = p.step  # what it was restored from is on disk
        p.ended = None  # a run that ended early and is resumed carries on (its count too)
        streams = self.config.batch_size * self.world.size
        if saved["state"] and saved["state"][0].shape[1] != streams:
            raise CheckpointError(
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
        self.grads.sums.copy_(torch.tensor(saved.get("grad_norms", [0.0] * 4)))  # old: none
        if self.average is not None and saved.get("average"):
            self.average.load_state_dict(saved["average"])

    def save_evaluation(self, val: Metrics, record: dict, model: RNNLanguageModel) -> bool:
        """After an evaluation of `model` (the trained one, or the average): its weights in
        model.safetensors if `val` is the best so far, the progress in config.json and a
        line of metrics.jsonl (rank 0 writes), then last/ (every rank takes part). True if
        the best model moved to this step. The best moves only once its weights are on disk:
        after a failed save (a full disk) the run's best is still the one saved, and a
        later, lesser one may replace it. What failed is in saved.failed."""
        p = self.progress
        improved = val.loss < p.best_val_loss  # False for NaN: NaN weights never replace good
        failed = None
        if self.world.is_main:  # rank 0 alone writes
            try:
                if improved:
                    checkpoint.save_weights(self.run_dir, model)
                    p.best_val_loss, p.best_step = val.loss, p.step
                progress = {"step": p.step, "best_val_loss": p.best_val_loss,
                            "best_step": p.best_step, "ended": p.ended}  # fmt: skip
                checkpoint.update_config(self.run_dir, progress)
                checkpoint.append_metrics(self.run_dir, record)
            except OSError as e:
                improved = improved and p.best_step == p.step
                failed = f"could not save in {self.run_dir} ({e}); the previous files are kept"
        elif improved:
            p.best_val_loss, p.best_step = val.loss, p.step
        messages = [failed]
        if math.isfinite(val.loss):  # the same on every rank, so all of them gather for last/
            messages.append(self.save_last())
        self.saved.failed = "; ".join(m for m in messages if m) or None
        return improved

    def save_last(self) -> str | None:
        """Save last/; a failed save (a full disk) keeps the previous one and says why.

        On several ranks: all call it, rank 0 writes, and none goes on before it is written.
        """
        state, message = self.trainer_state(), None
        if self.world.is_main:
            try:
                checkpoint.save_last(self.run_dir, self.module, state)
                self.saved.last_step = self.progress.step
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
        last, saved = checkpoint.load_last(self.run_dir, self.module.config, self.device)
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


def make_optimizer(model, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # Decay matrices only: biases and the forget-gate bias of 1 should stay where set.
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Fused on CPU and CUDA alike: one kernel for all parameters, and an optimizer that can
    # skip a step on the device (Trainer.step sets found_inf). On a CPU it is also faster
    # than the for-each and for-loop ones: `python bench/adamw_cpu.py` times the three.
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, fused=True)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99), fused=True)
