"""`charrnn inspect-neurons`: the terminal view, the rankings, gate statistics, the HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from charrnn import api, checkpoint, devices, neurons, tokenizers
from charrnn import sample as sampling
from charrnn.cli.app import RunDir, command, err, text_or_file
from charrnn.cli.options import DEFAULT, opt
from charrnn.errors import ConfigError
from charrnn.settings import SEED, at_least, not_negative, option
from charrnn.tokenizers import ON_UNKNOWN

FIND_HELP = (
    "Rank neurons by |Pearson r| with a feature: 'inside quotes', 'bracket depth', "
    "'position in line', 'indentation', 'start of word', 'inside a comment', or a regex "
    "(1 inside a match). Without it: by selectivity (kurtosis)."
)
STATE = option(
    "state", str | None, None,
    "What is shown and ranked: h, c (as tanh(c)) or gates.  [default: c, or h without c]",
    choices=("h", "c", "gates"),
)  # fmt: skip
COLOR = option(
    "color", str, "auto", "Colour the view: auto (a terminal, NO_COLOR unset), always or never.",
    choices=("auto", "always", "never"),
)  # fmt: skip
TOP = option("top", int, 10, "Neurons in the ranking (0: none).", check=not_negative)
MAX_CHARS = option("max_chars", int, 2000, "Trace at most this many characters.", check=at_least(1))
Text_ = Annotated[Optional[str], typer.Option("--text", metavar="TEXT", help="The text to read.")]
File = Annotated[
    Optional[Path], typer.Option("--file", metavar="FILE", help="Read the text from a file.")
]
Layer = Annotated[
    Optional[int],
    typer.Option(metavar="L", help="Layer shown and ranked (default: all; shown: the best)."),
]
Neuron = Annotated[
    Optional[int], typer.Option(metavar="N", help="Neuron shown (default: the best-ranked one).")
]
Gate = Annotated[
    Optional[str],
    typer.Option(metavar="NAME", help="With --state gates: which one (default: f, or the first)."),
]
Find = Annotated[Optional[str], typer.Option(metavar="FEATURE", help=FIND_HELP)]
GateStats = Annotated[bool, typer.Option("--gate-stats", help="Show each layer's gate saturation.")]
Html = Annotated[
    Optional[Path], typer.Option(metavar="FILE", help="Also write a self-contained HTML page.")
]


@command("inspect-neurons", summary="Show what each neuron of a run does over a text.")
def inspect_neurons(
    run_dir: RunDir,
    *,
    text: Text_ = None,
    file: File = None,
    layer: Layer = None,
    neuron: Neuron = None,
    gate: Gate = None,
    find: Find = None,
    gate_stats: GateStats = False,
    html: Html = None,
    state: opt(STATE) = None,
    top: opt(TOP) = DEFAULT,
    max_chars: opt(MAX_CHARS) = DEFAULT,
    on_unknown: opt(ON_UNKNOWN) = None,
    color: opt(COLOR) = DEFAULT,
    seed: opt(SEED) = DEFAULT,
    device: opt(devices.DEVICE) = DEFAULT,
):
    """Colour text by one neuron's activation with the model's guesses under it, rank the
    neurons, show gate saturation; the view goes to stdout. Features, the HTML page,
    clamping: docs/neurons.md."""
    text = text_or_file(text, file, ("--text", "--file"))
    dev = devices.resolve(device)
    run = api.load(run_dir, dev)
    model, tok = run.model, run.tokenizer
    on_unknown = tokenizers.on_unknown_or_default(tok, on_unknown)
    name = neurons.state_name(model.config.cell, default_state(model, state, gate), gate)
    source = inspection_text(model, tok, text, max_chars, on_unknown, seed, dev)
    tr = neurons.trace_text(model, tok, source, on_unknown)
    acts = neurons.activation(tr, name)  # [L, T, H]
    ranked, ranking, target = rank_neurons(tr, acts, find, top, layer)
    shown = shown_neuron(model.config, ranked, layer, neuron)
    if html is not None:
        write_page(html, run_dir, tr, tok, ranked, {**ranking, "state": name}, name, shown)
    out = view_console(color)
    plain = out.no_color or out.color_system is None
    render_view(out, tr, tok, acts, name, shown, target, ranking, plain)
    if top > 0:
        out.print(ranking_table(ranked, ranking, tr, plain))
    if gate_stats:
        render_gate_stats(out, tr)


def default_state(model, state: str | None, gate: str | None) -> str:
    if state is None:
        has_c = "c" in model.config.state_names
        return "gates" if gate is not None else "c" if has_c else "h"
    if gate is not None and state != "gates":
        raise ConfigError(f"--gate {gate} needs --state gates, not --state {state}")
    return state


def inspection_text(model, tok, text, max_chars: int, on_unknown: str, seed: int, dev):
    """--text or --file's text, or else a sample from the model; cut to --max-chars and
    checked for symbols the model never saw (tokenizers.unknown_note)."""
    if text is None:
        config = sampling.SampleConfig(length=min(max_chars, 500), stop_at_eos=False)
        generator = torch.Generator(dev).manual_seed(seed)
        text = sampling.sample_text(model, tok, "", config, generator)[0]
        err.print(
            f"no --text or --file: inspecting {len(text)} characters sampled from the model "
            f"(--seed {seed})",
            style="dim",
        )
    if not text:
        raise ConfigError("the text is empty; give some with --text or --file")
    if len(text) > max_chars:
        err.print(f"note: inspecting the first {max_chars:,} of {len(text):,} characters")
        text = text[:max_chars]
    note = tokenizers.unknown_note(tok, text, on_unknown)
    if note:
        err.print(note, markup=False, emoji=False)  # the symbols are the user's, not markup
    return text


def rank_neurons(tr, acts, find: str | None, top: int, layer: int | None):
    """(ranked, a description of the ranking, the feature [T] or None)."""
    k = max(top, 1)  # the best one is shown when no --neuron is given, even with --top 0
    if find is None:
        ranked = neurons.rank_by_selectivity(acts, k, layer)
        title = "most selective neurons: excess kurtosis of the activation over the text"
        return ranked, {"title": title, "score": "kurtosis"}, None
    feature, target = neurons.feature(find, tr.tokens)
    ranked = neurons.rank_by_feature(acts, target, k, layer)
    title = f"neurons most correlated with {feature} (Pearson r over {len(target):,} characters)"
    return ranked, {"title": title, "score": "|r|", "feature": feature}, target


def shown_neuron(config, ranked, layer: int | None, neuron: int | None) -> tuple[int, int]:
    """(layer, neuron) of the view: --neuron (in --layer, default 0), or the best-ranked one."""
    if neuron is None:
        return ranked[0].layer, ranked[0].neuron
    if not 0 <= neuron < config.hidden:
        raise ConfigError(
            f"--neuron {neuron} is out of range: a layer has neurons 0..{config.hidden - 1}"
        )
    return (layer if layer is not None else 0), neuron


def write_page(path: Path, run: Path, tr, tok, ranked, ranking, name, shown) -> None:
    initial = {"layer": shown[0], "state": name, "neuron": shown[1]}
    page = neurons.html_page(neurons.page_data(tr, tok, ranked, ranking, initial), f"{run}")
    try:
        checkpoint.atomic_write(path, page.encode("utf-8"))
        path.chmod(0o644)  # a page to open and share, not a private temporary file
    except OSError as e:
        raise ConfigError(f"{path}: cannot write it ({e.strerror})") from None
    err.print(f"wrote {path} ({len(page.encode()) / 1024:,.0f} KiB); open it in a browser")


def view_console(color: str) -> Console:
    if color == "always":
        return Console(force_terminal=True, color_system="truecolor", no_color=False,
                       highlight=False)  # fmt: skip
    if color == "never":
        return Console(color_system=None, highlight=False)
    return Console(highlight=False)  # rich: colour only on a terminal, and not with NO_COLOR


def _rgb(rgb: tuple[int, int, int]) -> str:
    return f"black on rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def view_rows(tokens, width: int) -> list[range]:
    """Steps per screen row: a row ends after a newline or when it fills the width (a
    word or subword token takes as many columns as it has characters)."""
    rows, start, used = [], 0, 0
    for t, token in enumerate(tokens):
        cells = len(neurons.glyph(token))
        if used and used + cells > width:
            rows.append(range(start, t))
            start, used = t, 0
        used += cells
        if token.endswith("\n") or used >= width:
            rows.append(range(start, t + 1))
            start, used = t + 1, 0
    if start < len(tokens):
        rows.append(range(start, len(tokens)))
    return rows


def view_lines(row: range, tr, tok, values, plain: bool) -> list[Text]:
    """The text coloured by the neuron (plain: a digit row under it, 0 = -1 .. 9 = +1),
    then one line per guess rank, each guess shaded by its probability. Each step takes
    as many columns as its token; a guess is cut or padded to fit them."""
    widths = {t: len(neurons.glyph(tr.tokens[t])) for t in row}
    text = Text()
    for t in row:
        text.append(neurons.glyph(tr.tokens[t]), None if plain else _rgb(neurons.colour(values[t])))
    lines = [text]
    if plain:
        lines.append(Text("".join(str(round((values[t] + 1) * 4.5)) * widths[t] for t in row)))
    for k in range(tr.top_ids.shape[1]):
        guesses = Text()
        for t in row:
            g = neurons.glyph(tok.decode([int(tr.top_ids[t, k])]), "␣")[: widths[t]]
            guesses.append(
                g.ljust(widths[t]), None if plain else _rgb(neurons.shade(tr.top_probs[t, k]))
            )
        lines.append(guesses)
    return lines


def render_view(out: Console, tr, tok, acts, name, shown, target, ranking, plain) -> None:
    layer, neuron = shown
    values = neurons.unit_scale(acts[layer, :, neuron], name, tr.cell)  # [T] in [-1, 1]
    unit = "characters" if tok.tokenizer == "char" else "tokens"
    head = f"layer {layer}, neuron {neuron}: {neurons.label(name)} over {len(values):,} {unit}"
    if target is not None:
        r = neurons.pearson(acts[layer, :, neuron][None].astype("float64"), target)[0]
        head += f"; r = {r:+.3f} with {ranking['feature']}"
    scale = "0 to 1" if neurons.value_range(name, tr.cell)[0] == 0 else "-1 to +1"
    legend = (
        f"under each line: the activation as a digit, 0 to 9 for {scale}; then the model's 5 "
        f"likeliest next {unit}, likeliest first"
        if plain
        else f"background: blue, white, red for {scale}; under each line: the model's 5 "
        f"likeliest next {unit}, greener = likelier"
    )
    out.print(Text(head, style="bold"), soft_wrap=True)
    out.print(Text(legend, style="dim"), soft_wrap=True)
    for row in view_rows(tr.tokens, max(out.width, 10)):
        for line in view_lines(row, tr, tok, values, plain):
            out.print(line, soft_wrap=True)
        out.print()


def context_text(tokens, context, plain: bool) -> Text:
    text = Text(f"{context.value:+.2f}  ", style="dim")
    for t in range(context.start, context.end):
        g = neurons.glyph(tokens[t])
        if t == context.peak:
            text.append(f"«{g}»" if plain else g, "bold reverse")
        else:
            text.append(g)
    return text


def ranking_table(ranked, ranking, tr, plain: bool) -> Table:
    table = Table(title=ranking["title"], title_justify="left")
    for col in ("#", "layer", "neuron", ranking["score"]):
        table.add_column(col, justify="right")
    if "feature" in ranking:
        table.add_column("sign")
    table.add_column("strongest contexts (" + ("«»" if plain else "reversed") + ": most active)")
    for k, r in enumerate(ranked, 1):
        cells = [str(k), str(r.layer), str(r.neuron), f"{r.score:.3f}"]
        if "feature" in ranking:
            cells.append("+" if r.sign > 0 else "-")
        contexts = Text("\n").join(context_text(tr.tokens, c, plain) for c in r.contexts)
        table.add_row(*cells, contexts)
    return table


GATE_NAMES = {"i": "input", "f": "forget", "o": "output", "r": "reset", "z": "update"}


def render_gate_stats(out: Console, tr) -> None:
    stats = neurons.gate_saturation(tr)
    if not stats:
        out.print(f"gate saturation: a {tr.cell} has no gates")
        return
    table = Table(
        title="gate saturation: fraction of characters a gate is < 0.1 (left) or > 0.9 "
        "(right), mean over units; units saturated more than half of the time",
        title_justify="left",
    )
    for col in ("layer", "gate", "left", "right", "units mostly left", "units mostly right"):
        table.add_column(col, justify="right")
    for s in stats:
        table.add_row(
            str(s.layer), f"{s.gate} ({GATE_NAMES[s.gate]})", f"{s.left.mean():.1%}",
            f"{s.right.mean():.1%}", f"{(s.left > 0.5).sum()}/{len(s.left)}",
            f"{(s.right > 0.5).sum()}/{len(s.right)}",
        )  # fmt: skip
    out.print(table)
