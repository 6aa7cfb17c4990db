"""`charrnn plot`: the training and validation curves of runs, as a picture (plots.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charrnn import plots
from charrnn.cli.app import command, err
from charrnn.cli.options import DEFAULT, opt


@command(summary="Plot the training and validation curves of runs to a PNG.")
def plot(
    runs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN", help="Run directories made by charrnn train or compare."),
    ],
    *,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", metavar="FILE", help="The picture to write: FILE.png (or .svg, .pdf)."
        ),
    ],  # fmt: skip
    metric: opt(plots.METRIC) = DEFAULT,
    x: opt(plots.X_AXIS) = DEFAULT,
):
    """Plot the training (dashed) and validation (solid) curves of one or more runs, read
    from their metrics.jsonl, to a picture of 1000 x 600 pixels. Needs matplotlib: pip
    install 'charrnn[plot]'."""
    plots.need_matplotlib("plot")
    plots.check_output(output, "-o")
    curves = [(str(run_dir), plots.run_curve(run_dir)) for run_dir in runs]
    width, height = plots.runs_figure(curves, metric, x, output)
    err.print(f"wrote {output} ({width} x {height} pixels)")
