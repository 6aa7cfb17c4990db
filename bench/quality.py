"""Time to quality on tiny-shakespeare: train for a fixed wall-clock budget, print val loss.

    python bench/quality.py                       # CPU defaults, --time-budget 3m
    python bench/quality.py --time-budget 2m -- --device cuda
    python bench/quality.py -- --hidden 384 --lr 3e-3    # anything after -- goes to train

Uses ../shared/corpora/tinyshakespeare.txt and the standard split (first 90% of the
characters train, last 10% validate: the split nanoGPT's shakespeare_char uses), so the
figure compares with published ones. The validation loss is over the whole split.
Target on the 2-core CPU machine: <= 1.47 nats/char in 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def measure(time_budget: str, train_args: list[str], corpus: Path = CORPUS) -> dict:
    """Train for `time_budget` on the corpus (90/10) and return the last evaluation's record
    of metrics.jsonl, with the model's config and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "charrnn", "train", str(corpus), "--val-frac", "0.1",
               "--time-budget", time_budget, "--eval-every", "1000000", "--run-dir", str(run),
               *train_args]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
        config = json.loads((run / "config.json").read_text())
    return {**last, "model": config["model"], "train": config["train"], "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-budget", default="3m")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("train_args", nargs="*", help="extra `charrnn train` flags, after --")
    args = parser.parse_args()
    last = measure(args.time_budget, args.train_args, args.corpus)
    model = last["model"]
    print(
        f"quality: {model['cell']} {model['layers']}x{model['hidden']}: val loss "
        f"{last['val_loss']:.4f} nats/char ({last['val_bpc']:.4f} bits/char) after "
        f"{last['elapsed']:.0f}s of training, {last['step']} steps, {last['tokens']:,} tokens "
        f"({last['wall']:.0f}s wall in all)"
    )


if __name__ == "__main__":
    main()
