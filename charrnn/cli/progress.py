"""The progress bar of a run in training, shared by `charrnn train` and `charrnn compare`:
step, loss, validation loss, tokens/s and the time left, from fit()'s reports, on stderr."""

from __future__ import annotations

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from charrnn.cli.app import err
from charrnn.training.config import TrainConfig
from charrnn.training.reports import Report


def bars(description_width: int = 0, **options) -> Progress:
    """A rich Progress whose bars show a description, the bar, what RunBar writes and the
    time left; transient (gone when the block ends), on stderr."""
    width = f":<{description_width}" if description_width else ""
    return Progress(
        TextColumn(f"{{task.description{width}}}"), BarColumn(),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
        console=err, transient=True, **options,
    )  # fmt: skip


class RunBar:
    """One run's bar in a Progress: its length is the time budget or the steps."""

    def __init__(self, progress: Progress, description: str = ""):
        self.progress = progress
        self.task = progress.add_task(description, total=None, info="")
        self.loss = self.val = self.tps = "-"

    def restart(self, description: str) -> None:
        """The bar of the next run: back to zero, shown."""
        self.progress.reset(self.task, description=description, total=None, info="",
                            visible=True)  # fmt: skip
        self.loss = self.val = self.tps = "-"

    def update(self, report: Report, config: TrainConfig) -> float:
        """Show a report (its message above the bars); the fraction of the run done."""
        p, by_time = report.progress, config.time_budget is not None
        total = config.time_budget if by_time else report.total_steps
        done = p.elapsed if by_time else p.step
        if report.loss is not None:
            self.loss, self.tps = f"{report.loss:.3f}", f"{report.tokens_per_sec:,.0f}"
        if report.val is not None:
            self.val = f"{report.val.loss:.3f}"
        if report.message:
            style = "bold red" if report.kind == "diverged" else "yellow"
            self.progress.console.print(f"{report.kind}: {report.message}", style=style,
                                        markup=False)  # fmt: skip
        steps = f"{p.step}" + (f"/{report.total_steps}" if report.total_steps else "")
        info = f"step {steps}  loss {self.loss}  val {self.val}  {self.tps} tok/s"
        self.progress.update(self.task, total=total, completed=done, info=info)
        return min(1.0, done / total) if total else 0.0
