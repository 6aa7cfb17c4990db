"""A 200 MB corpus: encode throughput, the token cache, and peak memory of `charrnn train`.

    python bench/big_corpus.py                       # char tokens, 200 MB, 30 steps
    python bench/big_corpus.py --mb 500 --tokenizer word

Writes a corpus of --mb megabytes (the texts in ../shared/corpora, repeated) to a temporary
folder, then runs `charrnn train` on it twice in a fresh token cache: the first run encodes
the text into the memory-mapped id file, the second finds it in the cache. For each run it
prints the wall time, the encode time and throughput that train reports, and the peak
resident memory of the process (ru_maxrss from wait4, which counts the pages of the
memory-mapped ids it touched too). Last, the same command on the first 1 MB of the text
gives the memory of the process itself (PyTorch, the model, the optimizer). The point: peak
memory stays far below the size of the text and of its ids, and close to that of a 1 MB
run, because neither the text nor its ids are ever held whole.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def write_corpus(path: Path, mb: int) -> int:
    texts = [p.read_bytes() for p in sorted(SHARED.rglob("*.txt"))]
    size = 0
    with open(path, "wb") as f:
        while size < mb * 1_000_000:
            for text in texts:
                f.write(text)
                size += len(text)
    return size


def run(args: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB, stderr) of one charrnn process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", *args], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"charrnn failed ({proc.returncode}):\n{stderr}")
    return time.perf_counter() - start, usage.ru_maxrss // 1024, stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--tokenizer", default="char")
    parser.add_argument("--steps", default="30")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size = write_corpus(tmp / "big.txt", args.mb)
        print(f"corpus: {size / 1e6:,.1f} MB ({size:,} bytes), --tokenizer {args.tokenizer}")
        with open(tmp / "big.txt", "rb") as f, open(tmp / "small.txt", "wb") as small:
            small.write(f.read(1_000_000).rsplit(b"\n", 1)[0] + b"\n")
        runs = (
            ("first run (encodes)", "big.txt", "cache"),
            ("second run (cache)", "big.txt", "cache"),
            ("the first 1 MB alone", "small.txt", "cache-small"),
        )
        for i, (attempt, name, cache) in enumerate(runs):
            env = {**os.environ, "CHARRNN_CACHE": str(tmp / cache)}
            train = ["train", str(tmp / name), "--tokenizer", args.tokenizer,
                     "--steps", args.steps, "--eval-every", "1000000", "--val-frac", "0.001",
                     "--device", "cpu", "--run-dir", str(tmp / f"run{i}")]  # fmt: skip
            wall, rss, stderr = run(train, env)
            how = re.search(
                r"(encoded .*? in ([\d.]+)s .*?chars/s\)|token ids from the cache)", stderr
            )
            mb = (tmp / name).stat().st_size / 1e6
            timed = how and how.group(2) and name == "big.txt"  # 1 MB: too quick to time
            rate = f" = {mb / float(how.group(2)):,.1f} MB/s" if timed else ""
            tokens = re.search(r"([\d,]+) train / ([\d,]+) val tokens", stderr)
            ids_mb = sum(f.stat().st_size for f in (tmp / cache).rglob("ids.bin")) / 1e6
            made = how.group(1) if how else "?"
            print(
                f"{attempt}: {made}{rate}; {tokens.group(0) if tokens else ''};"
                f" id file {ids_mb:,.1f} MB; peak RSS {rss:,} MB; wall {wall:.1f}s"
                f" ({args.steps} steps of training included)",
                flush=True,
            )


if __name__ == "__main__":
    main()
