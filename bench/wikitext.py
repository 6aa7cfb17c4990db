"""Char, word and BPE models of the same text, compared in bits per character.

    python bench/wikitext.py                  # 1x512 LSTM, 800 steps each, on the CPU
    python bench/wikitext.py --steps 2000 -- --device cuda --hidden 1024

Trains on ../shared/corpora/wikitext-2-valtest/valid.txt (its last 10% picks the best
model) and scores the best model on test.txt with `charrnn eval`. Every model has the same
recurrent core (--layers, --hidden, --embedding) and the same number of steps of the same
batch; the figures compare because bits/char count the characters the tokens decode to,
whatever the tokens are. Perplexity is per token, so it only compares within one tokenizer.
Steps, not a time budget: the result does not depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "wikitext-2-valtest"


def charrnn(*args: str) -> str:
    cmd = [sys.executable, "-m", "charrnn", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="800")
    parser.add_argument("--tokenizers", default="char,word,bpe")
    parser.add_argument("train_args", nargs="*", help="extra `charrnn train` flags, after --")
    args = parser.parse_args()
    print("| tokenizer | vocab | params | test tokens | test ppl/token | test bits/char | "
          "val bits/char | unknown in test | train time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.tokenizers.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / kind
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "charrnn", "train", str(WIKITEXT / "valid.txt"),
                 "--tokenizer", kind, "--steps", args.steps, "--eval-every", "200",
                 "--layers", "1", "--hidden", "512", "--embedding", "128", "--batch-size", "16",
                 "--seq-len", "128", "--lr", "4e-3", "--run-dir", str(run), *args.train_args],
                check=True, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wall = time.perf_counter() - start
            # a char model skips the few characters of test.txt that valid.txt lacks (counted)
            unknown = "skip" if kind == "char" else "unk" if kind == "word" else "error"
            test = json.loads(charrnn("eval", str(run), str(WIKITEXT / "test.txt"), "--json",
                                      "--on-unknown", unknown))  # fmt: skip
            info = json.loads(charrnn("info", str(run), "--json"))
            metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            best = min(m["val_bpc"] for m in metrics)
        print(
            f"| {kind} | {info['vocab_size']:,} | {info['parameters']:,} | {test['tokens']:,} | "
            f"{test['token_perplexity']:.2f} | {test['bpc']:.4f} | {best:.4f} | "
            f"{test.get('skipped_chars', 0):,} chars skipped, {test['unk_tokens']:,} <unk> | "
            f"{wall:.0f}s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
