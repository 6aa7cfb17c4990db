"""Looking inside a trained model: what each neuron does over a text.

Owns: tracing every layer's hidden state, cell state and gates step by step, the
features of a text that neurons are compared with (bracket depth, inside quotes, ...,
or any regex), ranking neurons (by correlation with a feature, or by selectivity),
gate saturation per layer (Karpathy, Johnson & Fei-Fei 2015, figure 3), and the
self-contained HTML page. It does not own printing or the terminal view (the cli package renders
the values returned here), nor reading files.

The trace recomputes every step from the layers' own weights with the cell equations
(PyTorch's gate order: i, f, g, o for lstm; r, z, n for gru), so the gates it shows are
the ones the trained model computes: its final state equals forward()'s, and
tests/test_neurons.py checks each step against the torch modules themselves.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from charrnn.model import RNNLanguageModel, State

# What a trace holds per cell, besides h: the cell state and the gates, in PyTorch's order.
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ()}
SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z")}  # the ones that saturate at 0, 1
LABELS = {
    "h": "hidden state h",
    "c": "tanh(cell state c)",
    "i": "input gate i",
    "f": "forget gate f",
    "g": "cell candidate g",
    "o": "output gate o",
    "r": "reset gate r",
    "z": "update gate z",
    "n": "new gate n",
}
TOP = 5  # next-token guesses kept per step


@dataclass(frozen=True, eq=False)
class Trace:
    """Everything a model computed over a text, one step per token."""

    cell: str  # lstm | gru | rnn
    ids: np.ndarray  # [T] the token read at each step
    values: dict[str, np.ndarray]  # "h", "c" (raw, lstm), gate letters -> [L, T, H] after step t
    top_ids: np.ndarray  # [T, K] the K likeliest next tokens after step t, likeliest first
    top_probs: np.ndarray  # [T, K] their probabilities
    final: State  # the state after the last step, as forward() returns it: each [L, 1, H]
    tokens: tuple[str, ...] = ()  # the text of each token, when traced from text


# Tracing ------------------------------------------------------------------------------


def _weights(layer) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A single-layer torch module's own parameters: W_ih, W_hh, b_ih, b_hh."""
    return layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0


def _lstm(x: Tensor, layer, h: Tensor, c: Tensor) -> dict[str, Tensor]:
    """One lstm layer over x [T, In] from h, c [H] -> h, c, i, f, g, o, each [T, H]."""
    w_ih, w_hh, b_ih, b_hh = _weights(layer)
    x_part = x @ w_ih.T + b_ih  # [T, 4H]: the input's share of every step, all at once
    out: dict[str, list[Tensor]] = {k: [] for k in "hcifgo"}
    for t in range(x.shape[0]):
        i, f, g, o = (x_part[t] + h @ w_hh.T + b_hh).chunk(4)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = f * c + i * g
        h = o * c.tanh()
        for k, v in zip("hcifgo", (h, c, i, f, g, o)):
            out[k].append(v)
    return {k: torch.stack(v) for k, v in out.items()}


def _gru(x: Tensor, layer, h: Tensor) -> dict[str, Tensor]:
    """One gru layer over x [T, In] from h [H] -> h, r, z, n, each [T, H]."""
    w_ih, w_hh, b_ih, b_hh = _weights(layer)
    x_part = x @ w_ih.T + b_ih  # [T, 3H]
    out: dict[str, list[Tensor]] = {k: [] for k in "hrzn"}
    for t in range(x.shape[0]):
        xr, xz, xn = x_part[t].chunk(3)
        hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3)
        r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
        n = (xn + r * hn).tanh()  # the reset gate scales the state's share only
        h = (1 - z) * n + z * h
        for k, v in zip("hrzn", (h, r, z, n)):
            out[k].append(v)
    return {k: torch.stack(v) for k, v in out.items()}


def _rnn(x: Tensor, layer, h: Tensor) -> dict[str, Tensor]:
    """One tanh rnn layer over x [T, In] from h [H] -> h [T, H]."""
    w_ih, w_hh, b_ih, b_hh = _weights(layer)
    x_part = x @ w_ih.T + b_ih  # [T, H]
    hs = []
    for t in range(x.shape[0]):
        h = (x_part[t] + h @ w_hh.T + b_hh).tanh()
        hs.append(h)
    return {"h": torch.stack(hs)}


@torch.inference_mode()
def trace(model: RNNLanguageModel, ids: Sequence[int], state: State | None = None) -> Trace:
    """Run `model` over one sequence of ids [T], keeping every layer's h, c and gates."""
    model.eval()
    cell = model.config.cell
    device = model.decoder.weight.device
    if state is None:
        state = model.initial_state(1, device)
    x = model.embed(torch.as_tensor(np.asarray(ids), device=device).long())  # [T] -> [T, E]
    per_layer = []
    for i, layer in enumerate(model.layers):
        h0 = state[0][i, 0]  # [H]
        if cell == "lstm":
            out = _lstm(x, layer, h0, state[1][i, 0])
        else:
            out = (_gru if cell == "gru" else _rnn)(x, layer, h0)
        per_layer.append(out)
        x = out["h"]  # [T, H] feeds the next layer (dropout is off in eval)
    probs = model.decoder(x).float().softmax(-1)  # [T, H] -> [T, V]
    top = probs.topk(min(TOP, probs.shape[-1]), dim=-1)
    values = {k: torch.stack([out[k] for out in per_layer]) for k in per_layer[0]}  # [L, T, H]
    final_keys = ("h", "c") if cell == "lstm" else ("h",)
    return Trace(
        cell=cell,
        ids=np.asarray(ids),
        values={k: v.float().cpu().numpy() for k, v in values.items()},
        top_ids=top.indices.cpu().numpy(),
        top_probs=top.values.cpu().numpy(),
        final=tuple(values[k][:, -1:].clone() for k in final_keys),  # [L, 1, H]
    )


def trace_text(model: RNNLanguageModel, tokenizer, text: str) -> Trace:
    """Trace `text` as the model reads it in training and sampling: after <eos>, from a
    zero state. The <eos> step itself is dropped, so step t is the text's token t."""
    ids = tokenizer.encode(text).tolist()
    tr = trace(model, [tokenizer.eos_id, *ids])
    return replace(
        tr,
        ids=tr.ids[1:],
        values={k: v[:, 1:] for k, v in tr.values.items()},
        top_ids=tr.top_ids[1:],
        top_probs=tr.top_probs[1:],
        tokens=tuple(tokenizer.decode([i]) for i in ids),
    )


def state_names(cell: str) -> tuple[str, ...]:
    """Every trace key of a cell: "h", then "c" for lstm, then its gates."""
    return ("h", "c", *GATES[cell]) if cell == "lstm" else ("h", *GATES[cell])


def state_name(cell: str, state: str, gate: str | None) -> str:
    """--state h|c|gates and --gate -> a trace key; ValueError naming what the cell has."""
    if state == "h":
        return "h"
    if state == "c":
        if cell != "lstm":
            raise ValueError(f"a {cell} has no cell state c; use --state h or --state gates")
        return "c"
    if state != "gates":
        raise ValueError(f"--state must be h, c or gates, not {state!r}")
    if not GATES[cell]:
        raise ValueError(f"a {cell} has no gates; use --state h")
    gate = gate if gate is not None else ("f" if cell == "lstm" else "z")
    if gate not in GATES[cell]:
        raise ValueError(f"a {cell} has gates {'|'.join(GATES[cell])}, not {gate!r}")
    return gate


def activation(tr: Trace, name: str) -> np.ndarray:
    """What the views show for a trace key, [L, T, H]: tanh(c) for the cell state (bounded,
    like h, so one colour scale fits), everything else as computed."""
    return np.tanh(tr.values[name]) if name == "c" else tr.values[name]


def value_range(name: str) -> tuple[float, float]:
    """The range a trace key's activation lives in: sigmoid gates [0, 1], the rest [-1, 1]."""
    return (0.0, 1.0) if name in ("i", "f", "o", "r", "z") else (-1.0, 1.0)


# Features of a text -------------------------------------------------------------------
# Each gives one number per character: the feature's value AFTER reading that character,
# which is what the state after that step can know.


def _quotes(text: str) -> list[str | None]:
    """The open quote character after each character, or None."""
    quote, escaped, out = None, False, []
    for t, ch in enumerate(text):
        if quote is None:
            apostrophe = ch == "'" and t > 0 and text[t - 1].isalnum()  # don't, it's
            if ch in "\"'" and not apostrophe:
                quote = ch
        elif escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == quote:
            quote = None
        out.append(quote)
    return out


def inside_quotes(text: str) -> np.ndarray:
    """1 from an opening " or ' up to, not including, its closing one (\\" escapes)."""
    return np.array([q is not None for q in _quotes(text)], dtype=float)


def bracket_depth(text: str) -> np.ndarray:
    """How many ( [ { are open: +1 at an opening bracket, -1 at a closing one, never below 0."""
    depth, out = 0, []
    for ch in text:
        depth = depth + 1 if ch in "([{" else max(depth - 1, 0) if ch in ")]}" else depth
        out.append(depth)
    return np.array(out, dtype=float)


def position_in_line(text: str) -> np.ndarray:
    """Characters read since the last newline: 0 at a newline, 1 at a line's first character."""
    pos, out = 0, []
    for ch in text:
        pos = 0 if ch == "\n" else pos + 1
        out.append(pos)
    return np.array(out, dtype=float)


def indentation(text: str) -> np.ndarray:
    """Leading spaces and tabs of the current line, as far as they have been read."""
    indent, leading, out = 0, True, []
    for ch in text:
        if ch == "\n":
            indent, leading = 0, True
        elif leading and ch in " \t":
            indent += 1
        else:
            leading = False
        out.append(indent)
    return np.array(out, dtype=float)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def start_of_word(text: str) -> np.ndarray:
    """1 on a word's first character (a letter, digit or _ after anything else)."""
    return np.array(
        [_is_word(ch) and (t == 0 or not _is_word(text[t - 1])) for t, ch in enumerate(text)],
        dtype=float,
    )


def inside_comment(text: str) -> np.ndarray:
    """1 from a # outside quotes to the end of its line (the newline itself is 0)."""
    quotes, inside, out = _quotes(text), False, []
    for ch, quote in zip(text, quotes):
        if ch == "\n":
            inside = False
        elif ch == "#" and quote is None:
            inside = True
        out.append(inside)
    return np.array(out, dtype=float)


FEATURES: dict[str, Callable[[str], np.ndarray]] = {
    "inside quotes": inside_quotes,
    "bracket depth": bracket_depth,
    "position in line": position_in_line,
    "indentation": indentation,
    "start of word": start_of_word,
    "inside a comment": inside_comment,
}


def regex_feature(text: str, pattern: re.Pattern) -> np.ndarray:
    """1 on every character inside a match of `pattern` (multiline: ^ and $ match at lines)."""
    out = np.zeros(len(text))
    for m in pattern.finditer(text):
        out[m.start() : m.end()] = 1.0
    return out


def feature(spec: str, tokens: Sequence[str]) -> tuple[str, np.ndarray]:
    """(name, value per token [T]) of a built-in feature, or else of `spec` as a regex.

    Features are computed on the characters; a token of several characters takes the
    value after its last one.
    """
    text = "".join(tokens)
    key = re.sub(r"[-_\s]+", " ", spec.strip().lower())
    if key in FEATURES:
        name, per_char = key, FEATURES[key](text)
    else:
        try:
            pattern = re.compile(spec, re.MULTILINE)
        except re.error as e:
            names = ", ".join(FEATURES)
            raise ValueError(
                f"--find {spec!r} is neither a built-in feature ({names}) nor a regex ({e})"
            ) from None
        name, per_char = f"regex /{spec}/", regex_feature(text, pattern)
    ends = np.cumsum([len(t) for t in tokens]) - 1  # each token's last character
    return name, per_char[ends]


# Ranking neurons ----------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    start: int  # first step of the snippet
    peak: int  # the step where the neuron is most active
    end: int  # one past the last step
    value: float  # the activation at the peak


@dataclass(frozen=True)
class Ranked:
    layer: int
    neuron: int
    score: float  # the ranking key, higher first: |r| with a feature, or the kurtosis
    sign: int  # +1: high where the feature is high (or bursts upward); -1: the other way
    contexts: tuple[Context, ...]  # where the neuron is most active in the sign's direction


def pearson(acts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson r of each row of acts [N, T] with target [T] -> [N]; 0 for a constant row."""
    a = acts - acts.mean(axis=1, keepdims=True)
    f = target - target.mean()
    denom = np.sqrt((a * a).sum(axis=1) * (f @ f))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (a @ f) / denom, 0.0)


QUIET = 0.1  # a neuron whose activation's std is below this is quiet, not selective


def selectivity(acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(excess kurtosis, sign of the skew) of each row of acts [N, T].

    Kurtosis is high for a neuron that sits near one value and leaves it rarely and far:
    a detector. Quiet rows (std < QUIET) score 0: their bursts are invisible in a view.
    """
    a = acts - acts.mean(axis=1, keepdims=True)
    m2, m3, m4 = (a**2).mean(axis=1), (a**3).mean(axis=1), (a**4).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kurtosis = np.where(m2 > QUIET**2, m4 / m2**2 - 3.0, 0.0)
    return kurtosis, np.where(m3 < 0, -1, 1)


def contexts(values: np.ndarray, sign: int, k: int = 3, before: int = 18, after: int = 6):
    """The k steps where sign * values [T] is highest, at least a snippet apart, as Contexts."""
    order = np.argsort(-sign * values, kind="stable")
    picked: list[int] = []
    for t in order[: 50 * k].tolist():
        if all(abs(t - p) > before + after for p in picked):
            picked.append(t)
        if len(picked) == k:
            break
    T = len(values)
    return tuple(
        Context(max(t - before, 0), t, min(t + after + 1, T), float(values[t])) for t in picked
    )


def _units(acts: np.ndarray) -> np.ndarray:
    """[L, T, H] -> [L*H, T] in float64: one row per unit, layer by layer."""
    L, T, H = acts.shape
    return acts.transpose(0, 2, 1).reshape(L * H, T).astype(np.float64)


def _check_layer(acts: np.ndarray, layer: int | None) -> None:
    if layer is not None and not 0 <= layer < acts.shape[0]:
        raise ValueError(
            f"--layer {layer} is out of range: the model has layers 0..{acts.shape[0] - 1}"
        )


def _top(acts, scores, signs, top: int, layer: int | None) -> list[Ranked]:
    """The `top` best units of acts [L, T, H] by scores [L*H] (one layer's only, if given)."""
    H = acts.shape[2]
    order = np.argsort(-scores, kind="stable").tolist()  # unit u is layer u // H, neuron u % H
    order = [u for u in order if layer is None or u // H == layer][:top]
    return [
        Ranked(u // H, u % H, float(scores[u]), int(signs[u]),
               contexts(acts[u // H, :, u % H], int(signs[u])))
        for u in order
    ]  # fmt: skip


def rank_by_feature(
    acts: np.ndarray, target: np.ndarray, top: int = 10, layer: int | None = None
) -> list[Ranked]:
    """Units of acts [L, T, H] ranked by |Pearson r| with target [T], best first."""
    _check_layer(acts, layer)
    if np.ptp(target) == 0:
        raise ValueError(
            "the feature is the same on every character of the text, so no neuron can "
            "correlate with it; give text where it varies"
        )
    r = pearson(_units(acts), target)  # [L*H]
    return _top(acts, np.abs(r), np.where(r < 0, -1, 1), top, layer)


def rank_by_selectivity(acts: np.ndarray, top: int = 10, layer: int | None = None) -> list[Ranked]:
    """Units of acts [L, T, H] ranked by selectivity (see `selectivity`), best first."""
    _check_layer(acts, layer)
    kurtosis, signs = selectivity(_units(acts))
    return _top(acts, kurtosis, signs, top, layer)


# Gates --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GateStats:
    layer: int
    gate: str  # i, f, o (lstm) or r, z (gru)
    left: np.ndarray  # [H] fraction of steps each unit's gate is < low
    right: np.ndarray  # [H] fraction of steps each unit's gate is > high


def gate_saturation(tr: Trace, low: float = 0.1, high: float = 0.9) -> list[GateStats]:
    """How often each sigmoid gate of each layer is left- (< low) or right-saturated
    (> high) over the trace: Karpathy et al. (2015), figure 3. Empty for an rnn."""
    stats = []
    for gate in SIGMOID_GATES.get(tr.cell, ()):
        values = tr.values[gate]  # [L, T, H]
        for layer in range(values.shape[0]):
            v = values[layer]
            stats.append(GateStats(layer, gate, (v < low).mean(0), (v > high).mean(0)))
    return sorted(stats, key=lambda s: s.layer)


# Rendering helpers shared by the views ------------------------------------------------


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


def quantise(values: np.ndarray) -> np.ndarray:
    """Activations in [-1, 1] -> int8 in [-127, 127]: 1/127 is finer than any colour step."""
    return np.clip(np.round(values * 127), -127, 127).astype(np.int8)


def _script_json(data) -> str:
    """JSON that is safe inside <script>: no </script>, and no // that could read as a URL."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("/", "\\/")


RED, BLUE, GREEN = (214, 39, 40), (31, 119, 180), (44, 160, 44)


def colour(v: float) -> tuple[int, int, int]:
    """An activation scaled to [-1, 1] -> white at 0, deepening to red at +1, blue at -1."""
    end, a = (RED if v > 0 else BLUE), min(abs(float(v)), 1.0)
    return tuple(round(255 + (e - 255) * a) for e in end)


def shade(p: float) -> tuple[int, int, int]:
    """A probability -> white at 0, deepening to green at 1."""
    return tuple(round(255 + (e - 255) * min(max(float(p), 0.0), 1.0)) for e in GREEN)


def unit_scale(values: np.ndarray, name: str) -> np.ndarray:
    """A trace key's activation mapped onto [-1, 1], the colour scale (gates: 0 -> -1)."""
    lo, _ = value_range(name)
    return values * 2 - 1 if lo == 0 else values


# The HTML page ------------------------------------------------------------------------


def page_data(tr: Trace, tokenizer, ranked: list[Ranked], ranking: dict, initial: dict) -> dict:
    """Everything the page shows, as JSON-able data. Activations are int8 (see quantise),
    base64 per (state, layer), laid out [T, H]: step t, neuron n is at t * H + n."""
    L, T, H = tr.values["h"].shape
    states = {}
    for name in state_names(tr.cell):
        acts = unit_scale(activation(tr, name), name)  # [L, T, H] in [-1, 1]
        states[name] = {
            "label": LABELS[name],
            "range": value_range(name),  # what -1 and +1 of the stored scale stand for
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
        "initial": initial,
    }  # fmt: skip


def html_page(data: dict, title: str) -> str:
    """One self-contained page: inline CSS and JS, the data as JSON, nothing fetched.
    Opened as page.html#selftest it switches the neuron through its own control, hovers
    a character, and records in <body data-selftest> whether the colours changed, the
    guesses showed, and nothing was fetched."""
    esc = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _PAGE.replace("__TITLE__", esc).replace("__DATA__", _script_json(data))


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 0; color: #222; }
header { position: sticky; top: 0; background: #f4f4f4; padding: 8px 12px;
  border-bottom: 1px solid #ccc; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
header h1 { font-size: 15px; margin: 0; }
#info { color: #555; }
main { display: flex; gap: 16px; padding: 12px; align-items: flex-start; }
#text { font: 14px/1.7 ui-monospace, monospace; white-space: pre-wrap; word-break: break-all;
  flex: 1 1 60%; }
#text span { cursor: default; }
#text span.nl { color: #999; }
#text span.at { outline: 2px solid #000; }
aside { flex: 0 0 34%; position: sticky; top: 56px; }
#guesses { font: 13px ui-monospace, monospace; min-height: 9em; border: 1px solid #ddd;
  padding: 6px; margin-bottom: 12px; }
#guesses .bar { display: inline-block; height: 0.9em; background: rgb(44,160,44);
  vertical-align: middle; margin: 0 6px; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 12px; width: 100%; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
td, th { border-bottom: 1px solid #eee; padding: 2px 6px; text-align: right; }
#ranking tbody tr { cursor: pointer; }
#ranking tbody tr:hover, #ranking tr.on { background: #fff3c4; }
.legend { font-size: 12px; color: #555; }
</style>
</head>
<body>
<header>
<h1>__TITLE__</h1>
<label>layer <select id="layer"></select></label>
<label>state <select id="state"></select></label>
<label>neuron <input id="neuron" type="number" min="0" step="1" style="width: 6em"></label>
<span id="info"></span>
<span class="legend">blue -1 &middot; white 0 &middot; red +1 (gates: 0 to 1)</span>
</header>
<main>
<div id="text"></div>
<aside>
<div id="guesses">Hover over a character: the 5 likeliest next characters.</div>
<table id="ranking"><caption></caption><thead></thead><tbody></tbody></table>
<table id="gates"><caption>Gate saturation: fraction of steps &lt; 0.1 (left) or &gt; 0.9
(right), mean over units; units saturated more than half the time</caption>
<thead><tr><th>layer</th><th>gate</th><th>left</th><th>right</th><th>units left</th>
<th>units right</th></tr></thead><tbody></tbody></table>
</aside>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const H = D.hidden, T = D.chars.length;
const $ = (id) => document.getElementById(id);
const layerBox = $("layer"), stateBox = $("state"), neuronBox = $("neuron");
const cache = {};

function values(state, layer) {  // Int8Array [T * H], decoded once
  const key = state + "/" + layer;
  if (!cache[key]) {
    const bytes = atob(D.states[state].layers[layer]);
    const a = new Int8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) a[i] = (bytes.charCodeAt(i) << 24) >> 24;
    cache[key] = a;
  }
  return cache[key];
}

function colour(v) {  // v in [-1, 1]: white at 0, red at +1, blue at -1 (as in the terminal)
  const end = v > 0 ? [214, 39, 40] : [31, 119, 180], a = Math.min(Math.abs(v), 1);
  return "rgb(" + end.map((e) => Math.round(255 + (e - 255) * a)).join(",") + ")";
}

function option(box, value, text) {
  const o = document.createElement("option");
  o.value = value; o.textContent = text; box.append(o);
}

const spans = [];
function buildText() {
  const box = $("text");
  D.chars.forEach((ch, t) => {
    const s = document.createElement("span");
    s.textContent = ch === "\\n" ? "\\u23ce\\n" : ch;
    if (ch === "\\n") s.className = "nl";
    s.dataset.t = t;
    box.append(s);
    spans.push(s);
  });
}

function current() {
  const n = Math.max(0, Math.min(H - 1, Math.floor(Number(neuronBox.value) || 0)));
  return { layer: Number(layerBox.value), state: stateBox.value, neuron: n };
}

function paint() {  // the one code path every control goes through
  const c = current(), vals = values(c.state, c.layer);
  for (let t = 0; t < T; t++) spans[t].style.backgroundColor = colour(vals[t * H + c.neuron] / 127);
  $("info").textContent =
    "layer " + c.layer + ", neuron " + c.neuron + ": " + D.states[c.state].label;
  for (const tr of $("ranking").tBodies[0].rows) {
    tr.classList.toggle("on", tr.dataset.key === c.state + "/" + c.layer + "/" + c.neuron);
  }
}

function select(layer, state, neuron) {
  layerBox.value = layer; stateBox.value = state; neuronBox.value = neuron;
  paint();
}

function showGuesses(t) {
  const c = current(), [lo, hi] = D.states[c.state].range;
  const v = lo + ((values(c.state, c.layer)[t * H + c.neuron] / 127 + 1) / 2) * (hi - lo);
  const box = $("guesses");
  box.textContent = "";
  const head = document.createElement("div");
  head.textContent = "after " + JSON.stringify(D.chars[t]) + " (step " + t + "): activation " +
    v.toFixed(2);
  box.append(head);
  for (const [g, p] of D.guesses[t]) {
    const row = document.createElement("div"), bar = document.createElement("span");
    bar.className = "bar"; bar.style.width = Math.round(p * 120) + "px";
    row.append(g, bar, (100 * p).toFixed(1) + "%");
    box.append(row);
  }
}

function buildTables() {
  const r = $("ranking");
  r.caption.textContent = D.ranking.title;
  const signed = "feature" in D.ranking;  // a sign means something for a correlation only
  const head = r.tHead.insertRow();
  for (const name of ["#", "layer", "neuron", D.ranking.score, ...(signed ? ["sign"] : [])]) {
    head.append(Object.assign(document.createElement("th"), { textContent: name }));
  }
  D.ranking.rows.forEach((row, k) => {
    const tr = r.tBodies[0].insertRow();
    tr.dataset.key = D.ranking.state + "/" + row.layer + "/" + row.neuron;
    const cells = [k + 1, row.layer, row.neuron, row.score.toFixed(3)];
    if (signed) cells.push(row.sign > 0 ? "+" : "-");
    for (const cell of cells) tr.insertCell().textContent = cell;
    tr.addEventListener("click", () => select(row.layer, D.ranking.state, row.neuron));
  });
  const g = $("gates").tBodies[0];
  if (!D.gates.length) g.insertRow().insertCell().textContent = "a " + D.cell + " has no gates";
  for (const s of D.gates) {
    const tr = g.insertRow();
    for (const cell of [s.layer, s.gate, (100 * s.left).toFixed(1) + "%",
      (100 * s.right).toFixed(1) + "%", s.mostly_left, s.mostly_right]) {
      tr.insertCell().textContent = cell;
    }
  }
}

function selftest() {  // page.html#selftest: switch neuron via its control, hover a character
  const before = spans.map((s) => s.style.backgroundColor).join(";");
  neuronBox.value = (current().neuron + 1) % H;
  neuronBox.dispatchEvent(new Event("change"));
  const after = spans.map((s) => s.style.backgroundColor).join(";");
  spans[0].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
  const guesses = $("guesses").children.length - 1;  // a heading, then one row per guess
  const fetched = performance.getEntriesByType("resource").length;
  const ok = before !== after && guesses === D.guesses[0].length && fetched === 0;
  document.body.dataset.selftest = ok ? "pass" : "fail";
  document.body.dataset.selftestDetail =
    "changed=" + (before !== after) + " guesses=" + guesses + " fetched=" + fetched;
}

for (let i = 0; i < D.layers; i++) option(layerBox, i, String(i));
for (const name of Object.keys(D.states)) option(stateBox, name, D.states[name].label);
neuronBox.max = H - 1;
buildText();
buildTables();
for (const box of [layerBox, stateBox, neuronBox]) {
  box.addEventListener("change", paint);
  box.addEventListener("input", paint);
}
$("text").addEventListener("mouseover", (e) => {
  if (e.target.dataset && e.target.dataset.t !== undefined) showGuesses(Number(e.target.dataset.t));
});
select(D.initial.layer, D.initial.state, D.initial.neuron);
if (location.hash === "#selftest") selftest();
</script>
</body>
</html>
"""
