"""Tracing: what a model computes over a text, step by step, and the names and ranges of it.

Owns: Trace, trace() (every layer's hidden state, cell state and gates over a sequence of
ids), trace_text() (a text read as training and sampling read it), the names of a cell's
trace keys (state_names, state_name, LABELS) and what the views show of each (activation,
value_range). It does not own the features of a text (features.py), rankings
(ranking.py), colours or the page (page.py), nor any printing.

The trace runs the model one step at a time through its step interface (model.step), with
an observer that keeps each layer's states and gates: the gates it shows are the ones the
cell computes (cells.py), and its final state equals forward()'s (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from charrnn.cells import CELLS
from charrnn.errors import ConfigError
from charrnn.model import RNNLanguageModel, State
from charrnn.sample import continuation

LABELS = {  # how the views name what a trace holds; a name not here is shown as itself
    "h": "hidden state h",
    "c": "tanh(cell state c)",
    "i": "input gate i",
    "f": "forget gate f",
    "g": "cell candidate g",
    "o": "output gate o",
    "r": "reset gate r",
    "z": "update gate z",
    "n": "new gate n",
    "m": "multiplicative state m",
    "h_tilde": "candidate h~",
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


@torch.inference_mode()
def trace(model: RNNLanguageModel, ids: Sequence[int], state: State | None = None) -> Trace:
    """Run `model` over one sequence of ids [T] a step at a time (model.step, as sampling
    runs it), keeping every layer's states and gates after each step."""
    model.eval()
    device = model.decoder.weight.device
    state = state if state is not None else model.initial_state(1, device)
    seen: list[list[dict[str, Tensor]]] = []  # [T][L] {name: [1, H]}
    logits = []
    for token in np.asarray(ids).tolist():
        seen.append([])
        out, state = model.step(
            torch.tensor([token], device=device), state, observe=lambda i, v: seen[-1].append(v)
        )
        logits.append(out[0])  # [V]
    probs = torch.stack(logits).float().softmax(-1)  # [T, V]
    top = probs.topk(min(TOP, probs.shape[-1]), dim=-1)
    values = {  # name -> [L, T, H]
        k: torch.stack([torch.cat([step[i][k] for step in seen]) for i in range(len(seen[0]))])
        for k in seen[0][0]
    }
    return Trace(
        cell=model.config.cell,
        ids=np.asarray(ids),
        values={k: v.float().cpu().numpy() for k, v in values.items()},
        top_ids=top.indices.cpu().numpy(),
        top_probs=top.values.cpu().numpy(),
        final=tuple(s.clone() for s in state),  # each [L, 1, H]
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
        tokens=tuple(
            continuation(tokenizer, [tokenizer.eos_id, *ids[:t]], [i]) for t, i in enumerate(ids)
        ),  # fmt: skip
    )


def state_names(cell: str) -> tuple[str, ...]:
    """Every trace key of a cell: its states ("h", then "c" where it has one), then its gates."""
    names = (*CELLS[cell].state_names, *CELLS[cell].gate_names)
    return tuple(dict.fromkeys(names))  # fgr carries its gates in its state: each name once


def state_name(cell: str, state: str, gate: str | None) -> str:
    """--state h|c|gates and --gate -> a trace key; ConfigError naming what the cell has."""
    kind = CELLS[cell]
    if state in ("h", "c"):
        if state not in kind.state_names:
            raise ConfigError(f"a {cell} has no cell state c; use --state h or --state gates")
        return state
    if state != "gates":
        raise ConfigError(f"--state must be h, c or gates, not {state!r}")
    if not kind.gate_names:
        raise ConfigError(f"a {cell} has no gates; use --state h")
    default = (
        "f"
        if "f" in kind.gate_names
        else kind.sigmoid_gates[0]
        if kind.sigmoid_gates
        else kind.gate_names[0]
    )
    gate = gate if gate is not None else default
    if gate not in kind.gate_names:
        raise ConfigError(f"a {cell} has gates {'|'.join(kind.gate_names)}, not {gate!r}")
    return gate


def label(name: str) -> str:
    return LABELS.get(name, f"gate {name}")


def activation(tr: Trace, name: str) -> np.ndarray:
    """What the views show for a trace key, [L, T, H]: tanh(c) for the cell state (bounded,
    like h, so one colour scale fits), everything else as computed."""
    return np.tanh(tr.values[name]) if name == "c" else tr.values[name]


def value_range(name: str, cell: str) -> tuple[float, float]:
    """The range a trace key's activation is shown in: a sigmoid gate [0, 1], the rest
    [-1, 1] (h, tanh(c) and tanh gates live there; an unbounded one is clipped to it)."""
    return (0.0, 1.0) if name in CELLS[cell].sigmoid_gates else (-1.0, 1.0)
