"""How well a model predicts a text, in the units people compare: Metrics and evaluate().

Loss is nats per token; bits per character divide the total nats by ln 2 and by the
characters the scored tokens decode to (tokenizer.count_chars), so models with different
tokenizers of the same text compare directly. evaluate() scores every target of a text
exactly once, read as up to EVAL_STREAMS parallel streams. Nothing here trains or writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from charrnn.data import Streams, batchify, shard_rows
from charrnn.distributed import SINGLE, World
from charrnn.model import RNNLanguageModel
from charrnn.ngram import fit_weight, mix
from charrnn.settings import at_least, option

EVAL_STREAMS = 16  # validation is read as 16 streams whatever the training batch size
EVAL_SEQ_LEN = option(
    "seq_len", int, 256, "Tokens per window the text is read in.", check=at_least(1)
)


@dataclass(frozen=True)
class Metrics:
    """Loss of a model on a text, in the units people compare."""

    loss: float  # nats per token
    bpc: float  # bits per character of the text the tokens decode to
    word_perplexity: float  # exp(nats / words): words as the word-level literature counts them
    token_perplexity: float  # exp(loss): per token of this model's own tokenizer
    tokens: int
    chars: int
    words: int  # line.split() words plus one per line (pytorch/examples' <eos>)
    # a model with an n-gram (--ngram): the n-gram's weight in the mixture the loss is of,
    # and the network's own loss (nats per token)
    ngram_weight: float | None = None
    net_loss: float | None = None

    @classmethod
    def of(cls, nats: float, tokens: int, chars: int, words: int, **mixture) -> Metrics:
        loss = nats / tokens
        return cls(loss, nats / math.log(2) / max(chars, 1), _exp(nats / max(words, 1)),
                   _exp(loss), tokens, chars, words, **mixture)  # fmt: skip


def _exp(x: float) -> float:
    return math.exp(min(x, 700.0))  # inf past that, not an OverflowError


@torch.inference_mode()
def evaluate(
    model: RNNLanguageModel, ids: np.ndarray, seq_len: int, tokenizer, device,
    world: World = SINGLE, counts: tuple[int, int] | None = None, fit: bool = False,
) -> Metrics:  # fmt: skip
    """Loss over every target of `ids` (all but the first token), read as up to 16 streams.

    The tokens left over after cutting the streams continue the last stream, from its
    final state, so no target is skipped. On several ranks each reads its share of the
    streams (the last rank the tail) and the sums are added up: every rank gets the same
    figures. A model with an n-gram (model.ngram) is scored as the mixture, each target's
    n-gram history the tokens before it in `ids`; with `fit`, at the weight that fits
    these targets best, which becomes the model's (validation does this).
    """
    was_training = model.training
    model.eval()
    streams_b = max(1, min(EVAL_STREAMS, (len(ids) - 1) // seq_len))
    streams = Streams.of(ids, streams_b)
    mine = streams.shard(world.rank, world.size)  # all of them on one rank
    kn = model.ngram.logp(ids) if model.ngram is not None else None  # [len(ids) - 1]
    kn_rows = None  # the n-gram's log p of my streams' targets, laid out as they are
    if kn is not None:
        kn_rows = batchify(kn.numpy(), streams_b)[shard_rows(streams_b, world.rank, world.size)]
    scored: list[tuple[Tensor, Tensor | None]] = []  # (the network's nats, the n-gram's log p)
    state = None
    for i, (x, y) in enumerate(mine.windows(seq_len) if mine.batch_size else ()):
        window, state = model(x.to(device, torch.long), state, y.to(device, torch.long))
        cols = slice(i * seq_len, (i + 1) * seq_len)
        scored.append((window, kn_rows[:, cols].to(device) if kn_rows is not None else None))
    tail = streams_b * streams.length  # inputs ids[tail:-1], targets ids[tail+1:]
    if tail < len(ids) - 1 and world.rank == world.size - 1:
        x = torch.from_numpy(np.asarray(ids[tail:-1], dtype=np.int64))[None].to(device)
        y = torch.from_numpy(np.asarray(ids[tail + 1 :], dtype=np.int64)).to(device)
        last = tuple(s[:, -1:].contiguous() for s in state)  # the last stream's final state
        window, _ = model(x, last, y[None])
        scored.append((window, kn[tail:].to(device) if kn is not None else None))
    model.train(was_training)
    chars, words = counts or text_counts(tokenizer, ids)
    nats = torch.zeros((), dtype=torch.float64, device=device)
    for window, _ in scored:
        nats += window.sum()
    if kn is None:
        return Metrics.of(world.sum_(nats).item(), len(ids) - 1, chars, words)
    net = torch.cat([-w.flatten().double() for w, _ in scored]) if scored else nats.new_zeros(0)
    theirs = torch.cat([k.flatten() for _, k in scored]) if scored else nats.new_zeros(0)
    if fit:
        model.ngram_weight.fill_(fit_weight(net, theirs, world))
    weight = float(model.ngram_weight)
    mixed = world.sum_(-mix(net, theirs, weight).sum()).item()
    net_loss = world.sum_(nats).item() / (len(ids) - 1)
    return Metrics.of(mixed, len(ids) - 1, chars, words, ngram_weight=weight, net_loss=net_loss)


def text_counts(tokenizer, ids: np.ndarray) -> tuple[int, int]:
    """(characters, words) of the targets of `ids` (all but the first token): what bits per
    character and perplexity per word divide by."""
    return tokenizer.count_chars(ids[1:]), tokenizer.count_words(ids[1:])
