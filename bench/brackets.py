"""Does a small LSTM grow a bracket-depth counter? Train one on corpora/brackets.txt, then
rank its cells against bracket depth on held-out lines: the logic of
`charrnn inspect-neurons RUN --find "bracket depth"`.

    python bench/brackets.py                              # 1x64 LSTM, 2 minutes
    python bench/brackets.py --time-budget 60s -- --hidden 128   # after --: train flags
    python bench/brackets.py --run-dir checkpoints/brackets      # keep the run

Prints the best |r| (Pearson, over held-out characters never trained on) of tanh(c) and
of h with the depth. Target: |r| >= 0.8 for one single cell.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from charrnn import checkpoint, neurons

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    """corpora/brackets.py, the corpus generator (corpora/ is a folder, not a package)."""
    spec = importlib.util.spec_from_file_location("brackets", ROOT / "corpora" / "brackets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(corpus: Path, run: Path, time_budget: str, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "charrnn", "train", str(corpus), "--layers", "1", "--hidden",
           "64", "--time-budget", time_budget, "--run-dir", str(run), *extra]  # fmt: skip
    print("$ " + " ".join(cmd[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def best_cells(run: Path, text: str) -> None:
    """Rank tanh(c) and h of every layer against the bracket depth of `text`; print the best."""
    model, tok, config = checkpoint.load_best(run)
    tr = neurons.trace_text(model, tok, text)
    name, depth = neurons.feature("bracket depth", tr.tokens)
    m = config["model"]
    print(
        f"brackets: {m['cell']} {m['layers']}x{m['hidden']}, step {config['step']}, best val "
        f"loss {config['best_val_loss']:.4f} nats/char; {name} over {len(depth):,} held-out chars"
    )
    for state in ("c", "h"):
        best = neurons.rank_by_feature(neurons.activation(tr, state), depth, top=1)[0]
        print(
            f"  best |r| {best.score:.3f} ({'+' if best.sign > 0 else '-'}): layer {best.layer}, "
            f"neuron {best.neuron}, {neurons.LABELS[state]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-budget", default="2m")
    parser.add_argument("--held-out", type=int, default=20_000, help="characters to rank on")
    parser.add_argument("--run-dir", type=Path, help="keep the run here (default: a temp dir)")
    parser.add_argument("train_args", nargs="*", help="extra `charrnn train` flags, after --")
    args = parser.parse_args()
    generator = load_generator()
    corpus = ROOT / "corpora" / "brackets.txt"
    if not corpus.exists():
        corpus.write_text(generator.generate(), encoding="utf-8")
    held_out = generator.generate(args.held_out, seed=1)  # other lines than training's seed 0
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run_dir or Path(tmp) / "run"
        wall = train(corpus, run, args.time_budget, args.train_args)
        best_cells(run, held_out)
    print(f"  ({wall:.0f}s wall for training, evaluations included)")


if __name__ == "__main__":
    main()
