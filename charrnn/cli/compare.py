"""`charrnn compare`: one run per cell and seed on the same text for the same budget,
trained one after another (each on every rank under torchrun), shown as an overall bar
over the bar of the run in training; then the table on stdout, DIR/compare.json and
DIR/compare.png. The plan, carrying on and the results are charrnn/compare.py's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from charrnn import compare as comparing
from charrnn import devices, plots, runner
from charrnn.cli.app import command, err
from charrnn.cli.options import DEFAULT, opt, with_settings
from charrnn.cli.progress import RunBar, bars
from charrnn.cli.train import EXIT_FAILED, NOTE_STYLES, Corpus, last_of
from charrnn.corpus import CorpusConfig
from charrnn.distributed import COLLECTIVE_TIMEOUT, World
from charrnn.model import ModelConfig
from charrnn.settings import default_of, format_duration
from charrnn.tokenizers import TokenizerConfig
from charrnn.training.config import TrainConfig
from charrnn.training.reports import Report

HOW = {"new": "new run", "restart": "started again (it stopped before its first checkpoint)"}


@command(summary="Train several cells on the same text and budget, and compare them.")
@with_settings(ModelConfig, TrainConfig, TokenizerConfig, CorpusConfig, skip=["cell", "seed"],
               defaults=comparing.RUN_DEFAULTS)  # fmt: skip
def compare(
    sources: Corpus = None,
    *,
    out: Annotated[
        Path,
        typer.Option(
            metavar="DIR",
            help="Where the runs, compare.json and compare.png go; "
            "the same command again carries on what is missing there.",
        ),
    ],  # fmt: skip
    cells: opt(comparing.CELL_LIST) = DEFAULT,
    seeds: opt(comparing.SEEDS) = DEFAULT,
    init_from: Annotated[
        Optional[Path],
        typer.Option(
            metavar="RUN", help="Fine-tune every run from this run's best model (docs/finetune.md)."
        ),
    ] = None,  # fmt: skip
    device: opt(devices.DEVICE) = DEFAULT,
    collective_timeout: opt(COLLECTIVE_TIMEOUT) = DEFAULT,
    settings: dict,
):
    """Train one run per cell and seed (seeds 0 to N-1) on CORPUS with the same settings
    and budget, into DIR/CELL-seedK/; then show a table of val loss and bits/char per cell
    (mean and spread over seeds) and write DIR/compare.json and DIR/compare.png. Any
    train flag but --cell and --seed applies to every run."""
    with runner.ranks(device, collective_timeout) as (world, dev):
        err.quiet = not world.is_main  # only rank 0 renders; every rank still prints its errors
        plan = comparing.plan(sources or [], cells, seeds, settings, dev, world, init_from)
        states = comparing.statuses(plan, out)  # every rank reads DIR before rank 0 writes
        todo = [(item, comparing.action(out, item, states.get(item.name)))
                for item in plan.runs()]  # fmt: skip
        announce(plan, todo, out)
        world.barrier()
        last = train_all(plan, todo, states, out, dev, world)
    if last is not None:  # it ended the comparison early
        finish_run(last, out)
    if world.is_main:
        finish(plan, states, out)


def finish_run(last, out: Path) -> None:
    """A run that stopped the comparison: by a signal, or a rank that failed."""
    if last.kind == "failed":
        typer.echo(f"charrnn: error: {last.message}", err=True)
        raise typer.Exit(EXIT_FAILED)
    err.print(
        "stopped by signal; last/ saved; run the same charrnn compare command again to carry on",
        markup=False,
    )
    raise typer.Exit(128 + last.signal)


def announce(plan: comparing.Plan, todo: list, out: Path) -> None:
    labels = {"skip": "finished before", "resume": "to resume", "restart": "to start again"}
    counts = {label: sum(w == what for _, w in todo) for what, label in labels.items()}
    parts = [f"{n} {label}" for label, n in counts.items() if n]
    err.print(
        f"comparing {', '.join(plan.cells)} with {seeds_text(plan.seeds)}, {budget(plan)} per "
        f"run: {len(todo)} run{'s' if len(todo) > 1 else ''} in {out}"
        + (f" ({', '.join(parts)})" if parts else ""),
        markup=False,
    )
    try:
        plots.need_matplotlib("compare")
    except plots.MissingExtra as e:
        err.print(f"{e} for compare.png; the table and compare.json come without it",
                  style="yellow", markup=False)  # fmt: skip


def seeds_text(seeds: int) -> str:
    return "seed 0" if seeds == 1 else f"{seeds} seeds each (0 to {seeds - 1})"


def budget(plan: comparing.Plan) -> str:
    s = plan.settings
    if s.get("steps") is not None:
        return f"--steps {s['steps']}"
    if s.get("epochs") is not None:
        return f"--epochs {s['epochs']:g}"
    seconds = s.get("time_budget") or default_of(TrainConfig, "time_budget", [plan.device])
    return f"--time-budget {format_duration(seconds)}"


def train_all(
    plan: comparing.Plan, todo: list[tuple[comparing.Planned, str]], states: dict[str, str],
    out: Path, device: torch.device, world: World,
) -> Report | None:  # fmt: skip
    """Train what is missing, in order, each run a runner.Session in this one group; the
    last report of a run that ends the comparison early (stopped, failed), else None.
    `states` is updated as runs finish, and compare.json with it (rank 0)."""
    bars = Bars(len(todo), sum(what == "skip" for _, what in todo))
    with bars.progress if world.is_main else nullcontext():
        for i, (item, what) in enumerate(todo):
            if what == "skip":
                bars.print(f"{item.name}: {states[item.name]} before; skipped", style="dim")
                continue
            request = comparing.request(plan, item, what, out, world)
            with runner.Session(request, world, device) as session:
                step = (session.job.resume or {}).get("progress", {}).get("step")
                bars.print(f"[bold]{item.name}[/]: {HOW.get(what, f'resumed at step {step}')}",
                           markup=True)  # fmt: skip
                show(session.notes, bars, first=i == 0)
                if world.is_main:
                    comparing.record(plan, out, states)  # the plan is in DIR before training
                reports = session.reports()
                last = bars.follow(reports, item, session.job.config) if world.is_main else (
                    last_of(reports))  # fmt: skip
            if last.kind in ("stopped", "failed"):
                return last
            states[item.name] = "diverged" if last.kind == "diverged" else "done"
            if world.is_main:
                result = next(r for r in comparing.record(plan, out, states).runs
                              if r.run == item.name)  # fmt: skip
                bars.print(run_line(result), markup=True)
    return None


def show(notes: list[tuple[str, str]], bars: Bars, first: bool) -> None:
    """A run's set-up notes: all of them for the first run, its warnings for the others."""
    for level, note in notes:
        if first or level == "warning":
            bars.print(note, style=NOTE_STYLES[level])


class Bars:
    """One overall bar (runs done, and the time left for all of them) over the bar of the
    run in training. The overall bar counts work in runs: a run resumed halfway counts
    the half it has left."""

    def __init__(self, runs: int, skipped: int):
        # the overall rate, evaluations and set-up included
        self.progress = bars(16, speed_estimate_period=300)
        self.runs, self.done, self.work_done = runs, skipped, 0.0
        self.overall = self.progress.add_task(
            self._runs(), total=max(runs - skipped, 1), info="", completed=0
        )
        self.current = RunBar(self.progress)
        self.progress.update(self.current.task, visible=False)

    def _runs(self) -> str:
        return f"runs {self.done}/{self.runs}"

    def print(self, text: str, style: str | None = None, markup: bool = False) -> None:
        """A line above the bars (text as it is, unless `markup`)."""
        self.progress.console.print(text, style=style, markup=markup)

    def follow(
        self, reports: Iterator[Report], item: comparing.Planned, train_cfg: TrainConfig
    ) -> Report | None:
        """Show one run's reports; its last one."""
        start, last = None, None
        self.current.restart(f"{item.cell} seed {item.seed}")
        for last in reports:
            frac = self.current.update(last, train_cfg)
            if start is None:  # a resumed run has less left: the overall total shrinks
                start = frac
                overall = self.progress.tasks[self.overall]
                self.progress.update(self.overall, total=overall.total - start)
            self.progress.update(self.overall, completed=self.work_done + frac - (start or 0))
        if last is not None and last.kind not in ("stopped", "failed"):
            self.done += 1
            self.work_done += 1 - (start or 0)
            self.progress.update(self.overall, completed=self.work_done,
                                 description=self._runs())  # fmt: skip
        self.progress.update(self.current.task, visible=False)
        return last


def run_line(r: comparing.RunResult) -> str:
    if r.best_val_loss is None:
        return f"{r.run}: {r.status}, no evaluation"
    how = "[bold red]diverged[/]; " if r.status == "diverged" else ""
    return (
        f"{r.run}: {how}{r.steps} steps in {seconds(r.elapsed or 0)}, best val loss "
        f"{r.best_val_loss:.4f} nats/token ({r.best_val_bpc:.4f} bits/char) at step "
        f"{r.best_step}, {r.tokens_per_sec or 0:,.0f} tok/s"
    )


def seconds(elapsed: float) -> str:
    return f"{elapsed:.1f}s" if elapsed < 60 else format_duration(elapsed)


def finish(plan: comparing.Plan, states: dict, out: Path) -> None:
    """compare.json and compare.png (if matplotlib is there), then the table on stdout."""
    comparison = comparing.record(plan, out, states)
    picture = ""
    try:
        comparing.draw(plan, out)
        picture = f" and {comparing.PICTURE}"
    except plots.MissingExtra:
        pass  # said at the start
    Console(highlight=False).print(table(comparison, budget(plan)))
    err.print(f"wrote {Path(out) / comparing.FILE}{picture}", markup=False)


def table(comparison: comparing.Comparison, duration: str) -> Table:
    plan = comparison.plan
    diverged = [f"{c.cell} {c.diverged} of {c.planned}" for c in comparison.cells if c.diverged]
    t = Table(
        title=f"{', '.join(plan.cells)}: {seeds_text(plan.seeds)}, {duration} per run",
        title_justify="left",
        caption="val loss (nats/token): each run's best evaluation, mean ± sample standard "
        "deviation over seeds; bits/char: the mean of the same (the same text and tokens, so "
        "the spread in proportion); tok/s: of training, evaluations not counted"
        + (f"; diverged (not in the figures): {', '.join(diverged)}" if diverged else ""),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    # Seven columns that fit 80 terminal columns whole (a figure is never cut short).
    for col in ("cell", "runs", "val loss", "bits/char", "params", "tok/s", "steps"):
        t.add_column(col, justify="left" if col == "cell" else "right", overflow="fold")
    means = [c.val_loss.mean for c in comparison.cells if c.val_loss]
    for c in comparison.cells:
        runs = f"{c.done}/{c.planned}"
        best = bool(means) and c.val_loss is not None and c.val_loss.mean == min(means)
        t.add_row(
            c.cell, runs, _spread(c.val_loss, ".4f"), f"{c.val_bpc.mean:.4f}" if c.val_bpc else "-",
            f"{c.parameters:,}" if c.parameters else "-",
            f"{c.tokens_per_sec.mean:,.0f}" if c.tokens_per_sec else "-",
            f"{c.steps.mean:,.0f}" if c.steps else "-",
            style="bold" if best and len(means) > 1 else None,
        )  # fmt: skip
    return t


def _spread(s: comparing.Spread | None, fmt: str) -> str:
    if s is None:
        return "-"
    return f"{s.mean:{fmt}}" + (f" ± {s.sd:{fmt}}" if s.sd is not None else "")
