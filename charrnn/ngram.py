"""--ngram N: an n-gram model of the training text beside the network, mixed into what it
predicts. An interpolated Kneser-Ney model of order N (Chen & Goodman 1998, one discount
per order) is counted on the run's training split; the run's model then predicts

    p(w | the text so far) = (1 - λ) p_net(w | the text so far) + λ p_kn(w | its last N-1 tokens)

with λ (the model's `ngram_weight`) fitted on the validation split by EM at every
evaluation, saved with the weights it was fitted for. The mixture of a neural and a count
model is the RNN-with-KN5 of Mikolov et al. 2011 ("Empirical Evaluation and Combination
of Advanced Language Modeling Techniques"): on a small text the counts remember the
phrases a network trained for minutes has not learnt. Measured offline on word models of
the zoo's word rows and WikiText-2 (a trained model, a trigram of its training split, λ
from its validation split), test perplexity per word fell 3% to 13% (bench/RESULTS.md,
"The n-gram beside a word model").

Nothing is learnt from the text scored: the counts are the training split's, λ is the
validation split's, and a token's n-gram history is the tokens before it.

    NGram.count(ids, order, vocab_size)      the counts of a training split
    ngram.logp(ids) -> [len(ids) - 1]         log p_kn of every token after the first
    ngram.log_probs(history [B, N-1]) -> [B, V]   the next token's, for samplers (-1: none)
    mix(net, kn, weight)                      log of the mixture, from the two logs
    fit_weight(net, kn, world) -> λ           EM on the validation split's tokens
    next_log_probs(model, logits, history)    a sampler's next-token logits, mixed
    start_history, histories, push           a sampler's n-gram histories

The tables are torch tensors on the CPU: keys of the n-grams seen (their ids in radix V,
sorted) and their counts, raw for order N and continuation counts (how many different
tokens came before) below it. A run saves them as ngram.safetensors (checkpoint.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from charrnn.distributed import SINGLE, World

EM_ROUNDS = 100  # at most; EM stops sooner when λ moves less than EM_TOLERANCE
EM_TOLERANCE = 1e-6
KEY_BITS = 62  # an n-gram's key is an int64: vocab_size ** order must stay under 2 ** 62


def max_order(vocab_size: int) -> int:
    """The longest n-gram whose keys fit an int64 for this vocabulary."""
    return max(1, int(KEY_BITS / math.log2(max(vocab_size, 2))))


class NGram:
    """An interpolated Kneser-Ney model of order N over ids 0 .. V-1."""

    def __init__(self, order: int, vocab_size: int, keys: list[Tensor], counts: list[Tensor]):
        """`keys[n - 1]`, `counts[n - 1]`: the n-grams seen (sorted keys) and their counts,
        raw for n = order, continuation counts below (NGram.count makes them)."""
        self.order, self.vocab_size = order, vocab_size
        self.keys = [k.long() for k in keys]
        self.counts = [c.double() for c in counts]
        self.discounts = [_discount(c) for c in self.counts]
        # per order n >= 2: (the contexts seen, sorted keys; their total count; the number
        # of different tokens seen after each)
        self.contexts = [_contexts(k, c, vocab_size) for k, c in zip(self.keys, self.counts)]
        V, D, c = vocab_size, self.discounts[0], self.counts[0]
        unigram = torch.zeros(V, dtype=torch.float64)
        unigram[self.keys[0]] = (c - D).clamp(min=0)
        total = float(c.sum()) or 1.0
        self.unigram = (unigram + D * len(c) / V) / total if len(c) else torch.full((V,), 1 / V)
        # numpy views of the same memory, for log_probs: per order n >= 2 (contexts, total,
        # types, keys, counts)
        self.arrays = [tuple(t.numpy() for t in (*ctx, k, c))
                       for ctx, k, c in zip(self.contexts, self.keys, self.counts)]  # fmt: skip

    @classmethod
    def count(cls, ids: np.ndarray, order: int, vocab_size: int) -> NGram:
        """The counts of `ids` (a training split), n-grams up to `order`."""
        t = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        keys, counts = [], []
        for n in range(1, order + 1):
            if n == order:
                k, c = torch.unique(_grams(t, n, vocab_size), return_counts=True)
            else:  # continuation: the distinct (n+1)-grams, counted by their last n tokens
                longer = torch.unique(_grams(t, n + 1, vocab_size))
                k, c = torch.unique(longer % vocab_size**n, return_counts=True)
            keys.append(k)
            counts.append(c)
        return cls(order, vocab_size, keys, counts)

    def tensors(self) -> dict[str, Tensor]:
        """What ngram.safetensors holds (of_tensors reads it back)."""
        return {
            **{f"keys.{n}": k for n, k in enumerate(self.keys, 1)},
            **{f"counts.{n}": c.long() for n, c in enumerate(self.counts, 1)},
        }

    @classmethod
    def of_tensors(cls, tensors: dict[str, Tensor], order: int, vocab_size: int) -> NGram:
        """An NGram from tensors(); ValueError naming what does not fit."""
        names = {f"{kind}.{n}" for kind in ("keys", "counts") for n in range(1, order + 1)}
        if set(tensors) != names:
            raise ValueError(f"holds {sorted(tensors)}, not the tables of an order-{order} model")
        keys = [tensors[f"keys.{n}"] for n in range(1, order + 1)]
        counts = [tensors[f"counts.{n}"] for n in range(1, order + 1)]
        for n, (k, c) in enumerate(zip(keys, counts), 1):
            if k.dim() != 1 or k.shape != c.shape or k.is_floating_point():
                raise ValueError(f"the order-{n} tables are not two integer vectors of one length")
            if len(k) and (k.min() < 0 or k.max() >= vocab_size**n or (k[1:] <= k[:-1]).any()):
                raise ValueError(f"the order-{n} keys are not sorted ids of the vocabulary")
            if len(c) and c.min() < 1:
                raise ValueError(f"the order-{n} counts are not all positive")
        return cls(order, vocab_size, keys, counts)

    def logp(self, ids: np.ndarray) -> Tensor:
        """log p_kn of ids[1:], each given the tokens before it in `ids` (fewer than N-1 at
        the start): [len(ids) - 1] float64, on the CPU."""
        t = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        targets = t[1:]
        p = self.unigram[targets]
        for n in range(2, self.order + 1):
            if len(targets) < n - 1:
                break
            # the target at index j (ids[j + 1]) follows ids[j - n + 2 .. j]: j >= n - 2
            context = _grams(t[:-1], n - 1, self.vocab_size)
            p[n - 2 :] = self._level(n, context, targets[n - 2 :], p[n - 2 :])
        return p.log()

    def _level(self, n: int, context: Tensor, w: Tensor, lower: Tensor) -> Tensor:
        """p at order n of tokens `w` after `context` (keys), from `lower`, order n-1's."""
        found, at = _find(self.contexts[n - 1][0], context)
        if not found.any():
            return lower
        _, total, types = self.contexts[n - 1]
        keys, counts, D = self.keys[n - 1], self.counts[n - 1], self.discounts[n - 1]
        seen, i = _find(keys, context * self.vocab_size + w)
        c = torch.where(seen, counts[i], 0.0)
        higher = ((c - D).clamp(min=0) + D * types[at] * lower) / total[at]
        return torch.where(found, higher, lower)

    def log_probs(self, history: Tensor) -> Tensor:
        """log p_kn of every next token after each row of `history` [B, N-1] (its last
        tokens, oldest first; -1 where there is none): [B, V] float32 on history's device.
        A sampler calls it after every token, so it works in numpy: a few small arrays a
        level, where torch's per-operation overhead was most of a char sampler's step."""
        device, h = history.device, history.cpu().long().numpy()
        V, B = self.vocab_size, h.shape[0]
        p = np.repeat(self.unigram.numpy()[None], B, 0)
        context = np.zeros(B, dtype=np.int64)
        for n in range(2, self.order + 1):
            last = h[:, h.shape[1] - (n - 1) :]  # [B, n-1]
            context = context + np.maximum(last[:, 0], 0) * V ** (n - 2)  # its oldest token added
            contexts, total, types, keys, counts = self.arrays[n - 1]
            if not len(contexts):
                continue
            at = np.minimum(np.searchsorted(contexts, context), len(contexts) - 1)
            found = (contexts[at] == context) & (last[:, 0] >= 0)  # -1s come first: no gap
            if not found.any():
                continue
            lo = np.searchsorted(keys, context * V)
            lengths = np.where(found, np.searchsorted(keys, context * V + V) - lo, 0)
            rows = np.repeat(np.arange(B), lengths)  # the n-grams seen after each row's context
            seen = np.repeat(lo - (lengths.cumsum() - lengths), lengths) + np.arange(len(rows))
            higher = p * (self.discounts[n - 1] * types[at])[:, None]
            higher[rows, keys[seen] % V] += np.maximum(counts[seen] - self.discounts[n - 1], 0)
            p = np.where(found[:, None], higher / total[at][:, None], p)
        return torch.from_numpy(np.log(p)).float().to(device)

    def __deepcopy__(self, memo) -> NGram:
        return self  # its tables never change: a copied model (average.py) shares them


def _grams(t: Tensor, n: int, V: int) -> Tensor:
    """The keys of every n tokens in a row of t: [len(t) - n + 1]."""
    if len(t) < n:
        return t.new_zeros(0)
    return _key(t.unfold(0, n, 1), V)


def _key(rows: Tensor, V: int) -> Tensor:
    """[..., n] ids -> [...] keys in radix V, the first id the most significant."""
    key = torch.zeros(rows.shape[:-1], dtype=torch.long)
    for i in range(rows.shape[-1]):
        key = key * V + rows[..., i]
    return key


def _find(sorted_keys: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """(which of `keys` are in `sorted_keys`, and where: an index valid for every key)."""
    if not len(sorted_keys):
        return torch.zeros(keys.shape, dtype=torch.bool), torch.zeros(keys.shape, dtype=torch.long)
    at = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
    return sorted_keys[at] == keys, at


def _discount(counts: Tensor) -> float:
    """Ney's D = n1 / (n1 + 2 n2), from how many n-grams were seen once and twice."""
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95) if n1 + n2 else 0.5


def _contexts(keys: Tensor, counts: Tensor, V: int) -> tuple[Tensor, Tensor, Tensor]:
    """(the contexts of these n-grams, sorted; each one's total count; its distinct tokens)."""
    contexts, inverse, types = torch.unique_consecutive(
        keys // V, return_inverse=True, return_counts=True
    )
    total = torch.zeros(len(contexts), dtype=torch.float64).index_add_(0, inverse, counts)
    return contexts, total, types.double()


def mix(net: Tensor, kn: Tensor, weight: float | Tensor) -> Tensor:
    """log((1 - weight) p_net + weight p_kn) from log p_net and log p_kn."""
    weight = torch.as_tensor(weight, dtype=net.dtype, device=net.device)
    return torch.logaddexp(net + torch.log1p(-weight), kn + weight.log())


def fit_weight(net: Tensor, kn: Tensor, world: World = SINGLE) -> float:
    """The weight of the n-gram that makes the mixture likeliest on these tokens (log p_net
    and log p_kn of each, [N] float64; every rank its share), by EM from 0.5."""
    tokens = world.sum_(torch.tensor(float(len(net)), dtype=torch.float64, device=net.device))
    weight = torch.tensor(0.5, dtype=torch.float64, device=net.device)
    for _ in range(EM_ROUNDS):
        mine = kn + weight.log()
        share = (mine - torch.logaddexp(net + torch.log1p(-weight), mine)).exp()
        new = world.sum_(share.sum()) / tokens
        done = abs(float(new - weight)) < EM_TOLERANCE
        weight = new
        if done:
            break
    return float(weight)


def next_log_probs(model, logits: Tensor, history: Tensor | None) -> Tensor:
    """A sampler's next-token logits [B, V]: the model's own, or with an n-gram
    (model.ngram) the log of the mixture, after `history` [B, N-1]."""
    ngram = getattr(model, "ngram", None)
    if ngram is None or history is None:
        return logits
    net = logits.float().log_softmax(-1)
    return mix(net, ngram.log_probs(history), float(model.ngram_weight)).to(logits.dtype)


def start_history(model, prime: list[int], rows: int, device) -> Tensor | None:
    """The n-gram history after `prime`, for `rows` samples: [rows, N-1], -1 where the
    prime is shorter; None for a model without an n-gram."""
    history = histories(model, prime, [len(prime)], device)
    return None if history is None else history.expand(rows, -1).contiguous()


def histories(model, ids: list[int], ends, device) -> Tensor | None:
    """The n-gram history after ids[:e] for each e of `ends`: [len(ends), N-1]; None for a
    model without an n-gram."""
    ngram = getattr(model, "ngram", None)
    if ngram is None:
        return None
    n = ngram.order - 1
    rows = [([-1] * n + list(ids[:e]))[e:] if n else [] for e in ends]
    return torch.tensor(rows, dtype=torch.long, device=device).view(len(rows), n)


def push(history: Tensor | None, ids: Tensor) -> Tensor | None:
    """The histories after each row's next token `ids` [B]."""
    if history is None or history.shape[1] == 0:
        return history
    return torch.cat([history[:, 1:], ids[:, None].to(history.dtype)], 1)
