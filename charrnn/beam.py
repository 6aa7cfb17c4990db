"""Beam search: the likeliest continuations of a prime, not a sample of them.

K hypotheses are kept, each with its summed log-probability; at each step every one is
extended by every token, and the K best of the K*V extensions go on (ties: the lower index,
so the search is deterministic). A hypothesis that makes <eos> ends there; the rest end at
`length` tokens. They are ranked by their log-probability per token (the <eos> that ends
one counts as a token), so that short ones are not favoured just for being short. It runs
the model through its step interface, the K hypotheses as one batch. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn import ngram
from charrnn.model import RNNLanguageModel
from charrnn.sample import continuation


@dataclass(frozen=True)
class Hypothesis:
    ids: tuple[int, ...]  # the tokens made, the <eos> that ended it included
    logprob: float  # summed natural log-probability of those tokens

    @property
    def score(self) -> float:
        """Log-probability per token: how beams of different lengths are ranked."""
        return self.logprob / max(len(self.ids), 1)


@torch.inference_mode()
def search(
    model: RNNLanguageModel,
    prime: list[int],
    beams: int,
    length: int,
    eos_id: int,
    banned_ids: tuple[int, ...] = (),
) -> list[Hypothesis]:
    """Every hypothesis that ended (by <eos> or at `length`), best first. `prime` is read
    first (it starts with <eos>, as every text does); banned ids are never made."""
    model.eval()
    device = model.decoder.weight.device
    logits, state = model(torch.tensor([prime], device=device))  # [1, P, V]
    history = ngram.start_history(model, prime, 1, device)  # with --ngram: [K, N-1]
    logits = ngram.next_log_probs(model, logits[:, -1], history)  # [K, V] with K = 1 to start
    alive = [Hypothesis((), 0.0)]
    ended: list[Hypothesis] = []
    for _ in range(length):
        logp = logits.float().log_softmax(-1)  # [K, V]
        if banned_ids:
            logp[:, list(banned_ids)] = -torch.inf
        totals = torch.tensor([h.logprob for h in alive], device=device)[:, None] + logp
        best = totals.flatten().topk(min(beams, totals.numel()))  # sorted, lower index first
        parents, tokens = best.indices // logp.shape[1], best.indices % logp.shape[1]
        keep, next_alive = [], []
        for total, parent, token in zip(best.values.tolist(), parents.tolist(), tokens.tolist()):
            if total == -torch.inf:
                continue
            grown = Hypothesis((*alive[parent].ids, token), total)
            if token == eos_id:
                ended.append(grown)
            else:
                keep.append(parent)
                next_alive.append(grown)
        if not next_alive:
            alive = []
            break
        rows = torch.tensor(keep, device=device)
        state = tuple(s.index_select(1, rows) for s in state)  # each [L, K, H]
        ids = torch.tensor([h.ids[-1] for h in next_alive], device=device)
        logits, state = model.step(ids, state)
        history = ngram.push(history.index_select(0, rows) if history is not None else None, ids)
        logits = ngram.next_log_probs(model, logits, history)
        alive = next_alive
    return sorted([*ended, *alive], key=lambda h: -h.score)


def texts(hypotheses: list[Hypothesis], tokenizer, prime: list[int], count: int) -> list[str]:
    """The text of the `count` best hypotheses after `prime` (their <eos> not included)."""
    eos = tokenizer.eos_id
    return [continuation(tokenizer, prime, [i for i in h.ids if i != eos])
            for h in hypotheses[:count]]  # fmt: skip
