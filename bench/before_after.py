"""`charrnn bench train` and `charrnn bench sample` in two checkouts, alternated: does a
change make the step or the sampler slower? (The structure issue's check; bench/RESULTS.md.)

    git worktree add ../before 29e28a8
    python bench/before_after.py ../before --rounds 3

Each round runs, in each checkout in turn (before first), the training step of a 2x256
LSTM (batch 32, seq-len 128, 60 timed steps) and one sample stream of it (5,000
characters), each `python -m charrnn bench ... --json` with that checkout first on
PYTHONPATH; it prints charrnn's tokens/s (and the plain reference's, timed in the same
process) per round and their means. Run it on an idle machine: two processes on two
cores measure each other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

AFTER = Path(__file__).resolve().parents[1]
COMMON = ["--layers", "2", "--hidden", "256", "--device", "cpu", "--json"]
BENCHES = {
    "train": ["train", "--batch-size", "32", "--seq-len", "128", "--steps", "60", *COMMON],
    "sample": ["sample", "--num-samples", "1", "--steps", "5000", *COMMON],
}


def bench(tree: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-m", "charrnn", "bench", *args], cwd=tree,
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path, help="the other checkout (a git worktree)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": AFTER}
    seen: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for n in range(1, args.rounds + 1):
        for kind, flags in BENCHES.items():
            for side, tree in trees.items():
                r = bench(tree, flags)
                pair = (r["ours"]["tokens_per_sec"], r["reference"]["tokens_per_sec"])
                seen.setdefault((kind, side), []).append(pair)
                print(f"round {n} {kind:6s} {side:6s}: charrnn {pair[0]:9,.0f} tokens/s, "
                      f"reference {pair[1]:9,.0f}", flush=True)  # fmt: skip
    print("\n| bench | side | charrnn tokens/s, each round | mean | reference, mean |")
    print("|---|---|---|---|---|")
    for (kind, side), pairs in seen.items():
        ours = [p[0] for p in pairs]
        rounds = ", ".join(f"{x:,.0f}" for x in ours)
        print(f"| {kind} | {side} | {rounds} | {statistics.mean(ours):,.0f} | "
              f"{statistics.mean(p[1] for p in pairs):,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
