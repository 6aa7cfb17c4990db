"""fit(): a training session as a generator of Report records, the whole loop on one screen.

fit() trains with teacher forcing and stateful truncated BPTT (see trainer.py) and yields
`Report` records (a step, an evaluation, the end) that the CLI renders or an API caller
reads. It knows the model only through `forward(ids, state) -> (logits, state)`; it never
prints. Every `eval_every` steps it evaluates on the whole validation split and saves the
run directory (rank 0 alone writes; all ranks yield the same Reports, except that a
failed save shows in rank 0's alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch

from charrnn.metrics import Metrics, evaluate
from charrnn.sample import SampleConfig, sample_text
from charrnn.training.meters import LOG_EVERY, MAX_BAD_STEPS, Meter
from charrnn.training.reports import Report
from charrnn.training.schedule import after_evaluation
from charrnn.training.trainer import Job, Trainer


def fit(job: Job, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Report]:
    """Train `job.model`, yielding a Report after every step and every evaluation.

    Every `eval_every` steps and at the end: evaluate on the whole validation split,
    save model.safetensors if it is the best so far, save last/ for resuming, append
    to metrics.jsonl. `should_stop()` is polled between steps (a signal handler sets it):
    when true, last/ is saved and a "stopped" report ends the run.

    On several ranks every rank runs this with its own `world`; they agree after each
    step on the clock and on stopping, so all take the same decisions at the same step.
    """
    trainer, world = Trainer(job), job.world
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
        nats, n = trainer.step()  # on the device: the host does not wait for it here
        elapsed = trainer.progress.elapsed + time.perf_counter() - t0
        if world.size > 1:  # one small collective: the slowest clock, and any rank's signal
            elapsed, stop_agreed = world.agree(elapsed, should_stop())
        trainer.progress.elapsed = elapsed
        recent.add(nats, n)
        trainer.since_eval.add(nats, n)
        step = trainer.progress.step
        evaluate_now = step % trainer.eval_every == 0 or trainer.done()
        if step % LOG_EVERY and not evaluate_now:
            yield trainer.report("step")
            continue
        run = trainer.read_guard()  # the host reads the device: a sync
        if run >= MAX_BAD_STEPS:  # diverging: back to last/ once, then give up
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
    """Evaluate on the whole validation split (and, where the trained weights do not beat
    the best, their average: average.py); save the best model, last/ and metrics; sample a
    short `preview` of what the model writes now."""
    p, model, world = trainer.progress, trainer.module, trainer.world
    nats, tokens = trainer.since_eval.take(world)
    grads = trainer.grads.take()
    train = None
    if tokens:  # characters and words of the windows read: the split's ratios to tokens
        chars, words = (round(tokens / ratio) for ratio in trainer.tokens_per)
        train = Metrics.of(nats, tokens, chars, words)
    val, chosen = validate(trainer, model), model
    average = trainer.average
    if average is not None and not val.loss < p.best_val_loss:  # stalled: try the average
        averaged = validate(trainer, average.model)
        if averaged.loss < val.loss:
            val, chosen = averaged, average.model
    record = metrics_record(trainer, train, val, grads)  # the lr of the steps behind it
    if average is not None:
        record["averaged"] = chosen is average.model
    better = val.loss < p.best_val_loss
    if val.net_loss is not None and val.net_loss < p.best_net_loss:  # the network learns
        p.best_net_loss, better = val.net_loss, True
    after_evaluation(trainer.config, p, better)  # into last/ with it
    if p.ended:
        record["ended"] = p.ended
    improved = trainer.save_evaluation(val, record, chosen)
    text = None
    if world.is_main:  # only rank 0 shows it
        text = sample_text(
            chosen, trainer.tokenizer, "", preview,
            # its own generator: training's random stream stays untouched
            torch.Generator(trainer.device).manual_seed(p.step),
        )[0]  # fmt: skip
    model.train()
    return trainer.report("eval", train=train, val=val, grads=grads, improved=improved,
                          averaged=chosen is not model, sample=text,
                          message=trainer.saved.failed)  # fmt: skip


def validate(trainer: Trainer, model) -> Metrics:
    """`model`'s loss on the whole validation split (with an n-gram, the mixture's, at the
    weight fitted there: ngram.py)."""
    return evaluate(model, trainer.val_ids, trainer.config.seq_len, trainer.tokenizer,
                    trainer.device, trainer.world, trainer.val_counts, fit=True)  # fmt: skip


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
    if val.ngram_weight is not None:  # val_loss is the mixture's; the network's alone too
        record.update(ngram_weight=val.ngram_weight, val_net_loss=val.net_loss)
    if grads is not None:  # the gradient's global norm before clipping, since the last one
        record.update(grad_norm_mean=grads.mean, grad_norm_max=grads.max,
                      clipped_frac=grads.clipped)  # fmt: skip
    return record
