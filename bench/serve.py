"""How `charrnn serve` scales with concurrent clients: characters per second and request
latency (p50, p99) at 1, 8 and 32 clients, and the ratio of 32 clients' throughput to one
client's (the batching engine's gain: the target is 6 or more on a CPU for a 1x512 char
model and 200-token completions).

    python bench/serve.py [RUN] [--clients 1,8,32] [--seconds 30] [--requests 400]
                          [--max-tokens 200] [--stream]

Without RUN it trains a 1x512 char LSTM for a few steps on the built-in corpus (the
speed of a step does not depend on how well the model is trained). The server is a real
`python -m charrnn serve` process on 127.0.0.1 and a free port; the clients are asyncio
tasks in this process, each sending one completion after another (prompt "def ",
temperature 1, max_tokens tokens, no stop sequence, so every request makes all of them).
Each level runs until --seconds have passed or --requests requests are done, whichever
comes first, after 2 untimed requests per client. Prints a markdown table for
bench/RESULTS.md. On a machine of few cores, pin the server and this process apart
(taskset) and keep other work off them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROMPT = "def "


def train_run(folder: Path) -> Path:
    """A 1x512 char model, a few steps into training."""
    run = folder / "serve-1x512"
    subprocess.run([sys.executable, "-m", "charrnn", "train", "--layers", "1", "--hidden",
                    "512", "--embedding", "64", "--steps", "20", "--eval-every", "20",
                    "--run-dir", str(run)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return run


def start_server(run: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "charrnn", "serve", str(run), "--port", "0",
               "--device", "cpu"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # keep reading: the access log would fill the pipe
        for line in process.stderr:
            if line.startswith("serving ") and not found:
                found.append(re.search(r"http://\S+?:\d+", line)[0])
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(120):
        process.kill()
        raise SystemExit("the server did not start")
    return process, found[0]


async def client(http, url, body, stream, deadline, budget, out) -> None:
    """One client: a request after another until the deadline or the budget is spent."""
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        started = time.monotonic()
        if stream:
            chars = 0
            async with http.stream("POST", url, json={**body, "stream": True}) as reply:
                async for line in reply.aiter_lines():
                    if line.startswith("data: {"):
                        chars += len(_text(line))
        else:
            reply = await http.post(url, json=body)
            reply.raise_for_status()
            chars = len(reply.json()["choices"][0]["text"])
        out.append((time.monotonic() - started, chars))


def _text(line: str) -> str:
    return json.loads(line[6:])["choices"][0]["text"]


async def level(url: str, clients: int, args) -> dict:
    body = {"prompt": PROMPT, "max_tokens": args.max_tokens, "temperature": 1.0}
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        warm: list = []
        await asyncio.gather(*(client(http, url, body, args.stream, time.monotonic() + 60,
                                      [2], warm) for _ in range(clients)))  # fmt: skip
        done: list[tuple[float, int]] = []
        budget = [args.requests]
        started = time.monotonic()
        deadline = started + args.seconds
        await asyncio.gather(*(client(http, url, body, args.stream, deadline, budget, done)
                               for _ in range(clients)))  # fmt: skip
        elapsed = time.monotonic() - started
    latencies = sorted(t for t, _ in done)
    return {"clients": clients, "requests": len(done), "seconds": elapsed,
            "chars_per_s": sum(c for _, c in done) / elapsed,
            "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="a run directory (default: train a 1x512)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=30.0, help="per level, at most")
    parser.add_argument("--requests", type=int, default=400, help="per level, at most")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--stream", action="store_true", help="streamed completions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else train_run(Path(tmp))
        process, base = start_server(run)
        try:
            rows = [asyncio.run(level(base + "/v1/completions", int(c), args))
                    for c in args.clients.split(",")]  # fmt: skip
        finally:
            process.terminate()
            process.wait(60)
    kind = "streamed" if args.stream else "whole"
    print(f"`python bench/serve.py {' '.join(sys.argv[1:])}`: {args.max_tokens}-token "
          f"completions ({kind}), {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| clients | requests | chars/s | p50 latency | p99 latency |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['chars_per_s']:,.0f} | "
              f"{r['p50']:.2f} s | {r['p99']:.2f} s |")  # fmt: skip
    by = {r["clients"]: r["chars_per_s"] for r in rows}
    if 1 in by and len(by) > 1:
        most = max(by)
        print(f"\n{most} clients' throughput / 1 client's: {by[most] / by[1]:.1f}x")


if __name__ == "__main__":
    main()
