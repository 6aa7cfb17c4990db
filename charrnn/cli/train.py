"""`charrnn train`: parse, set up a new or resumed run (run.create / run.resume, under
torchrun too), and render fit()'s reports: progress bar, tables, samples, summary."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from charrnn import checkpoint, devices, distributed, run
from charrnn.cli.app import command, err
from charrnn.cli.options import with_settings
from charrnn.corpus import CorpusConfig
from charrnn.distributed import World
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig
from charrnn.settings import format_duration, option, parse_duration
from charrnn.tokenizer import TokenizerConfig
from charrnn.train import TrainConfig, fit, set_deterministic

COLLECTIVE_TIMEOUT = option(
    "collective_timeout", float, 600.0,
    "Under torchrun: how long a rank waits for the others, then fails.",
    parse=parse_duration, show=format_duration, metavar="DURATION",
)  # fmt: skip
NOTE_STYLES = {"info": None, "warning": "yellow", "detail": "dim"}
EXIT_NOT_SAVED = 3  # the run ended, but its last save failed: the files on disk are older
Corpus = Annotated[
    Optional[list[str]],
    typer.Argument(metavar="CORPUS", help="Files, folders, or a built-in corpus: python "
                   "(the default: this Python's standard library) or shakespeare."),
]  # fmt: skip


class StopFlag:
    """Set by SIGINT/SIGTERM: training saves last/ at the next step and exits 130/143.
    A second signal stops at once."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def handle(self, signum, frame):
        if self.signum is not None:
            raise SystemExit(128 + signum)
        self.signum = signum

    @contextmanager
    def installed(self):
        old = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@command(summary="Train a model on a corpus and save it in a run directory.")
@with_settings(ModelConfig, TrainConfig, TokenizerConfig, CorpusConfig, devices.DEVICE,
               COLLECTIVE_TIMEOUT)  # fmt: skip
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
    device: str,
    collective_timeout: float,
    settings: dict,
):
    """Train a model on CORPUS and save it in a run directory; under torchrun, on several
    GPUs or nodes. Settings left out get the defaults of the device (and tokenizer)."""
    world = distributed.from_env()
    dev = distributed.rank_device(world, devices.resolve(device), device)
    if resume is not None and run_dir is not None and run_dir != resume:
        raise ConfigError("--resume names the run directory; leave out --run-dir")
    if not world.is_main:
        err.quiet = True  # only rank 0 renders; every rank still prints its errors
    with distributed.group(world, dev, collective_timeout) as world:
        if resume is not None:
            job = run.resume(resume, sources or [], settings, dev, world)
        else:
            job = run.create(sources or [], settings, dev, run_dir, world)
        for level, note in job.notes:
            err.print(note, style=NOTE_STYLES[level])
        if job.config.deterministic:
            set_deterministic()
        stop = StopFlag()
        with stop.installed(), collectives_failing(world, job.run_dir):
            reports = fit(job, stop)
            last = render_training(reports, job.config) if world.is_main else last_of(reports)
    if last is not None and last.kind == "diverged":
        raise typer.Exit(1)
    if last is not None and last.kind == "stopped":
        kept = f"; {on_disk(job.run_dir, last.saved)}" if last.saved.failed else ""
        saved = "could not save last/" if last.saved.failed else f"last/ saved in {job.run_dir}"
        err.print(
            f"stopped by signal; {saved}{kept}; continue with: charrnn train --resume {job.run_dir}"
        )
        # on several ranks, one may stop because another was signalled
        raise typer.Exit(128 + (stop.signum or signal.SIGTERM))
    if render_summary(job.run_dir, last):
        raise typer.Exit(EXIT_NOT_SAVED)


def last_of(reports):
    """Run fit() to the end without showing it (ranks other than 0)."""
    last = None
    for last in reports:  # noqa: B007 - the last one is the result
        pass
    return last


@contextmanager
def collectives_failing(world: World, out: Path):
    """On several ranks, an error on this one (most often a collective that failed because
    another rank died, or one that waited past --collective-timeout): one line, exit 1.
    Rank 0 alone writes, atomically, so the saved checkpoints are intact."""
    if world.size == 1:
        yield
        return
    try:
        yield
    except RuntimeError as e:  # gloo's lost peer is a bare RuntimeError, NCCL's a DistError
        lines = str(e).strip().splitlines()
        reason = f"{type(e).__name__}: {lines[0][:300] if lines else ''}"
        typer.echo(
            f"charrnn: error: rank {world.rank} of {world.size} stops ({reason}); if another "
            f"rank died, its error or torchrun's summary says why. The checkpoints saved so far "
            f"are intact: continue with charrnn train --resume {out}",
            err=True,
        )
        raise typer.Exit(1) from None


def render_training(reports, train_cfg: TrainConfig):
    """Show fit()'s reports: a progress bar, a table and a sample at each evaluation."""
    by_time = train_cfg.time_budget is not None
    progress = Progress(
        TextColumn("step {task.fields[step]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    last = None
    with progress:
        task = progress.add_task("train", total=None, step=0, loss="-", val="-", tps="-")
        for report in reports:
            last = report
            p = report.progress
            total = train_cfg.time_budget if by_time else report.total_steps
            fields = {
                "step": f"{p.step}" + (f"/{report.total_steps}" if report.total_steps else "")
            }
            if report.loss is not None:
                fields.update(loss=f"{report.loss:.3f}", tps=f"{report.tokens_per_sec:,.0f}")
            if report.val is not None:
                fields["val"] = f"{report.val.loss:.3f}"
                progress.console.print(eval_table(report))
                progress.console.print(
                    Panel(
                        Text(report.sample or ""),
                        title=f"sample at step {p.step}",
                        title_align="left",
                    )
                )
            if report.message:
                style = "bold red" if report.kind == "diverged" else "yellow"
                progress.console.print(f"{report.kind}: {report.message}", style=style)
            progress.update(task, total=total, completed=p.elapsed if by_time else p.step, **fields)
    return last


def eval_table(report) -> Table:
    p = report.progress
    table = Table(
        title=f"step {p.step} · epoch {p.epoch + 1} · {p.tokens:,} tokens · "
        f"{format_duration(p.elapsed)}",
        title_justify="left",
    )
    for col in ("", "loss (nats/token)", "bits/char", "ppl/word", "ppl/token"):
        table.add_column(col, justify="right")
    for name, m in (("train", report.train), ("val", report.val)):
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
    table.caption = best + grads
    return table


def render_summary(run_dir: Path, last) -> bool:
    """The last lines: what was trained and what the run directory holds. True when the
    last save failed: the files on disk are older than the run (exit EXIT_NOT_SAVED)."""
    if last is None:
        return False
    p, saved = last.progress, last.saved
    trained = (
        f"[bold]done[/]: {p.step} steps, {p.tokens:,} tokens in {format_duration(p.elapsed)} "
        "of training"
    )
    if saved.best_step is not None:
        best = next((m for m in checkpoint.read_metrics(run_dir)
                     if m.get("step") == saved.best_step), None)  # fmt: skip
        bpc = f", {best['val_bpc']:.4f} bits/char" if best and "val_bpc" in best else ""
        trained += (
            f"; best val loss {saved.best_val_loss:.4f} nats/token{bpc} at step {saved.best_step}"
        )
    err.print(trained)
    if saved.failed:
        err.print(
            f"the last save failed (above); {on_disk(run_dir, saved)}; free some space (or "
            f"fix the folder), then continue with: charrnn train --resume {run_dir}",
            style="bold red",
            markup=False,
        )
        return True
    err.print(f"saved in {run_dir}; sample with: charrnn sample {run_dir}")
    return False


def on_disk(run_dir: Path, saved) -> str:
    """What the run directory holds, in words."""
    best = (
        f"{checkpoint.WEIGHTS} of step {saved.best_step} (val loss {saved.best_val_loss:.4f})"
        if saved.best_step is not None
        else f"no {checkpoint.WEIGHTS}"
    )
    last = f"last/ of step {saved.last_step}" if saved.last_step is not None else "no last/"
    return f"{run_dir} holds {best} and {last}"
