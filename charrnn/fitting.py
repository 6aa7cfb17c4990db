"""Defaults fitted to the text: once a new run's corpus is read, the settings a user left out
that depend on how much text there is get their values from it, not from one text someone
tuned them on: dropout from the passes the run will make over its training split (a text
read many times overfits; pace.py says how many), the evaluations' interval from the
split's size.

    fit(context, train_tokens, val_tokens, windows_per_epoch, tokens_per_step, pace, given)
        -> Fitted(model settings, train settings, why)

A flag given always wins; a resumed run keeps what its config.json says. The rules are
measured, not guessed: bench/zoo.py trains every corpus of ../shared/corpora and the
built-in python corpus, cut at several sizes, with these defaults and against a sweep of
the settings around them (bench/RESULTS.md, "The zoo"). Nothing here reads or prints.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charrnn.training.pace import Pace
from charrnn.training.schedule import eval_interval

# Dropout (between layers and before the decoder) by the epochs a run makes, per tokenizer:
# (upper bound of the epochs, the dropout), the first row whose bound the run is under.
DROPOUT = {
    "char": ((4, 0.0), (15, 0.1), (40, 0.2), (None, 0.3)),
    "word": ((5, 0.2), (15, 0.3), (None, 0.5)),
}
# Settings that take the fitted dropout too, per tokenizer: a word model's embedded inputs
# are dropped as its outputs are (AWD-LSTM's dropouti, locked as --dropout is).
WITH_DROPOUT = {"char": (), "word": ("input_dropout",)}


@dataclass(frozen=True)
class Fitted:
    """What was fitted, and why: `model` and `train` hold the settings (by name) that were
    left out and got a value from the text's size."""

    model: dict[str, Any]
    train: dict[str, Any]
    why: str  # "142,311 train tokens, about 7.2 epochs in 3m at 21,400 tokens/s, ..."


def fit(
    context: tuple[str, ...], train_tokens: int, val_tokens: int, windows_per_epoch: int,
    tokens_per_step: int, pace: Pace, given: Mapping[str, Any],
) -> Fitted:  # fmt: skip
    """The fitted defaults of the settings not `given`, for a run on `context` (device
    type, tokenizer) whose training split has `train_tokens`, read `pace.epochs` times."""
    _, tokenizer, _ = context
    family = _family(tokenizer)
    dropout = first_under(DROPOUT[family], pace.epochs)
    model: dict[str, Any] = {"dropout": dropout, **dict.fromkeys(WITH_DROPOUT[family], dropout)}
    every = eval_interval(windows_per_epoch, val_tokens, tokens_per_step)
    train: dict[str, Any] = {"eval_every": every}
    model = {k: v for k, v in model.items() if given.get(k) is None}
    train = {k: v for k, v in train.items() if given.get(k) is None}
    per_epoch = windows_per_epoch / every
    evals = f"{per_epoch:.0f} evaluations an epoch" if per_epoch >= 1.5 else (
        f"an evaluation every {1 / per_epoch:.1f} epochs")  # fmt: skip
    return Fitted(model, train, f"{train_tokens:,} train tokens, {pace.how}, {evals}")


def first_under(table: tuple[tuple[float | None, Any], ...], value: float) -> Any:
    """The value of the first row of `table` whose bound `value` is under (None: any)."""
    bounds = [bound for bound, _ in table if bound is not None]
    return table[bisect.bisect_right(bounds, value)][1]


def _family(tokenizer: str) -> str:
    """Subwords are fitted as characters are: many tokens a word, a small vocabulary."""
    return "word" if tokenizer == "word" else "char"
