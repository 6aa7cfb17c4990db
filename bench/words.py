"""Per-word perplexity on WikiText-2: charrnn's word model against pytorch/examples'
word_language_model (bench/reference.py), and charrnn's char and BPE models, each given the
same CPU time, in one run.

    python bench/words.py                           # --time-budget 6m, split evenly
    python bench/words.py --models word,reference --time-budget 6m -- --hidden 384

Every model trains on ../shared/corpora/wikitext-2-valtest/valid.txt, its first 90% of
tokens (the last 10% picks the best model, ends a charrnn run that stops improving and, for
the reference, anneals the learning rate), and is scored on test.txt. Per-word perplexity is
exp(total nats on test.txt / words), with words counted as pytorch/examples counts them:
`line.split()` plus one <eos> per line (charrnn.tokenizers.text_words), whatever the
model's tokens are; so the figures compare across tokenizers, and with the reference.

The reference is scored two ways: like for like (`reference`: every word charrnn's word
model reads as <unk> is <unk> for it too, in its training and test text alike: the same
targets, the same vocabulary treatment) and as the example itself builds its dictionary
(`reference-own`: every word of both files, so test.txt has no unknown word while charrnn's
has <unk>s; not like for like, shown for what the example alone would print). CPU only:
wall-clock figures from a busy machine are noise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's charrnn, here and in the subprocesses
sys.path.insert(0, str(ROOT / "bench"))  # bench/reference.py

import reference  # noqa: E402

from charrnn.settings import parse_duration  # noqa: E402
from charrnn.tokenizers import text_words  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "corpora" / "wikitext-2-valtest"
# charrnn's flags per tokenizer: the defaults of each (the flags after -- go to the word
# model, after these).
FLAGS = {
    "word": ["--tokenizer", "word"],  # the defaults of a word model, declared in the settings
    "char": ["--tokenizer", "char"],
    "bpe": ["--tokenizer", "bpe"],
}  # fmt: skip
ON_UNKNOWN = {"word": "unk", "char": "skip", "bpe": "error"}  # test.txt has chars valid.txt lacks


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


def train_charrnn(kind: str, seconds: float, extra: list[str], unks: int, keep: Path) -> dict:
    """Train charrnn with `--tokenizer kind` for `seconds`, score the best model on test.txt
    (the word run stays in `keep`, for the reference's like-for-like vocabulary)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / kind if kind != "word" else keep
        flags = [*FLAGS[kind], *(extra if kind == "word" else [])]
        budget = f"{seconds:.0f}s"
        charrnn("train", str(WIKITEXT / "valid.txt"), "--val-frac", "0.1", "--time-budget",
                budget, "--run-dir", str(run), *flags)  # fmt: skip
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


def train_reference(seconds: float, known=None) -> dict:
    """The reference on valid.txt, scored on test.txt; like for like with `known`."""
    valid = (WIKITEXT / "valid.txt").read_text(encoding="utf-8")
    test = (WIKITEXT / "test.txt").read_text(encoding="utf-8")
    r = reference.train(reference.words_of(valid, known), reference.words_of(test, known),
                        seconds)  # fmt: skip
    how = "like for like" if known else "its own dictionary"
    unknown = f"{r['test_unk']:,} <unk>" if known else "none"
    return {**r, "model": f"reference 2x200 LSTM ({how})", "unknown": unknown,
            "test_words": r["test_tokens"], "ppl_token": r["ppl_word"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-budget", default="6m", help="all models together: 6m, 90s")
    parser.add_argument("--models", default="word,reference,reference-own")
    parser.add_argument("train_args", nargs="*", help="extra `charrnn train` flags, after --")
    args = parser.parse_args()
    models = args.models.split(",")
    assert "reference" not in models or models.index("word") < models.index("reference"), (
        "the like-for-like reference needs the word model's vocabulary: list word first"
    )
    seconds = parse_duration(args.time_budget) / len(models)
    test_text = (WIKITEXT / "test.txt").read_text(encoding="utf-8")
    words, unks = text_words([test_text]), test_text.split().count("<unk>")
    keep = Path(tempfile.mkdtemp()) / "word"
    print(
        f"WikiText-2: train on valid.txt, test on test.txt ({words:,} words with one <eos> "
        f"per line); {seconds:.0f}s of training each, {torch.get_num_threads()} threads"
    )
    print("| model | params | vocab | steps | tokens/s | test tokens | unknown in test | "
          "test ppl/token | test ppl/word |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in models:
        if name == "reference":
            r = train_reference(seconds, reference.charrnn_knows(keep))
        elif name == "reference-own":
            r = train_reference(seconds)
        else:
            r = train_charrnn(name, seconds, args.train_args, unks, keep)
        print(f"| {r['model']} | {r['params']:,} | {r['vocab']:,} | {r['steps']:,} | "
              f"{r['tokens_per_s']:,.0f} | {r['test_tokens']:,} | {r['unknown']} | "
              f"{r['ppl_token']:.2f} | **{r['ppl_word']:.2f}** |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
