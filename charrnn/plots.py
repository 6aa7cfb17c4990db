"""Pictures of training curves, from metrics.jsonl: what `charrnn plot` draws, and the
compare.png of `charrnn compare`.

matplotlib is an optional extra (`pip install 'charrnn[plot]'`), imported only when a
picture is made. It draws on a Figure of its own with the headless Agg renderer, never
through pyplot, so no window opens and no global state is touched. Every picture is
WIDTH x HEIGHT pixels, written atomically. Nothing here trains or prints.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from charrnn import checkpoint
from charrnn.errors import CharrnnError, ConfigError
from charrnn.settings import option

WIDTH, HEIGHT, DPI = 1000, 600, 100  # pixels of every picture
FORMATS = ("png", "svg", "pdf")
METRIC = option(
    "metric", str, "loss", "What to plot: loss (nats/token) or bpc (bits per character).",
    choices=("loss", "bpc"),
)  # fmt: skip
X_AXIS = option(
    "x", str, "steps", "Along the x axis: steps, tokens, or time (of training).",
    choices=("steps", "tokens", "time"),
)  # fmt: skip
X_KEYS = {"steps": "step", "tokens": "tokens", "time": "elapsed"}  # of metrics.jsonl
Y_LABELS = {"loss": "loss (nats/token)", "bpc": "bits per character"}


class MissingExtra(CharrnnError):
    """matplotlib is not installed."""


def need_matplotlib(command: str) -> None:
    """MissingExtra, saying how to install it, unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtra(
            f"charrnn {command} needs matplotlib: pip install 'charrnn[plot]'"
        ) from None


def run_curve(run_dir: Path) -> list[dict]:
    """A run's evaluations (metrics.jsonl), one per step in step order: a step evaluated
    twice (a run resumed from an older last/) keeps its latest record."""
    if (Path(run_dir) / "compare.json").exists():
        raise ConfigError(
            f"{run_dir} holds a comparison, not a run: plot its runs ({Path(run_dir) / '*'}/), "
            "or see its compare.png"
        )
    checkpoint.read_config(run_dir)  # a run directory, or a CheckpointError saying why not
    records = {m["step"]: m for m in checkpoint.read_metrics(run_dir) if "step" in m}
    if not records:
        raise ConfigError(f"{run_dir}: no evaluations yet (metrics.jsonl is empty)")
    return [records[step] for step in sorted(records)]


def runs_figure(
    runs: Sequence[tuple[str, Sequence[dict]]], metric: str, x: str, path: Path
) -> tuple[int, int]:
    """Train (dashed) and val (solid) curves of each (label, records), a colour each;
    written to `path`. Returns the picture's (width, height) in pixels."""
    check_output(path)
    fig, ax = figure()
    unit, div = _unit(x, [records for _, records in runs])
    for i, (label, records) in enumerate(runs):
        for split, style in (("val", "-"), ("train", "--")):
            pts = _points(records, x, div, f"{split}_{metric}")
            if pts:
                ax.plot(*pts, style, color=f"C{i % 10}", lw=2 if split == "val" else 1.5,
                        marker="o" if split == "val" else None, ms=3,
                        label=f"{label} {split}")  # fmt: skip
    _finish(ax, metric, x, unit, "train (dashed) and val (solid)")
    return save(fig, path)


def compare_figure(
    cells: Mapping[str, Sequence[Sequence[dict]]], metric: str, x: str, path: Path
) -> tuple[int, int]:
    """Val curves of every run, one colour per cell, each seed a thin line."""
    check_output(path)
    fig, ax = figure()
    unit, div = _unit(x, [records for runs in cells.values() for records in runs])
    for i, (cell, runs) in enumerate(cells.items()):
        label = f"{cell} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        for k, records in enumerate(runs):
            pts = _points(records, x, div, f"val_{metric}")
            if pts:
                ax.plot(*pts, "-", color=f"C{i % 10}", lw=1.5,
                        label=label if k == 0 else None)  # fmt: skip
    _finish(ax, metric, x, unit, "val, a colour per cell, a line per seed")
    return save(fig, path)


def check_output(path: Path, flag: str = "") -> None:
    """ConfigError (naming `flag`, if given) unless a picture can be written to `path`."""
    path, name = Path(path), f"{flag} {path}" if flag else f"{path}"
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise ConfigError(f"{name}: give a file name ending in .png (or .svg, .pdf)")
    if not path.parent.is_dir():
        raise ConfigError(f"{name}: there is no folder {path.parent}; make it first")


def _unit(x: str, runs: Sequence[Sequence[dict]]) -> tuple[str, float]:
    """The x axis's unit and its divisor: training time in minutes past 3 minutes."""
    if x != "time":
        return "", 1.0
    longest = max((m.get("elapsed") or 0.0 for records in runs for m in records), default=0.0)
    return ("min", 60.0) if longest > 180 else ("s", 1.0)


def _points(records: Sequence[dict], x: str, div: float, key: str):
    """([x, ...], [y, ...]) of the records that have `key`, or None."""
    pts = [((m.get(X_KEYS[x]) or 0) / div, m[key]) for m in records if m.get(key) is not None]
    return tuple(zip(*pts)) if pts else None


def figure():
    """(Figure, Axes) of WIDTH x HEIGHT pixels on the Agg renderer, pyplot untouched (for
    any picture of charrnn's: draw on the Axes, then save())."""
    from matplotlib.figure import Figure  # the extra: imported only to draw

    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, layout="constrained")
    return fig, fig.subplots()


def _finish(ax, metric: str, x: str, unit: str, what: str) -> None:
    from matplotlib.ticker import MaxNLocator

    xlabel = {"steps": "step", "tokens": "tokens", "time": f"training time ({unit})"}[x]
    ax.set_xlabel(xlabel)
    if x != "time":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(Y_LABELS[metric])
    ax.set_title(f"{Y_LABELS[metric]}: {what}")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def save(fig: Any, path: Path) -> tuple[int, int]:
    """Write a figure() to `path` (its format from the suffix), whole or not at all."""
    check_output(path)
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lower().lstrip("."))
    checkpoint.atomic_write(path, buffer.getvalue())  # whole or not at all
    return WIDTH, HEIGHT
