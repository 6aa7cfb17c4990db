"""The README's figure: how far back the gradient reaches in rnn, lstm and gru, untrained and
after training on tiny-shakespeare, measured as `charrnn inspect-gradients` measures it.

    python bench/gradients.py                                 # trains each cell 2 minutes
    python bench/gradients.py --time-budget 30s -- --hidden 128   # after --: train flags
    python bench/gradients.py --runs rnn=checkpoints/rnn lstm=checkpoints/lstm
    python bench/gradients.py --run-root checkpoints/gradients    # keep (and reuse) the runs

Each cell is trained with the same flags and budget (a run dir given by --runs, or one
already in --run-root, is used as it is). Both panels read the same text, the corpus's last
--text-chars characters (in the validation part), with the run's tokenizer: the left one an
untrained model of each run's settings (PyTorch's initialisation, --seed), the right one the
run's best model. One PNG (--out), and a table of the ratios on stdout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's charrnn, here and in the subprocesses

from charrnn import api, gradients, tokens  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
COLORS = {"rnn": "tab:blue", "lstm": "tab:orange", "gru": "tab:green"}


def train(cell: str, corpus: Path, run: Path, time_budget: str, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "charrnn", "train", str(corpus), "--cell", cell, "--time-budget",
           time_budget, "--device", "cpu", "--run-dir", str(run), *extra]  # fmt: skip
    print("$ " + " ".join(["charrnn", *cmd[3:]]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(f"  ({time.perf_counter() - start:.0f}s wall)", flush=True)


def runs_of(args) -> dict[str, Path]:
    """cell -> run dir: --runs as given, the rest from --run-root (trained if missing)."""
    given = dict(spec.split("=", 1) for spec in args.runs)
    out = {}
    for cell in args.cells.split(","):
        if cell in given:
            out[cell] = Path(given[cell])
            continue
        run = args.run_root / cell
        if not (run / "config.json").exists():
            train(cell, args.corpus, run, args.time_budget, args.train_args)
        out[cell] = run
    return out


def measure(run_dir: Path, text: str, args) -> tuple[gradients.Gradients, gradients.Gradients]:
    """(untrained, trained) of one run on `text`."""
    run = api.load(run_dir, "cpu")
    ids, _ = tokens.ids_of_text(run.tokenizer, text, run.config.corpus.documents, "skip")
    windows = gradients.windows_of(ids, args.windows, args.max_lag)
    fresh = gradients.untrained(run.config.model, args.seed)
    return gradients.measure(fresh, windows), gradients.measure(run.model, windows)


def figure(results: dict, out: Path, text_chars: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100, sharey=True)
    for ax, (j, title) in zip(axes, enumerate(("untrained", "trained"))):
        for cell, pair in results.items():
            gradients.draw(ax, pair[j], label=cell, color=COLORS.get(cell))
        ax.set_title(title, fontsize=11)
        ax.legend(fontsize=8)
    axes[1].set_ylabel("")
    fig.suptitle(f"gradient through time on the last {text_chars:,} characters of "
                 "tiny-shakespeare (solid: h, dashed: c)", fontsize=11)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out}")


def table(results: dict, runs: dict[str, Path]) -> None:
    """A markdown table: per cell, state and model, lag 1, lag K, their ratio, per lag."""
    K = next(iter(results.values()))[0].max_lag
    print(f"\n| cell | model | state | lag 1 | lag {K} | lag {K} / lag 1 | per lag |")
    print("|---|---|---|---|---|---|---|")
    for cell, pair in results.items():
        for name, result in zip(("untrained", "trained"), pair):
            for f in result.flows:
                if f.layer != len(result.spectra) - 1:
                    continue  # the top layer
                print(f"| {cell} | {name} | {f.state} | {f.norms[0]:.3g} | {f.norms[-1]:.3g} | "
                      f"{f.ratio:.3g} | {f.per_lag:.4f} |")  # fmt: skip
    for cell, run in runs.items():
        r = api.load(run, "cpu")
        print(f"{cell}: {run}, step {r.config.step}, best val loss {r.config.best_val_loss:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--runs", nargs="*", default=[], metavar="CELL=DIR")
    parser.add_argument("--run-root", type=Path, default=ROOT / "checkpoints" / "gradients")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--time-budget", default="2m")
    parser.add_argument("--text-chars", type=int, default=20_000)
    parser.add_argument("--max-lag", type=int, default=200)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="of the untrained models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gradients.png")
    parser.add_argument("train_args", nargs="*", help="extra `charrnn train` flags, after --")
    args = parser.parse_args()
    runs = runs_of(args)
    text = args.corpus.read_text(encoding="utf-8")[-args.text_chars :]
    results = {cell: measure(run, text, args) for cell, run in runs.items()}
    figure(results, args.out, len(text))
    table(results, runs)


if __name__ == "__main__":
    main()
