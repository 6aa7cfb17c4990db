"""Ranking neurons: which units of a trace follow a feature, which ones are detectors,
and how saturated the gates are.

Owns: pearson and selectivity (per unit, over the steps), the strongest contexts of a unit,
rank_by_feature and rank_by_selectivity (the Ranked rows the views show), and
gate_saturation (Karpathy, Johnson & Fei-Fei 2015, figure 3). It does not own the
features (features.py), the tracing (tracing.py) nor any rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.cells import CELLS
from charrnn.errors import ConfigError
from charrnn.neurons.tracing import Trace


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
        raise ConfigError(
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
        raise ConfigError(
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
    for gate in CELLS[tr.cell].sigmoid_gates:
        values = tr.values[gate]  # [L, T, H]
        for layer in range(values.shape[0]):
            v = values[layer]
            stats.append(GateStats(layer, gate, (v < low).mean(0), (v > high).mean(0)))
    return sorted(stats, key=lambda s: s.layer)
