"""pytorch/examples word_language_model, as the benchmarks compare charrnn with it.

Its defaults, as that example writes them: a 2x200 LSTM, embedding 200, untied, dropout
0.2, plain SGD at lr 20 divided by 4 whenever an epoch does not improve the validation
loss, gradient norm clipped to 0.25, bptt 35, batch 20 (10 to evaluate); tokens are
`line.split()` words and an `<eos>` per line. Like charrnn's --time-budget, its budget
counts training steps, not evaluations; it keeps the model of its best validation loss.

Like for like (`known`): a word that charrnn's word tokenizer cannot encode without `<unk>`
is `<unk>` for the reference too, in its training, validation and test text alike, so
both models predict the same targets with the same vocabulary treatment. Without `known`,
the reference's dictionary is every word of its training and test text, as the example
builds it (its test text then has no unknown word, where charrnn's has `<unk>`s).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BPTT, BATCH, EVAL_BATCH, LR, CLIP = 35, 20, 10, 20.0, 0.25
UNK = "<unk>"


def words_of(text: str, known: Callable[[str], bool] | None = None) -> list[str]:
    """The example's tokens: each line's words, then <eos>; with `known`, a word it
    rejects is <unk>."""
    out: list[str] = []
    for line in text.splitlines():
        out.extend(w if known is None or known(w) else UNK for w in line.split())
        out.append("<eos>")
    return out


def batchify(ids: Tensor, batch: int) -> Tensor:
    """[N] -> [N // B, B]: column b is the b-th of B equal pieces of the text, so each row
    is one time step of B parallel streams (the remainder is dropped)."""
    n = ids.numel() // batch
    return ids[: n * batch].view(batch, n).t().contiguous()


class Model(nn.Module):
    def __init__(self, vocab: int, embedding: int = 200, hidden: int = 200, layers: int = 2):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(vocab, embedding)
        self.rnn = nn.LSTM(embedding, hidden, layers, dropout=0.2)
        self.decoder = nn.Linear(hidden, vocab)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x: Tensor, state=None):  # x [T, B] -> log-probabilities [T, B, V]
        out, state = self.rnn(self.drop(self.encoder(x)), state)
        return F.log_softmax(self.decoder(self.drop(out)), dim=-1), state


def windows(data: Tensor):
    """(x, y) of BPTT rows each, y one step ahead of x; the last window is shorter."""
    for i in range(0, data.size(0) - 1, BPTT):
        t = min(BPTT, data.size(0) - 1 - i)
        yield data[i : i + t], data[i + 1 : i + 1 + t]


@torch.no_grad()
def nats(model: Model, data: Tensor) -> tuple[float, int]:
    """(total nats, targets) over the batchified `data`, the state carried across windows."""
    model.eval()
    total, count, state = 0.0, 0, None
    for x, y in windows(data):
        logp, state = model(x, state)
        total += F.nll_loss(logp.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total, count


def train(train_words: list[str], test_words: list[str], seconds: float,
          seed: int = 1111) -> dict:  # fmt: skip
    """Train on the first 90% of `train_words` (the last 10% anneals the learning rate and
    picks the best model) for `seconds` of training steps; score on `test_words`."""
    vocab = {w: i for i, w in enumerate(dict.fromkeys(train_words + test_words))}
    ids = torch.tensor([vocab[w] for w in train_words])
    cut = len(train_words) - int(0.1 * len(train_words))  # as charrnn's --val-frac 0.1
    train_b, val_b = batchify(ids[:cut], BATCH), batchify(ids[cut:], EVAL_BATCH)
    torch.manual_seed(seed)
    model = Model(len(vocab))
    lr, best, best_state, steps, tokens, spent = LR, math.inf, None, 0, 0, 0.0
    while spent < seconds:  # an epoch, then a validation; the budget may end one early
        model.train()
        state = None
        for x, y in windows(train_b):
            start = time.perf_counter()
            state = None if state is None else tuple(s.detach() for s in state)
            model.zero_grad()
            logp, state = model(x, state)
            F.nll_loss(logp.flatten(0, 1), y.flatten()).backward()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            steps, tokens = steps + 1, tokens + y.numel()
            spent += time.perf_counter() - start
            if spent >= seconds:
                break
        val, n = nats(model, val_b)
        if val / n < best:
            best, best_state = val / n, copy.deepcopy(model.state_dict())
        else:
            lr /= 4.0
    model.load_state_dict(best_state)
    total, targets = nats(model, batchify(torch.tensor([vocab[w] for w in test_words]),
                                          EVAL_BATCH))  # fmt: skip
    return {
        "params": sum(p.numel() for p in model.parameters()), "vocab": len(vocab),
        "steps": steps, "tokens_per_s": tokens / max(spent, 1e-9), "test_tokens": targets,
        "test_unk": test_words.count(UNK), "ppl_word": math.exp(total / targets),
    }  # fmt: skip


def charrnn_knows(run_dir) -> Callable[[str], bool]:
    """Whether charrnn's word model in `run_dir` encodes a word without <unk> (a literal
    <unk>, as WikiText writes its rare words, is known to both)."""
    from charrnn.tokenizers import load

    tok, cache = load(run_dir), {}

    def known(word: str) -> bool:
        if word not in cache:
            cache[word] = word == UNK or not (tok.encode(word, "unk") == tok.unk_id).any()
        return cache[word]

    return known
