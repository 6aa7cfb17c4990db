"""The zoo: charrnn's defaults on many texts and sizes, each against a small sweep of the
settings around them, and (word rows) against pytorch/examples' recipe, one budget for all.

    python bench/zoo.py                    # every row: about 90 minutes on 2 CPU cores
    python bench/zoo.py --quick            # three rows, fewer points: a few minutes
    python bench/zoo.py --rows shakespeare-100K-char,wikitext-all-word --budget 60s
    python bench/zoo.py --table            # the table of what is done so far

A row is a text, a size and a tokenizer: every corpus of ../shared/corpora (tiny-shakespeare,
fortunes, WikiText-2's valid.txt) and the built-in `python` corpus (this Python's standard
library), each cut to its first 100 KB, 300 KB or 1 MB (at a line end) and whole, at char
level, and at word level for the prose. The last 10% of a row's text (at most 200 KB) is its
test part, never trained on; charrnn trains on the rest (`--val-frac` holds out its last 10%,
at most 200 KB, to pick the best model and decide when to stop) and `charrnn eval` scores
the best model on the test part. The reference trains on the same rest and is scored on the
same test part, like for like (bench/reference.py).

On each row: the defaults (no flag but --time-budget), then one flag changed at a time
around them: --dropout lower and higher, --lr halved and doubled, --hidden halved and
doubled, and --ngram 0 where the defaults mix in an n-gram. A row meets the target when the defaults' test loss is within 2% of the best of
its runs. Results go to bench/zoo.jsonl, one line per run, so an interrupted zoo carries on
where it stopped (delete a line to run it again). Run it alone on an idle machine: a time
budget measures the machine as much as the model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's charrnn, here and in the subprocesses
sys.path.insert(0, str(ROOT / "bench"))  # bench/reference.py

import reference  # noqa: E402

from charrnn.settings import format_duration, parse_duration  # noqa: E402

SHARED = ROOT.parent / "shared" / "corpora"
TEXTS = {
    "shakespeare": SHARED / "tinyshakespeare.txt",
    "fortunes": SHARED / "fortunes.txt",
    "wikitext": SHARED / "wikitext-2-valtest" / "valid.txt",
    "python": None,  # charrnn's built-in corpus, written out once
}
SIZES = {"100K": 100_000, "300K": 300_000, "1M": 1_000_000, "all": None}
PROSE = ("shakespeare", "fortunes", "wikitext")
HELD_OUT = 200_000  # the most bytes of a test part, or of charrnn's validation split
RESULTS = ROOT / "bench" / "zoo.jsonl"
WORK = Path(os.environ.get("CHARRNN_ZOO", Path(tempfile.gettempdir()) / "charrnn-zoo"))
TARGET = 1.02  # the defaults within 2% of the best of their row


def rows() -> list[tuple[str, str, str]]:
    """(text, size, tokenizer) of every row, in order: 1 MB is left out where the whole
    text is about that size, 300 KB where it is far more."""
    out = []
    for text in TEXTS:
        sizes = ("100K", "300K", "all") if text in ("shakespeare", "wikitext") else (
            "100K", "1M", "all")  # fmt: skip
        for size in sizes:
            out += [(text, size, "char")] + ([(text, size, "word")] if text in PROSE else [])
    return out


def name(row: tuple[str, str, str]) -> str:
    return "-".join(row)


QUICK = ["shakespeare-100K-char", "fortunes-100K-word", "wikitext-all-word"]


def text_of(text: str) -> str:
    if TEXTS[text] is not None:
        return TEXTS[text].read_text(encoding="utf-8")
    cached = WORK / "python.txt"
    if not cached.exists():
        from charrnn import corpus

        WORK.mkdir(parents=True, exist_ok=True)
        read = corpus.read([], "*", "strict")
        cached.write_text("".join(read.chunks()), encoding="utf-8")
    return cached.read_text(encoding="utf-8")


def cut(text: str, size: int | None) -> str:
    """The first `size` bytes (None: all), cut at the end of a line."""
    data = text.encode("utf-8")
    if size is None or len(data) <= size:
        return text
    return data[: data.rfind(b"\n", 0, size) + 1].decode("utf-8")


def parts(row: tuple[str, str, str]) -> tuple[Path, Path, float]:
    """(the text to train on, its test part, the --val-frac for it), written once."""
    folder = WORK / name(row)
    fit, test = folder / "fit.txt", folder / "test.txt"
    if not test.exists():
        folder.mkdir(parents=True, exist_ok=True)
        whole = cut(text_of(row[0]), SIZES[row[1]]).encode("utf-8")
        held = min(len(whole) // 10, HELD_OUT)
        at = whole.rfind(b"\n", 0, len(whole) - held) + 1
        fit.write_bytes(whole[:at])
        test.write_bytes(whole[at:])
    size = fit.stat().st_size
    return fit, test, round(min(0.1, HELD_OUT / size), 4)


def charrnn(*args: str) -> str:
    """stdout of `python -m charrnn ARGS` on this checkout; exits with its stderr if it fails."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "charrnn", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": path})  # fmt: skip
    if done.returncode not in (0, 1):  # 1: diverged, scored as it stands
        sys.exit(f"charrnn {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def run_charrnn(row, flags: list[str], budget: float) -> dict:
    """Train with the defaults and `flags`, score the best model on the test part."""
    fit, test, val_frac = parts(row)
    out = WORK / name(row) / ("defaults" if not flags else "-".join(flags).strip("-"))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    start = time.perf_counter()
    charrnn("train", str(fit), "--tokenizer", row[2], "--val-frac", str(val_frac),
            "--time-budget", f"{budget}s", "--run-dir", str(out), *flags)  # fmt: skip
    wall = time.perf_counter() - start
    unknown = "unk" if row[2] == "word" else "skip"
    scored = json.loads(charrnn("eval", str(out), str(test), "--json", "--on-unknown", unknown))
    config = json.loads((out / "config.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    nats = scored["loss"] * scored["tokens"]
    return {
        "test_loss": scored["loss"], "test_bpc": scored["bpc"],
        "test_ppl_word": math.exp(nats / scored["words"]), "steps": config["step"],
        "ended": config.get("ended"), "best_step": config.get("best_step"),
        "epochs": metrics[-1]["epoch"] if metrics else None, "wall": round(wall, 1),
        "tokens_per_s": metrics[-1]["tokens"] / max(metrics[-1]["elapsed"], 1e-9),
        "settings": {k: config["model"][k] for k in ("hidden", "dropout", "ngram")}
        | {k: config["train"][k] for k in ("lr", "eval_every")},
    }  # fmt: skip


def run_reference(row, budget: float, defaults_dir: Path) -> dict:
    fit, test, _ = parts(row)
    known = reference.charrnn_knows(defaults_dir)
    r = reference.train(
        reference.words_of(fit.read_text(encoding="utf-8"), known),
        reference.words_of(test.read_text(encoding="utf-8"), known),
        budget,
    )
    return {"test_ppl_word": r["ppl_word"], "steps": r["steps"],
            "tokens_per_s": r["tokens_per_s"]}  # fmt: skip


def sweep(settings: dict, tokenizer: str) -> list[list[str]]:
    """One flag changed at a time around the defaults a run was given (a word model's
    embedding is its hidden size: they are tied), and the network alone where the defaults
    mixed in an n-gram (rows run before --ngram have no `ngram` in their settings)."""
    d, lr, h = settings["dropout"], settings["lr"], settings["hidden"]
    drops = (0.1, 0.25) if d == 0 else (round(max(0.0, d - 0.2), 2), round(min(0.7, d + 0.2), 2))
    tied = tokenizer == "word"
    return [
        *(["--dropout", f"{x:g}"] for x in drops if x != d),
        ["--lr", f"{lr / 2:g}"], ["--lr", f"{lr * 2:g}"],
        *(["--hidden", str(x), *(["--embedding", str(x)] if tied else [])]
          for x in (h // 2, h * 2)),
        *([["--ngram", "0"]] if settings.get("ngram") else []),
    ]  # fmt: skip


def done_runs() -> dict[tuple[str, str], dict]:
    if not RESULTS.exists():
        return {}
    lines = [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()]
    return {(r["row"], r["run"]): r for r in lines}


def record(row: str, run: str, budget: float, result: dict) -> None:
    with RESULTS.open("a") as f:
        f.write(json.dumps({"row": row, "run": run, "budget": budget, **result}) + "\n")


def measure(row, budget: float, quick: bool) -> None:
    """Every run of a row not yet in zoo.jsonl."""
    done, key = done_runs(), name(row)
    if (key, "defaults") not in done:
        record(key, "defaults", budget, run_charrnn(row, [], budget))
        print(f"{key}: defaults done", flush=True)
    defaults = done_runs()[(key, "defaults")]
    points = sweep(defaults["settings"], row[2])
    for flags in points[:2] + points[3:4] if quick else points:
        label = " ".join(flags)
        if (key, label) not in done_runs():
            record(key, label, budget, run_charrnn(row, flags, budget))
            print(f"{key}: {label} done", flush=True)
    if row[2] == "word" and (key, "reference") not in done_runs():
        record(key, "reference", budget, run_reference(row, budget, WORK / key / "defaults"))
        print(f"{key}: reference done", flush=True)


def table(names: list[str]) -> str:
    """The markdown table of the rows done so far."""
    runs = done_runs()
    lines = ["| row | defaults (fitted) | test loss | best of the sweep | defaults / best | "
             "word: ppl, reference ppl, ratio |", "|---|---|---|---|---|---|"]  # fmt: skip
    for key in names:
        mine = {run: r for (row, run), r in runs.items() if row == key and run != "reference"}
        if "defaults" not in mine:
            continue
        d = mine["defaults"]
        best_run = min(mine, key=lambda run: mine[run]["test_loss"])
        ratio = d["test_loss"] / mine[best_run]["test_loss"]
        s = d["settings"]
        fitted = (
            f"h {s['hidden']}, dropout {s['dropout']:g}, lr {s['lr']:g}, every {s['eval_every']}"
            + (f", ngram {s['ngram']}" if s.get("ngram") else "")
        )
        ended = f", ended {d['steps']:,}" if d.get("ended") else f", {d['steps']:,} steps"
        word = ""
        ref = runs.get((key, "reference"))
        if ref:
            word = (f"{d['test_ppl_word']:.1f} vs {ref['test_ppl_word']:.1f}: "
                    f"{d['test_ppl_word'] / ref['test_ppl_word']:.2f}")  # fmt: skip
        flag = "" if ratio <= TARGET else " (over 2%)"
        lines.append(f"| {key} | {fitted}{ended} | {d['test_loss']:.4f} | {best_run}: "
                     f"{mine[best_run]['test_loss']:.4f} ({len(mine)} runs) | {ratio:.3f}{flag} "
                     f"| {word} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", default="25s", help="every run's --time-budget")
    parser.add_argument("--rows", help="comma-separated row names (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"the rows {', '.join(QUICK)}, "
                        "with 3 sweep points each")  # fmt: skip
    parser.add_argument("--table", action="store_true", help="print the table and stop")
    args = parser.parse_args()
    everything = [name(r) for r in rows()]
    chosen = QUICK if args.quick else (args.rows.split(",") if args.rows else everything)
    unknown = set(chosen) - set(everything)
    if unknown:
        sys.exit(f"unknown rows {sorted(unknown)}; the rows: {', '.join(everything)}")
    budget = parse_duration(args.budget)
    if not args.table:
        start = time.perf_counter()
        for row in rows():
            if name(row) in chosen:
                measure(row, budget, args.quick)
        print(f"zoo: {format_duration(time.perf_counter() - start)} of wall time", flush=True)
    print(table(chosen))


if __name__ == "__main__":
    main()
