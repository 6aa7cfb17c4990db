"""`charrnn sample`: the prime checked and encoded, then text streamed to stdout as it is made."""

from __future__ import annotations

import os
import re
import sys
from typing import Annotated, Optional

import torch
import typer

from charrnn import checkpoint
from charrnn import sample as sampling
from charrnn import tokenizer as tokenizers
from charrnn.cli.common import (
    Device,
    OnUnknown,
    Run,
    UsageError,
    app,
    err,
    resolve_device,
    user_errors,
)

# sample --------------------------------------------------------------------------------


@app.command()
def sample(
    run: Run,
    prime: Annotated[str, typer.Option(help="Text to start from (printed first).")] = "",
    length: Annotated[int, typer.Option(help="Tokens to generate per sample.")] = 500,
    temperature: Annotated[float, typer.Option(help="0 = greedy; higher = wilder.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample among the k likeliest.")] = None,
    top_p: Annotated[
        Optional[float], typer.Option(help="Sample within probability mass p.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Same seed, same text.")] = None,
    num_samples: Annotated[int, typer.Option(help="Samples made together, one batch.")] = 1,
    on_unknown: OnUnknown = "error",
    allow_unk: Annotated[
        bool, typer.Option("--allow-unk", help="Let a word model generate <unk>.")
    ] = False,
    clamp: Annotated[
        Optional[list[str]],
        typer.Option(help="Hold LAYER:NEURON's h at VALUE while sampling: 0:12=1 (repeatable)."),
    ] = None,
    device: Device = "cpu",
):
    """Generate text from a trained run; the text alone goes to stdout, as it is made."""
    with user_errors():
        dev = resolve_device(device)
        clamps = parse_clamps(clamp or [])
        model, tok, run_config = checkpoint.load_best(run, dev)
        documents = run_config["corpus"].get("documents", "none")
        config = sampling.sample_config(
            tok, documents, allow_unk, length=length, temperature=temperature, top_k=top_k,
            top_p=top_p, num_samples=num_samples,
        )  # fmt: skip
        sampling.check_clamp(model.config, clamps)
        prime_ids = encode_prime(tok, prime, on_unknown)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
        err.print(f"seed {seed}", style="dim")
    if dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(sampling.cpu_threads(num_samples))
    generator = torch.Generator(dev).manual_seed(seed)
    # A model of documents starts each sample where it ended one itself (run_to_eos).
    burn_in = length if documents != "none" and not prime else 0
    steps = sampling.generate(
        model, prime_ids, config, tok.eos_id, generator, clamp=clamps, burn_in=burn_in
    )
    if num_samples == 1:
        stream_one(steps, tok, prime)
    else:
        print_batch(steps, tok, prime, num_samples)


def encode_prime(tok, prime: str, on_unknown: str) -> list[int]:
    """<eos> then the prime's ids: a sample starts where every document starts."""
    if on_unknown not in tokenizers.ON_UNKNOWN:
        raise UsageError(f"--on-unknown {on_unknown}: choose error | skip | unk")
    unknown = tok.unknown(prime)
    if unknown and on_unknown == "error":
        shown = " ".join(repr(c) for c in unknown[:20])
        raise UsageError(
            f"--prime has {'words' if tok.kind == 'word' else 'characters'} the model has "
            f"never seen: {shown} (--on-unknown skip drops them"
            + (", unk maps them to <unk>)" if tok.unk_id is not None else ")")
        )
    if unknown and on_unknown == "unk" and tok.unk_id is None:
        raise UsageError(f"--on-unknown unk: a {tok.kind} model has no <unk>; use skip")
    return [tok.eos_id, *tok.encode(prime, on_unknown).tolist()]


def stream_one(steps, tok, prime: str) -> None:
    """Write one sample as it is made. The whole sample is decoded again at each token,
    so tokens that only make sense together (the UTF-8 bytes of one character, from a
    byte-fallback BPE model) are written once they are complete."""
    out = sys.stdout
    out.write(prime)
    ids: list[int] = []
    written = 0
    for step, _ in steps:  # one sample: generate() ends the moment it says <eos>
        ids.append(step[0].item())
        text = tok.decode(ids)
        if not text.endswith("\ufffd"):
            out.write(text[written:])
            out.flush()
            written = len(text)
    out.write(tok.decode(ids)[written:] + "\n")
    out.flush()


def print_batch(steps, tok, prime: str, n: int) -> None:
    """Print each sample of a batch once it is finished, in order."""
    tokens: list[list[int]] = [[] for _ in range(n)]
    finished = [False] * n
    printed = 0
    for ids, alive in steps:
        for b, (token, live) in enumerate(zip(ids.tolist(), alive.tolist())):
            if live and token != tok.eos_id:
                tokens[b].append(token)
            finished[b] = not live or token == tok.eos_id
        while printed < n and finished[printed]:
            sys.stdout.write(prime + tok.decode(tokens[printed]) + "\n")
            sys.stdout.flush()
            printed += 1
    for b in range(printed, n):
        sys.stdout.write(prime + tok.decode(tokens[b]) + "\n")
    sys.stdout.flush()


def parse_clamps(specs: list[str]) -> dict[tuple[int, int], float]:
    """['0:12=1', '1:3=-0.5'] -> {(0, 12): 1.0, (1, 3): -0.5}; BadParameter on bad syntax."""
    clamps = {}
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    for spec in specs:
        m = re.fullmatch(rf"\s*(\d+)\s*:\s*(\d+)\s*=\s*({number})\s*", spec)
        if not m:
            raise typer.BadParameter(
                f"--clamp {spec!r} is not LAYER:NEURON=VALUE (for example 0:12=1 or 1:3=-0.5)"
            )
        clamps[int(m[1]), int(m[2])] = float(m[3])
    return clamps
