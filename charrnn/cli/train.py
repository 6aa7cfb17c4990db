"""`charrnn train`: parse, run the job (runner.Session: new or resumed, under torchrun too),
and render its reports: progress bar, tables, samples, summary, exit code."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from charrnn import checkpoint, devices, runner
from charrnn.cli.app import command, err
from charrnn.cli.options import DEFAULT, opt, with_settings
from charrnn.cli.progress import RunBar, bars
from charrnn.corpus import CorpusConfig
from charrnn.distributed import COLLECTIVE_TIMEOUT
from charrnn.model import ModelConfig
from charrnn.settings import format_duration
from charrnn.tokenizers import TokenizerConfig
from charrnn.training.config import TrainConfig
from charrnn.training.reports import ending, has_best

NOTE_STYLES = {"info": None, "warning": "yellow", "detail": "dim"}
EXIT_NOT_SAVED = 3  # the run ended, but its last save failed: the files on disk are older
EXIT_FAILED = 1  # training diverged, or a rank's collective failed
Corpus = Annotated[
    Optional[list[str]],
    typer.Argument(metavar="CORPUS", help="Files, folders, or a built-in corpus: python "
                   "(the default: this Python's standard library) or shakespeare."),
]  # fmt: skip


@command(summary="Train a model on a corpus and save it in a run directory.")
@with_settings(ModelConfig, TrainConfig, TokenizerConfig, CorpusConfig)
def train(
    sources: Corpus = None,
    *,
    run_dir: Annotated[
        Optional[Path],
        typer.Option(
            metavar="DIR", help="Where to save the run (default: checkpoints/NAME-CELL-TIME)."
        ),
    ] = None,
    resume: Annotated[
        Optional[Path], typer.Option(metavar="RUN", help="Carry on the run in this directory.")
    ] = None,
    init_from: Annotated[
        Optional[Path],
        typer.Option(
            metavar="RUN",
            help="Fine-tune: a new run that starts from this run's "
            "best model, its vocabulary grown (docs/finetune.md).",
        ),
    ] = None,  # fmt: skip
    device: opt(devices.DEVICE) = DEFAULT,
    collective_timeout: opt(COLLECTIVE_TIMEOUT) = DEFAULT,
    settings: dict,
):
    """Train a model on CORPUS and save it in a run directory; under torchrun, on several
    GPUs or nodes. Settings left out get the defaults of the device (and tokenizer).
    Every flag, the schedule, resuming: docs/training.md."""
    request = runner.Request(sources or [], settings, run_dir, resume, device, collective_timeout,
                             init_from)  # fmt: skip
    with runner.Session(request) as session:
        main = session.world.is_main
        err.quiet = not main  # only rank 0 renders; every rank still prints its errors
        show_notes(session.notes)
        reports = session.reports()
        last = render_training(reports, session.config) if main else last_of(reports)
    finish(last, session.run_dir, session.config)


def show_notes(notes: list[tuple[str, str]], levels: tuple[str, ...] | None = None) -> None:
    """Set-up's notes on stderr (only those of `levels`, if given)."""
    for level, note in notes:
        if levels is None or level in levels:
            err.print(note, style=NOTE_STYLES[level], markup=False)


def finish(last, run_dir: Path, config: TrainConfig) -> None:
    """The end of a training command: the summary, and the exit code of how it ended."""
    if last.kind == "failed":
        typer.echo(f"charrnn: error: {last.message}", err=True)
        raise typer.Exit(EXIT_FAILED)
    if last.kind == "diverged":
        raise typer.Exit(EXIT_FAILED)
    if last.kind == "stopped":
        kept = f"; {on_disk(run_dir, last)}" if last.saved.failed else ""
        saved = "could not save last/" if last.saved.failed else f"last/ saved in {run_dir}"
        err.print(
            f"stopped by signal; {saved}{kept}; continue with: charrnn train --resume {run_dir}",
            markup=False,
        )
        raise typer.Exit(128 + last.signal)
    if render_summary(run_dir, last, config):
        raise typer.Exit(EXIT_NOT_SAVED)


def last_of(reports):
    """Run fit() to the end without showing it (ranks other than 0)."""
    last = None
    for last in reports:  # noqa: B007 - the last one is the result
        pass
    return last


FULL_EVERY = 20.0  # seconds: evaluations closer than this to the last table get a line


def render_training(reports, train_cfg: TrainConfig):
    """Show fit()'s reports: a progress bar; at an evaluation a table and a sample, or,
    when evaluations come faster than one every FULL_EVERY seconds (a small text), a line."""
    last, shown = None, -math.inf
    with bars() as progress:
        bar = RunBar(progress)
        for last in reports:
            bar.update(last, train_cfg)
            if last.val is None:
                continue
            if time.monotonic() - shown < FULL_EVERY:
                progress.console.print(eval_line(last, train_cfg), markup=False)
                continue
            shown = time.monotonic()
            progress.console.print(eval_table(last))
            title = f"sample at step {last.progress.step}"
            progress.console.print(Panel(Text(last.sample or ""), title=title,
                                         title_align="left"))  # fmt: skip
    return last


def eval_line(report, train_cfg: TrainConfig) -> str:
    """An evaluation in one line: the losses, and where the run stands with --patience."""
    p = report.progress
    train = f" (train {report.train.loss:.4f})" if report.train else ""
    averaged = " of the averaged weights" if report.averaged else ""
    head = f"step {p.step} · epoch {p.epoch + 1} · val {report.val.loss:.4f}{averaged}{train}"
    if report.improved:
        return f"{head} · new best"
    patience = f" of --patience {train_cfg.patience}" if train_cfg.patience else ""
    return (f"{head} · best {p.best_val_loss:.4f} at step {p.best_step} · {p.stale} without "
            f"a better one{patience} · lr {report.lr:.3g}")  # fmt: skip


def eval_table(report) -> Table:
    p = report.progress
    table = Table(
        title=f"step {p.step} · epoch {p.epoch + 1} · {p.tokens:,} tokens · "
        f"{format_duration(p.elapsed)}",
        title_justify="left",
    )
    for col in ("", "loss (nats/token)", "bits/char", "ppl/word", "ppl/token"):
        table.add_column(col, justify="right")
    val = "val (averaged)" if report.averaged else "val"
    for name, m in (("train", report.train), (val, report.val)):
        if m is None:
            continue
        table.add_row(name, f"{m.loss:.4f}", f"{m.bpc:.4f}", f"{m.word_perplexity:.2f}",
                      f"{m.token_perplexity:.2f}")  # fmt: skip
    best = (
        "new best: saved model.safetensors"
        if report.improved
        else f"best {p.best_val_loss:.4f} at step {p.best_step}"
    )
    g = report.grads
    grads = (
        f"; gradient norm mean {g.mean:.3g}, max {g.max:.3g}, clipped {g.clipped:.0%}" if g else ""
    )
    v = report.val
    mixed = "" if v.ngram_weight is None else (
        f"; val is the mixture with the n-gram (weight {v.ngram_weight:.2f}; the network "
        f"alone {v.net_loss:.4f})"
    )  # fmt: skip
    table.caption = best + mixed + grads
    return table


def render_summary(run_dir: Path, last, config: TrainConfig) -> bool:
    """The last lines: what was trained and what the run directory holds. True when the
    last save failed: the files on disk are older than the run (exit EXIT_NOT_SAVED)."""
    p, saved = last.progress, last.saved
    trained = (
        f"[bold]done[/]: {p.step} steps, {p.tokens:,} tokens in {format_duration(p.elapsed)} "
        "of training"
    )
    if p.ended:
        trained += f"; {ending(p, config.patience)}"
    if has_best(p):
        best = next((m for m in checkpoint.read_metrics(run_dir)
                     if m.get("step") == p.best_step), None)  # fmt: skip
        bpc = f", {best['val_bpc']:.4f} bits/char" if best and "val_bpc" in best else ""
        trained += f"; best val loss {p.best_val_loss:.4f} nats/token{bpc} at step {p.best_step}"
    err.print(trained)
    if saved.failed:
        err.print(
            f"the last save failed (above); {on_disk(run_dir, last)}; free some space (or "
            f"fix the folder), then continue with: charrnn train --resume {run_dir}",
            style="bold red",
            markup=False,
        )
        return True
    err.print(f"saved in {run_dir}; sample with: charrnn sample {run_dir}")
    return False


def on_disk(run_dir: Path, last) -> str:
    """What the run directory holds, in words."""
    p, saved = last.progress, last.saved
    best = (
        f"{checkpoint.WEIGHTS} of step {p.best_step} (val loss {p.best_val_loss:.4f})"
        if has_best(p)
        else f"no {checkpoint.WEIGHTS}"
    )
    last_dir = f"last/ of step {saved.last_step}" if saved.last_step is not None else "no last/"
    return f"{run_dir} holds {best} and {last_dir}"
