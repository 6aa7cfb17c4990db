"""Tracing: what a model computes over a text, step by step, and the names and ranges of it.

Owns: Trace, trace() (every layer's hidden state, cell state and gates over a sequence of
ids), trace_text() (a text read as training and sampling read it), the names of a cell's
trace keys (state_names, state_name, LABELS) and what the views show of each (activation,
value_range). It does not own the features of a text (features.py), rankings
(ranking.py), colours or the page (page.py), nor any printing.

The trace recomputes every step from the layers' own weights with the cell equations
(PyTorch's gate order: i, f, g, o for lstm; r, z, n for gru), so the gates it shows are
the ones the trained model computes: its final state equals forward()'s, and
tests/test_neurons.py checks each step against the torch modules themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def trace_text(model: RNNLanguageModel, tokenizer, text: str, on_unknown: str = "error") -> Trace:
    """Trace `text` as the model reads it in training and sampling: after <eos>, from a
    zero state. The <eos> step itself is dropped, so step t is the text's token t.
    `on_unknown` (error | skip | unk) is the tokenizer's: skipped symbols are no step."""
    ids = tokenizer.encode(text, on_unknown).tolist()
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
