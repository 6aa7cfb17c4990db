"""`charrnn inspect-gradients`: how the gradient through time falls or grows with the lag, in a
trained run or an untrained model, as tables (stdout), JSON or a PNG plot.

The measuring is charrnn/gradients.py's; this module picks the model and the text, and
renders. matplotlib (the `plot` extra) is imported only for --png.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from charrnn import api, devices, plots
from charrnn import gradients as grads
from charrnn.cli.app import AsJson, command, err, text_or_file
from charrnn.cli.options import DEFAULT, opt, with_settings
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig
from charrnn.settings import SEED, at_least, option
from charrnn.tokenizers import ON_UNKNOWN

MAX_LAG = option("max_lag", int, 200, "The largest lag k measured.", check=at_least(1))
WINDOWS = option(
    "windows", int, 32, "Windows of the text the norms are averaged over.", check=at_least(1)
)
VOCAB_SIZE = option(
    "vocab_size", int | None, None, "Token ids of an untrained model given no text (it reads "
    f"random ids).  [default: {grads.UNTRAINED_VOCAB}]", check=at_least(1),
)  # fmt: skip
BAR = 24  # the longest bar, in characters
Run = Annotated[
    Optional[Path],
    typer.Argument(metavar="RUN", help="A run directory made by charrnn train (or --cell)."),
]
Text_ = Annotated[Optional[str], typer.Option("--text", metavar="TEXT", help="The text to read.")]
File = Annotated[
    Optional[Path], typer.Option("--file", metavar="FILE", help="Read the text from a file.")
]
Png = Annotated[
    Optional[Path], typer.Option(metavar="FILE", help="Also write a plot (needs charrnn[plot]).")
]


@command(
    "inspect-gradients", summary="Show how the gradient through time falls or grows with the lag."
)
@with_settings(ModelConfig)
def inspect_gradients(
    run_dir: Run = None,
    *,
    text: Text_ = None,
    file: File = None,
    png: Png = None,
    as_json: AsJson = False,
    max_lag: opt(MAX_LAG) = DEFAULT,
    windows: opt(WINDOWS) = DEFAULT,
    seed: opt(SEED) = DEFAULT,
    vocab_size: opt(VOCAB_SIZE) = None,
    on_unknown: opt(ON_UNKNOWN) = None,
    device: opt(devices.DEVICE) = DEFAULT,
    settings: dict,
):
    """How far back the gradient reaches: the mean norm of d loss(t) / d h(t - k) (and of
    the cell state c) for each lag k and layer, and the spectra of the recurrent matrices,
    of a trained RUN or of an untrained model (--cell and the model flags), on a text
    (--text, --file; else the model's own: a sample, or random ids for an untrained one)."""
    text = text_or_file(text, file, ("--text", "--file"))
    if text == "":
        raise ConfigError("the text is empty; give some with --text or --file")
    if png is not None:  # before the work, so that it fails first
        plots.need_matplotlib("inspect-gradients --png")
        plots.check_output(png, "--png")
    dev = devices.resolve(device)
    if run_dir is not None:
        model, title, windows_, note = grads.of_run(
            api.load(run_dir, dev), settings, vocab_size, text, on_unknown, windows, max_lag, seed
        )
    else:
        model, title, windows_, note = grads.of_untrained(
            settings, vocab_size, text, windows, max_lag, seed, dev
        )
    if note:
        err.print(note, style="dim", markup=False)
    result = grads.measure(model, windows_)
    if png is not None:
        write_png(png, result, title)
    if as_json:
        typer.echo(json.dumps({"model": title, **result.to_json()}, indent=2))
    else:
        render(Console(highlight=False), result, title)


# Rendering ------------------------------------------------------------------------------


def render(out: Console, result: grads.Gradients, title: str) -> None:
    K, B = result.max_lag, result.windows
    head = (
        f"{title}: the gradient of the loss at the last of {K + 1} tokens with respect to "
        f"each layer's state k tokens before, mean norm over {B} windows (each after "
        f"{result.warmup} tokens read without gradients), float64"
    )
    out.print(head, soft_wrap=True)
    out.print(flow_table(result))
    out.print(ratio_table(result))
    out.print(spectrum_table(result))


def flow_table(result: grads.Gradients) -> Table:
    lags = grads.shown_lags(result.max_lag)
    shown = np.array([f.norms[k - 1] for f in result.flows for k in lags])
    lo, hi = log_range(shown)
    table = Table(title="mean ||d loss_t / d state_{t-k}|| by lag k", title_justify="left",
                  caption=f"bar: log scale, {lo:.1e} to {hi:.1e}" if lo is not None else None,
                  caption_justify="left")  # fmt: skip
    for col in ("layer", "state", "lag k", "norm"):
        table.add_column(col, justify="right")
    table.add_column("")
    for f in result.flows:
        for k in lags:
            norm = f.norms[k - 1]
            table.add_row(str(f.layer), f.state, str(k), f"{norm:.3g}", bar(norm, lo, hi))
        table.add_section()
    return table


def log_range(values: np.ndarray) -> tuple[float | None, float | None]:
    """(smallest, largest) of the values a log scale can show: finite and positive."""
    ok = values[np.isfinite(values) & (values > 0)]
    return (float(ok.min()), float(ok.max())) if len(ok) else (None, None)


def bar(value: float, lo: float | None, hi: float | None) -> str:
    """A bar whose length is the value's place between lo and hi on a log scale."""
    if lo is None or not (math.isfinite(value) and value > 0):
        return ""
    if hi <= lo:
        return "█" * BAR
    share = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return "█" * (1 + round(share * (BAR - 1)))


def ratio_table(result: grads.Gradients) -> Table:
    K = result.max_lag
    table = Table(title=f"lag {K} / lag 1: below 1 it vanishes, above 1 it explodes",
                  title_justify="left")  # fmt: skip
    for col in ("layer", "state", "lag 1", f"lag {K}", f"lag {K} / lag 1", "per lag"):
        table.add_column(col, justify="right")
    for f in result.flows:
        table.add_row(str(f.layer), f.state, f"{f.norms[0]:.3g}", f"{f.norms[-1]:.3g}",
                      f"{f.ratio:.3g}", f"{f.per_lag:.4g}")  # fmt: skip
    return table


def spectrum_table(result: grads.Gradients) -> Table:
    table = Table(
        title="recurrent matrices R (what multiplies h_{t-1}): the largest singular "
        "value of R, the spectral radius of each [H, H] block",
        title_justify="left",
    )
    for col in ("layer", "matrix", "largest s.v.", "block", "spectral radius"):
        table.add_column(col, justify="left" if col in ("matrix", "block") else "right")
    for s in result.spectra:
        if not s.matrices:
            table.add_row(str(s.layer), s.note, "", "", "")
        for m in s.matrices:
            shape = f"{m.name} [{m.shape[0]}, {m.shape[1]}]"
            for j, (block, radius) in enumerate(m.blocks):
                whole = (str(s.layer), shape, f"{m.sigma_max:.4g}") if j == 0 else ("", "", "")
                table.add_row(*whole, block, f"{radius:.4g}")
        table.add_section()
    return table


# The plot -------------------------------------------------------------------------------


def write_png(path: Path, result: grads.Gradients, title: str) -> None:
    """The curves on a log scale, as `charrnn plot` draws its pictures (plots.py)."""
    fig, ax = plots.figure()
    grads.draw(ax, result)
    ax.set_title(f"{title}: gradient through time", fontsize=10)
    ax.legend(fontsize=8)
    try:
        width, height = plots.save(fig, path)
        path.chmod(0o644)  # a picture to open and share, not a private temporary file
    except OSError as e:
        raise ConfigError(f"--png {path}: cannot write it ({e.strerror})") from None
    err.print(f"wrote {path} ({width} x {height})", style="dim")
