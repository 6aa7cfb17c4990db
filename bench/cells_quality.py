"""Time to quality of every cell on tiny-shakespeare: a small learning-rate sweep per cell
at a short budget, then each cell's best rate at the full budget (bench/quality.py's run:
90/10 split, the whole validation split scored). The networks alone: every run has
`--ngram 0` (a char model's default n-gram would carry the same share of every cell's
predictions; `-- --ngram 7` mixes it in). Prints a markdown table.

    python bench/cells_quality.py                              # all cells, sweep 1m, final 3m
    python bench/cells_quality.py --cells lstm,gru --lrs 4e-3,8e-3 -- --forget-bias 1

Run it on an idle machine, alone: a time budget measures the machine as much as the cell.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/quality.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's charrnn

from quality import measure  # noqa: E402

from charrnn.cells import CELLS  # noqa: E402


def val_loss(budget: str, flags: list[str]) -> float:
    """The run's final val loss; inf if it diverged (charrnn train exits 1, unsaved)."""
    try:
        return measure(budget, flags)["val_loss"]
    except subprocess.CalledProcessError:
        return math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--lrs", default="4e-3,8e-3,1.6e-2", help="the sweep's learning rates")
    parser.add_argument("--sweep", default="1m", help="time budget of each sweep run")
    parser.add_argument("--final", default="3m", help="time budget of each cell's final run")
    parser.add_argument("train_args", nargs="*", help="extra `charrnn train` flags, after --")
    args = parser.parse_args()
    rows = []
    for cell in args.cells.split(","):
        flags = ["--cell", cell, "--ngram", "0", *args.train_args]  # a flag given wins
        swept = {lr: val_loss(args.sweep, [*flags, "--lr", lr]) for lr in args.lrs.split(",")}
        best = min(swept, key=swept.get)
        final = measure(args.final, [*flags, "--lr", best])
        print(f"{cell}: sweep {swept}; final at lr {best}: {final['val_loss']:.4f}, "
              f"{final['step']:,} steps, {final['tokens'] / final['elapsed']:,.0f} tokens/s",
              flush=True)  # fmt: skip
        rows.append((cell, swept, best, final))
    print(f"\n| cell | sweep ({args.sweep}): val loss at lr {args.lrs} | best lr | val loss "
          f"({args.final}) | bits/char | steps | tokens/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for cell, swept, best, final in rows:
        sweep = " / ".join(f"{v:.4f}" for v in swept.values())
        print(f"| {cell} | {sweep} | {best} | {final['val_loss']:.4f} | {final['val_bpc']:.4f} | "
              f"{final['step']:,} | {final['tokens'] / final['elapsed']:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
