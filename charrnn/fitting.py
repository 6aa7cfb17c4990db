"""Defaults fitted to the text: once a new run's corpus is read, the settings a user left out
that depend on how much text there is get their values from it, not from one text someone
tuned them on: the model's width (and with it the learning rate) from the steps the run
has time for, dropout from the passes it will make over its training split (a text read
many times overfits; pace.py says how many), the evaluations' interval from the split's
size, whether (and over how many steps) to average the weights, and the n-gram's order
from the split's size and the vocabulary.

    narrower(context, hidden, pace, given) -> the width for a run too short for `hidden`
    ngram_order(declared, train_tokens, vocab_size) -> (the order, why it is shorter)
    fit(context, train_tokens, val_tokens, windows_per_epoch, tokens_per_step, pace, given,
        ...) -> Fitted(model settings, train settings, why)

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

from charrnn.ngram import max_order
from charrnn.training.pace import Pace
from charrnn.training.schedule import eval_interval

# Dropout (between layers and before the decoder) by the epochs a run makes, per tokenizer:
# (upper bound of the epochs, the dropout), the first row whose bound the run is under.
DROPOUT = {
    "char": ((4, 0.0), (15, 0.1), (40, 0.2), (None, 0.3)),
    "word": ((5, 0.2), (15, 0.3), (None, 0.5)),
}
# A run too short for the default width to make FEW_STEPS steps gets half of it (a tied
# word model's embedding too), and so more steps: at 25 s on 2 CPU cores (about 280 steps
# of a 1x512 char LSTM) a 1x256 one was up to 6% better, and a word model of 1 MB (about
# 400 steps at 256) was 2% better at 128 (bench/zoo.py); word models making 500 to 900
# steps at 256 were worse at 128. At 90 s (960 to 990 steps at 512) the 1x512 was better
# than a 1x256 at twice the lr, by 4% and 0.4% (shakespeare and WikiText-2 whole), and
# three minutes (1,700 to 2,400 steps) keep the 1x512 that bench/quality.py tuned: the
# threshold lies between 280 and 960 steps, and 500 is a guess inside that gap. Only a
# time budget: with --steps or --epochs half the width buys no steps, only a smaller model
# (at 300 steps the 1x256 at twice the lr was 2.6% worse than the 1x512 on two of the
# zoo's rows, and the kept width better on 3 of 4 others).
# A word model with a shortlist (model.py) makes about 600 steps at 256 in 25 s. Where
# that is under 5 passes over its text (the zoo's texts of 1 MB and more) the 1x128 made
# twice the steps and was 1.6% to 2.8% better (shakespeare whole, fortunes 1 MB and
# whole); where the text is read 6 to 20 times (300 KB and 100 KB) the run ends by
# --patience before the time does, and the 1x256 was as good or better (by 0.1% to 1.1%):
# more steps are worth a width only to a run that the time cuts short.
FEW_STEPS = {"char": 500, "word": 1000}
FEW_EPOCHS = {"char": None, "word": 5}  # and only under this many passes (None: any)
# A char-level run narrowed for being short also takes this many times the default
# learning rate (AdamW's; SGD's is kept): at 25 s (450 to 1,100 steps of a 1x256 LSTM)
# --lr 0.016 beat 0.008 on 9 of the zoo's 12 char rows, by up to 2.8%, and was within 1.6%
# of the best on all 12; with it, and a sweep around it, all 12 came within 2% (bench/zoo.py).
# Word models keep SGD's lr 20: 10 and 40 were better on 1 of the 9 word rows, by 0.1%.
HOTTER = {"char": 2.0, "word": 1.0}

# --average, in evaluation intervals, per tokenizer (0: off). A word model trains with SGD
# at a high lr (20, constant when this was measured; annealed to 2 since) until val loss
# stalls; its weights' average over the last two intervals, picked by validation where it
# is the better, measured at 25 s on the zoo's word rows (bench/zoo.py): WikiText-2 100K
# 78.3 -> 71.4 per word, shakespeare 100K 274.0 -> 260.6, 300K 418.9 -> 402.4, whole 351.4
# -> 329.5; fortunes 100K 868.1 -> 863.4; WikiText-2 300K 132.8 -> 134.4 (the one loss);
# on the larger texts the trained weights were kept. At 3 minutes on WikiText-2 valid ->
# test: 139.30 -> 132.61 per word. Char models train with AdamW on a schedule that anneals
# by itself; there the average was worse on 3 of the 4 rows tried (bench/RESULTS.md,
# "Averaged weights").
AVERAGE = {"char": 0, "word": 2}

# --ngram (ngram.py): the order ModelConfig declares for the tokenizer, off for a training
# split longer than this, whose tables would be too large to keep beside the weights (the
# built-in python corpus, 10.9M characters, holds 3.6M n-grams of orders 1 to 7: 57 MB,
# counted in 5 s; natural text holds about one n-gram of order 7 or under per character),
# and no longer than an int64 keys for the vocabulary (ngram.max_order).
NGRAM_MOST_TOKENS = 16_000_000

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


def narrower(context: tuple[str, ...], hidden: int, pace: Pace,
             given: Mapping[str, Any]) -> int | None:  # fmt: skip
    """Half of `hidden` (the default width) for a run whose time budget makes too few steps
    at it, or None where it is kept (a run of given steps or epochs, a word run that reads
    its text FEW_EPOCHS times or more, or --hidden, --embedding or --tie-weights given)."""
    family = _family(context[1])
    if not pace.timed or pace.steps >= FEW_STEPS[family]:
        return None
    if FEW_EPOCHS[family] is not None and pace.epochs >= FEW_EPOCHS[family]:
        return None
    if any(given.get(k) is not None for k in ("hidden", "embedding", "tie_weights")):
        return None
    return hidden // 2


def fit(
    context: tuple[str, ...], train_tokens: int, val_tokens: int, windows_per_epoch: int,
    tokens_per_step: int, pace: Pace, given: Mapping[str, Any], narrowed: str = "",
    hidden: int | None = None, lr: float = 0.0, ngram: int = 0, vocab_size: int = 1,
) -> Fitted:  # fmt: skip
    """The fitted defaults of the settings not `given`, for a run on `context` (device
    type, tokenizer) whose training split has `train_tokens`, read `pace.epochs` times.
    `hidden`: the width narrower() gave, `narrowed` why (or None and ""); `lr`: the
    run's learning rate before fitting; `ngram`: the declared order for the tokenizer,
    `vocab_size` the run's."""
    _, tokenizer, optimizer = context
    family = _family(tokenizer)
    dropout = first_under(DROPOUT[family], pace.epochs)
    model: dict[str, Any] = {"dropout": dropout, **dict.fromkeys(WITH_DROPOUT[family], dropout)}
    if hidden is not None:  # a tied word model's embedding is its width
        model |= {"hidden": hidden} | ({"embedding": hidden} if family == "word" else {})
    every = given.get("eval_every") or eval_interval(windows_per_epoch, val_tokens, tokens_per_step)
    train: dict[str, Any] = {"eval_every": every, "average": AVERAGE[family] * every}
    if hidden is not None and optimizer == "adamw" and HOTTER[family] != 1:
        train["lr"] = lr * HOTTER[family]
    order, why_order = ngram_order(ngram, train_tokens, vocab_size)
    if order != ngram:
        model["ngram"] = order
    model = {k: v for k, v in model.items() if given.get(k) is None}
    train = {k: v for k, v in train.items() if given.get(k) is None}
    per_epoch = windows_per_epoch / every
    evals = f"{per_epoch:.0f} evaluations an epoch" if per_epoch >= 1.5 else (
        f"an evaluation every {1 / per_epoch:.1f} epochs")  # fmt: skip
    why = f"{train_tokens:,} train tokens, {narrowed}{pace.how}, {evals}"
    return Fitted(model, train, why + (why_order if "ngram" in model else ""))


def ngram_order(declared: int, train_tokens: int, vocab_size: int) -> tuple[int, str]:
    """The n-gram's order for a training split of `train_tokens` over `vocab_size` ids,
    from the `declared` one, and why it is shorter ("" where it is not)."""
    if declared and train_tokens > NGRAM_MOST_TOKENS:
        return 0, f"; no n-gram over {NGRAM_MOST_TOKENS // 1_000_000}M train tokens"
    if declared > max_order(vocab_size):
        return max_order(vocab_size), f"; the longest n-gram {vocab_size:,} ids can key"
    return declared, ""


def first_under(table: tuple[tuple[float | None, Any], ...], value: float) -> Any:
    """The value of the first row of `table` whose bound `value` is under (None: any)."""
    bounds = [bound for bound, _ in table if bound is not None]
    return table[bisect.bisect_right(bounds, value)][1]


def _family(tokenizer: str) -> str:
    """Subwords are fitted as characters are: many tokens a word, a small vocabulary."""
    return "word" if tokenizer == "word" else "char"
