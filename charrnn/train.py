"""TrainConfig, and fit(): a training session as a generator of Report records.

fit() trains with teacher forcing and stateful truncated BPTT (see trainer.py) and yields
`Report` records (a step, an evaluation, the end) that the CLI renders or an API caller
reads. It knows the model only through `forward(ids, state) -> (logits, state)`; it never
prints. Every `eval_every` steps it evaluates on the whole validation split and saves the
run directory (rank 0 alone writes; all ranks yield the same Reports, except that a
failed save shows in rank 0's alone).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from charrnn import checkpoint, settings
from charrnn.errors import ConfigError
from charrnn.meters import LOG_EVERY, MAX_BAD_STEPS, Meter
from charrnn.metrics import Metrics, evaluate
from charrnn.sample import SampleConfig, sample_text
from charrnn.settings import (
    at_least,
    format_duration,
    not_negative,
    parse_duration,
    positive,
    setting,
    within,
)
from charrnn.trainer import PRECISIONS, Job, Report, Trainer

DURATION = "duration"  # the group of --steps, --epochs, --time-budget: one of them


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
    lr: float = setting(8e-3, "Peak learning rate of AdamW.", by={"cuda": 2e-3}, check=positive)
    min_lr_frac: float = setting(
        0.02, "The cosine schedule ends at lr times this.", by={"cuda": 0.1}, check=within(0, 1)
    )
    warmup_steps: int = setting(50, "Steps of linear warmup from 0.", check=not_negative)
    weight_decay: float = setting(0.01, "AdamW weight decay (matrices only).", check=not_negative)
    grad_clip: float = setting(1.0, "Clip the gradient norm to this (0: off).", check=not_negative)
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
    eval_every: int = setting(500, "Evaluate and save every N steps.", check=at_least(1))
    val_frac: float = setting(
        0.1, "The last part of the text, held out.", check=within(0, 1, True, True)
    )
    seed: int = setting(1337, "Seed for everything random.", check=within(0, 2**63 - 1))
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


def fit(job: Job, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Report]:
    """Train `job.model`, yielding a Report after every step and every evaluation.

    Every `eval_every` steps and at the end: evaluate on the whole validation split,
    save model.safetensors if it is the best so far, save last/ for resuming, append
    to metrics.jsonl. `should_stop()` is polled between steps (a signal handler sets it):
    when true, last/ is saved and a "stopped" report ends the run.

    On several ranks every rank runs this with its own `world`; they agree after each
    step on the clock and on stopping, so all take the same decisions at the same step.
    """
    trainer, world, config = Trainer(job), job.world, job.config
    if job.resume is not None:
        trainer.restore(job.resume)
    job.model.train()
    recent = Meter(trainer.device)
    clock, stop_agreed = time.perf_counter(), False
    while not trainer.done():
        if should_stop() if world.size == 1 else stop_agreed:
            trainer.read_guard()  # the skipped count goes into last/
            trainer.saved.failed = message = trainer.save_last()
            yield trainer.report("stopped", message=message)
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
            yield evaluate_and_save(trainer, job.preview)
            recent.take(world)
            clock = time.perf_counter()  # evaluation time is not training throughput
    yield trainer.report("done")


def evaluate_and_save(trainer: Trainer, preview: SampleConfig) -> Report:
    """Evaluate on the whole validation split; save the best model, last/ and metrics;
    sample a short `preview` of what the model writes now."""
    p, model, world = trainer.progress, trainer.module, trainer.world
    nats, tokens = trainer.since_eval.take(world)
    grads = trainer.grads.take()
    train = None
    if tokens:  # characters and words of the windows read: the split's ratios to tokens
        chars, words = (round(tokens / ratio) for ratio in trainer.tokens_per)
        train = Metrics.of(nats, tokens, chars, words)
    val = evaluate(
        model,
        trainer.val_ids,
        trainer.config.seq_len,
        trainer.tokenizer,
        trainer.device,
        world,
        trainer.val_counts,
    )
    improved = val.loss < p.best_val_loss  # False for NaN: NaN weights never replace good ones
    messages = []
    if world.is_main:  # rank 0 alone writes
        improved, failed = save_run(
            trainer, val, improved, metrics_record(trainer, train, val, grads)
        )
        messages.append(failed)
    elif improved:
        p.best_val_loss, p.best_step = val.loss, p.step
    if math.isfinite(val.loss):  # the same on every rank, so all of them gather for last/
        messages.append(trainer.save_last())
    trainer.saved.failed = "; ".join(m for m in messages if m) or None
    text = None
    if world.is_main:  # only rank 0 shows it
        text = sample_text(
            model, trainer.tokenizer, "", preview,
            # its own generator: training's random stream stays untouched
            torch.Generator(trainer.device).manual_seed(p.step),
        )[0]  # fmt: skip
    model.train()
    return trainer.report(
        "eval",
        train=train,
        val=val,
        grads=grads,
        improved=improved,
        sample=text,
        message=trainer.saved.failed,
    )


def save_run(
    trainer: Trainer, val: Metrics, improved: bool, record: dict
) -> tuple[bool, str | None]:
    """Rank 0's writes at an evaluation: model.safetensors if `improved`, the progress in
    config.json, a line of metrics.jsonl -> (the weights were saved, what failed or None).
    The best so far moves only once its weights are on disk: after a failed save (a full
    disk) the run's best is still the one saved, and a later, lesser one may replace it."""
    p, run_dir, saved = trainer.progress, trainer.run_dir, trainer.saved
    try:
        if improved:
            checkpoint.save_weights(run_dir, trainer.module)
            p.best_val_loss, p.best_step = val.loss, p.step
            saved.best_step, saved.best_val_loss = p.step, val.loss
        progress = {"step": p.step, "best_val_loss": p.best_val_loss, "best_step": p.best_step}
        checkpoint.update_config(run_dir, progress)
        checkpoint.append_metrics(run_dir, record)
    except OSError as e:
        weights = improved and saved.best_step == p.step
        return weights, f"could not save in {run_dir} ({e}); the previous files are kept"
    return improved, None


def metrics_record(trainer: Trainer, train: Metrics | None, val: Metrics, grads) -> dict:
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
            record[f"{split}_word_perplexity"] = m.word_perplexity
            record[f"{split}_token_perplexity"] = m.token_perplexity
    if grads is not None:  # the gradient's global norm before clipping, since the last one
        record.update(grad_norm_mean=grads.mean, grad_norm_max=grads.max,
                      clipped_frac=grads.clipped)  # fmt: skip
    return record


def set_deterministic() -> None:
    """The deterministic settings PyTorch offers (see the README for what they promise)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it before use
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
