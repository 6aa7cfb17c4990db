"""How the views show a trace: glyphs, the colour scale, and the self-contained HTML page.

Owns: glyph() (a token as the views print it), the colour scale (colour() for an
activation, shade() for a guess's probability, unit_scale() onto it), defined here once
and used by both views: the terminal view (cli/neurons.py) calls colour() and shade(),
and the page gets the same colours inside its data (page_colours()), so its JavaScript
holds no colour of its own. Also owns page_data() (the trace as the page's JSON, int8
activations: quantise()) and html_page() (that data filled into page.html, this
package's data file). It does not own printing, writing the file, nor the terminal view.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import unicodedata
from importlib import resources

import numpy as np

from charrnn.neurons.ranking import Ranked, gate_saturation
from charrnn.neurons.tracing import Trace, activation, label, state_names, value_range

RGB = tuple[int, int, int]


def glyph(token: str, space: str = " ") -> str:
    """One visible, one-column character for a token: ⏎ for a newline, ⇥ for a tab, `space`
    for a space, ◆ for <eos> (an empty token), · for anything unprintable or wide."""
    if token == "":
        return "◆"
    if len(token) > 1:
        return token
    if token == "\n":
        return "⏎"
    if token == "\t":
        return "⇥"
    if token == " ":
        return space
    wide = unicodedata.east_asian_width(token) in ("W", "F")
    return "·" if wide or not token.isprintable() else token


# The colour scale: white at 0, deepening to RED at +1 and BLUE at -1 (a gate's 0..1 is
# put on -1..+1 first, see unit_scale); a guess deepens from white to GREEN at p = 1.
RED, BLUE, GREEN = (214, 39, 40), (31, 119, 180), (44, 160, 44)


def colour(v: float) -> RGB:
    """An activation scaled to [-1, 1] -> white at 0, deepening to red at +1, blue at -1."""
    end, a = (RED if v > 0 else BLUE), min(abs(float(v)), 1.0)
    return tuple(round(255 + (e - 255) * a) for e in end)


def shade(p: float) -> RGB:
    """A probability -> white at 0, deepening to green at 1."""
    return tuple(round(255 + (e - 255) * min(max(float(p), 0.0), 1.0)) for e in GREEN)


def unit_scale(values: np.ndarray, name: str, cell: str) -> np.ndarray:
    """A trace key's activation mapped onto [-1, 1], the colour scale (gates: 0 -> -1)."""
    lo, _ = value_range(name, cell)
    return np.clip(values * 2 - 1 if lo == 0 else values, -1.0, 1.0)


def quantise(values: np.ndarray) -> np.ndarray:
    """Activations in [-1, 1] -> int8 in [-127, 127]: 1/127 is finer than any colour step."""
    return np.clip(np.round(values * 127), -127, 127).astype(np.int8)


def _css(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def page_colours() -> dict:
    """The colour scale as the page reads it: "activation", the colour of each stored
    int8 value q (see quantise) at index q + 127; "guess", the bar of a guess (shade(1))."""
    return {
        "activation": [_css(colour(q / 127)) for q in range(-127, 128)],
        "guess": _css(shade(1.0)),
    }


# The HTML page ------------------------------------------------------------------------


def page_data(tr: Trace, tokenizer, ranked: list[Ranked], ranking: dict, initial: dict) -> dict:
    """Everything the page shows, as JSON-able data. Activations are int8 (see quantise),
    base64 per (state, layer), laid out [T, H]: step t, neuron n is at t * H + n."""
    L, T, H = tr.values["h"].shape
    states = {}
    for name in state_names(tr.cell):
        acts = unit_scale(activation(tr, name), name, tr.cell)  # [L, T, H] in [-1, 1]
        states[name] = {
            "label": label(name),
            "range": value_range(name, tr.cell),  # what -1 and +1 of the stored scale stand for
            "layers": [base64.b64encode(quantise(acts[i]).tobytes()).decode() for i in range(L)],
        }
    guesses = [
        [[glyph(tokenizer.decode([int(i)]), "␣"), round(float(p), 4)] for i, p in zip(ids, ps)]
        for ids, ps in zip(tr.top_ids, tr.top_probs)
    ]
    gates = [
        {"layer": s.layer, "gate": s.gate, "left": float(s.left.mean()),
         "right": float(s.right.mean()), "mostly_left": int((s.left > 0.5).sum()),
         "mostly_right": int((s.right > 0.5).sum())}
        for s in gate_saturation(tr)
    ]  # fmt: skip
    rows = [
        {"layer": r.layer, "neuron": r.neuron, "score": r.score, "sign": r.sign} for r in ranked
    ]
    return {
        "cell": tr.cell, "layers": L, "hidden": H, "chars": list(tr.tokens), "states": states,
        "guesses": guesses, "gates": gates, "ranking": {**ranking, "rows": rows},
        "initial": initial, "colours": page_colours(),
    }  # fmt: skip


PLACEHOLDER = re.compile(r"__(TITLE|DATA)__")  # in page.html; filled in one pass


@functools.cache
def page_template() -> str:
    """page.html, read from the installed package (a wheel or a source tree alike)."""
    return resources.files("charrnn.neurons").joinpath("page.html").read_text(encoding="utf-8")


def _script_json(data) -> str:
    """JSON that is safe inside <script>: no </script>, and no // that could read as a URL."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("/", "\\/")


def html_page(data: dict, title: str) -> str:
    """One self-contained page: inline CSS and JS, the data as JSON, nothing fetched.
    Opened as page.html#selftest it switches the neuron through its own control, hovers
    a character, and records in <body data-selftest> whether the colours changed, the
    guesses showed, and nothing was fetched."""
    # One pass, so a title that spells __DATA__ stays a title.
    fills = {"TITLE": html.escape(title, quote=False), "DATA": _script_json(data)}
    return PLACEHOLDER.sub(lambda m: fills[m[1]], page_template())
