"""Fine-tuning against training from scratch on a small text: does a model of a larger
text, carried to a small one (`charrnn train SMALL --init-from BASE`), beat a model trained
on the small text alone in the same time? Char and word level.

    python bench/finetune.py                                  # 5m bases, 2m each after
    python bench/finetune.py --base fortunes --levels char    # a base of fortunes instead
    python bench/finetune.py --base shakespeare --small fortunes --small-kb 100
    python bench/finetune.py --base-budget 20s --budget 10s --levels char   # a quick check

For each level (--tokenizer char, word): a base run trained on a larger text for
--base-budget (--base: all of WikiText-2's valid.txt and test.txt, the default, or all of
fortunes or of tiny-shakespeare, from ../shared/corpora); then, on the first --small-kb
KB of another of them (--small: tiny-shakespeare or fortunes), one run fine-tuned from the
base and one from scratch, each for --budget, with the defaults of each (the fine-tuned
one takes the base's model and the fine-tuning defaults; the scratch one the device's
defaults for the small text, the same model shape as the base). Both read the same text,
so both hold out its last 10% (--val-frac) and are scored there: the best evaluation of
each run (every --eval-every steps). The figure compared is bits per character (total nats
over the held-out characters), which is the val loss in proportion at char level, and at
word level compares models whose vocabularies (so tokens) differ: the fine-tuned one has
the base's words and the small text's, the scratch one the small text's.

Prints a markdown table (stdout): level, base run, budget, fine-tuned and scratch val
loss and bits/char, and the ratio fine-tuned / scratch of bits/char. Every run is an
ordinary run directory under --out. CPU timings from a busy machine are noise: run it on
an idle one (and say which, with the date).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's charrnn, here and in the subprocesses

from charrnn.settings import format_duration, parse_duration  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"
WIKITEXT = ("wikitext-2-valtest/valid.txt", "wikitext-2-valtest/test.txt")
SMALL = {"shakespeare": "tinyshakespeare.txt", "fortunes": "fortunes.txt"}
BASES = {"wikitext": WIKITEXT, **{name: (path,) for name, path in SMALL.items()}}
NAMES = {"wikitext": "WikiText-2 valid+test", "fortunes": "fortunes", "shakespeare":
         "tiny-shakespeare"}  # fmt: skip


def charrnn(*args: str) -> None:
    """`python -m charrnn ARGS` on this checkout; exits with its stderr if it fails."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "charrnn", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path})  # fmt: skip
    if done.returncode:
        sys.exit(f"charrnn {args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    print(done.stderr.splitlines()[0][:300], file=sys.stderr)  # its first line


def best(run: Path) -> dict:
    """The metrics.jsonl record of the run's best evaluation (model.safetensors)."""
    config = json.loads((run / "config.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r["step"] == config["best_step"])


def small_text(args: argparse.Namespace, out: Path) -> Path:
    """The first --small-kb KB of the small corpus (cut at a line), as out/small.txt."""
    text = (args.corpora / SMALL[args.small]).read_text(encoding="utf-8")
    cut = text[: args.small_kb * 1000]
    path = out / "small.txt"
    path.write_text(cut[: cut.rfind("\n") + 1], encoding="utf-8")
    return path


def level(kind: str, args: argparse.Namespace, out: Path, small: Path) -> dict:
    """Train the base, the fine-tuned and the scratch run of one level; their figures."""
    common = ["--tokenizer", kind, "--device", args.device, *args.extra]
    base, tuned, scratch = (out / f"{kind}-{name}" for name in ("base", "tuned", "scratch"))
    charrnn("train", *(args.corpora / f for f in BASES[args.base]), *common, "--time-budget",
            args.base_budget, "--run-dir", base)  # fmt: skip
    each = ["--time-budget", args.budget, "--eval-every", args.eval_every, "--device",
            args.device, *args.extra]  # fmt: skip
    charrnn("train", small, "--init-from", base, *each, "--run-dir", tuned)
    charrnn("train", small, "--tokenizer", kind, *each, "--run-dir", scratch)
    runs = {name: best(run) for name, run in (("base", base), ("tuned", tuned),
                                              ("scratch", scratch))}  # fmt: skip
    runs["base_steps"] = json.loads((base / "config.json").read_text())["step"]
    return runs


def row(kind: str, runs: dict, args: argparse.Namespace) -> str:
    b, t, s = runs["base"], runs["tuned"], runs["scratch"]
    unit = "char" if kind == "char" else "token"
    base = (f"{NAMES[args.base]}, {format_duration(args.base_budget)}, "
            f"{runs['base_steps']:,} steps: val {b['val_loss']:.3f} nats/{unit}")  # fmt: skip
    tuned = f"{t['val_loss']:.3f} ({t['val_bpc']:.3f} bits/char) at step {t['step']:,}"
    scratch = f"{s['val_loss']:.3f} ({s['val_bpc']:.3f} bits/char) at step {s['step']:,}"
    ratio = t["val_bpc"] / s["val_bpc"]
    return (f"| {kind} | {base} | {format_duration(args.budget)} each | {tuned} | {scratch} "
            f"| **{ratio:.3f}** |")  # fmt: skip


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-budget", type=parse_duration, default=300.0)
    p.add_argument("--budget", type=parse_duration, default=120.0, help="each small run's")
    p.add_argument("--base", choices=tuple(BASES), default="wikitext", help="the base's text")
    p.add_argument("--small", choices=tuple(SMALL), default="shakespeare")
    p.add_argument("--small-kb", type=int, default=60)
    p.add_argument("--levels", default="char,word")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--corpora", type=Path, default=CORPORA)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    p.add_argument("--out", type=Path, default=ROOT / "checkpoints" / f"bench-finetune-{stamp}")
    p.add_argument("extra", nargs="*", help="after --: train flags for every run")
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.base == args.small:
        sys.exit(f"--base {args.base} would hold the small text: give another --small")
    args.out.mkdir(parents=True, exist_ok=False)
    small = small_text(args, args.out)
    kinds = [k.strip() for k in args.levels.split(",") if k.strip()]
    rows = [row(kind, level(kind, args, args.out, small), args) for kind in kinds]
    chars = len(small.read_text(encoding="utf-8"))
    print(f"Fine-tuned from a base of {NAMES[args.base]} against trained from scratch, "
          f"on the first {chars:,} characters of {args.small} (last 10% held out); "
          f"{args.device}, "
          f"{datetime.now():%Y-%m-%d}; `python bench/finetune.py` with "
          f"{' '.join(sys.argv[1:]) or 'its defaults'}\n")  # fmt: skip
    print("| level | base run | budget | fine-tuned: val loss (per token) | from scratch | "
          "ratio of bits/char |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
