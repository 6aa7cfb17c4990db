"""Defaults fitted to the text: once a new run's corpus is read, the settings a user left out
that depend on how much text there is get their values from the training split's size in
tokens (and the tokenizer), not from one text someone tuned them on.

    fit(context, train_tokens, val_tokens, windows_per_epoch, tokens_per_step, given)
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

from charrnn.training.schedule import eval_interval

# Dropout (between layers and before the decoder) by training tokens, per tokenizer: a
# text read many times in a run's length overfits, and needs more. (upper bound of the
# tokens, the dropout): the first row whose bound the text is under.
DROPOUT = {
    "char": ((300_000, 0.3), (1_000_000, 0.1), (None, 0.0)),
    "word": ((100_000, 0.5), (1_000_000, 0.3), (None, 0.2)),
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
    why: str  # "142,311 train tokens, 4 evaluations an epoch"


def fit(
    context: tuple[str, ...], train_tokens: int, val_tokens: int, windows_per_epoch: int,
    tokens_per_step: int, given: Mapping[str, Any],
) -> Fitted:  # fmt: skip
    """The fitted defaults of the settings not `given`, for a run on `context` (device
    type, tokenizer) whose training split has `train_tokens`."""
    _, tokenizer, _ = context
    family = _family(tokenizer)
    dropout = by_size(DROPOUT[family], train_tokens)
    model: dict[str, Any] = {"dropout": dropout, **dict.fromkeys(WITH_DROPOUT[family], dropout)}
    every = eval_interval(windows_per_epoch, val_tokens, tokens_per_step)
    train: dict[str, Any] = {"eval_every": every}
    model = {k: v for k, v in model.items() if given.get(k) is None}
    train = {k: v for k, v in train.items() if given.get(k) is None}
    per_epoch = windows_per_epoch / every
    evals = f"{per_epoch:.0f} evaluations an epoch" if per_epoch >= 1.5 else (
        f"an evaluation every {1 / per_epoch:.1f} epochs")  # fmt: skip
    return Fitted(model, train, f"{train_tokens:,} train tokens, {evals}")


def by_size(table: tuple[tuple[int | None, Any], ...], tokens: int) -> Any:
    """The value of the first row of `table` whose bound `tokens` is under (None: any)."""
    bounds = [bound for bound, _ in table if bound is not None]
    return table[bisect.bisect_right(bounds, tokens)][1]


def _family(tokenizer: str) -> str:
    """Subwords are fitted as characters are: many tokens a word, a small vocabulary."""
    return "word" if tokenizer == "word" else "char"
