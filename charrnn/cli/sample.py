"""`charrnn sample`: text from a trained run, streamed to stdout as it is made."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from charrnn import api, devices, tokenizers
from charrnn import sample as sampling
from charrnn.cli.app import RunDir, command, err, text_or_file
from charrnn.cli.options import DEFAULT, opt, with_settings
from charrnn.sample import SampleConfig
from charrnn.settings import SEED
from charrnn.tokenizers import ON_UNKNOWN


@command(summary="Generate text from a trained run; the text alone goes to stdout.")
@with_settings(SampleConfig)
def sample(
    run_dir: RunDir,
    *,
    prime: Annotated[
        Optional[str], typer.Option(metavar="TEXT", help="Text to start from (written first).")
    ] = None,
    prime_file: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", help="Start from this file's text (UTF-8, as a corpus)."),
    ] = None,
    allow_unk: Annotated[
        bool, typer.Option("--allow-unk", help="Let a word model make <unk>.")
    ] = False,
    clamp: Annotated[
        Optional[list[str]],
        typer.Option(
            metavar="L:N=V",
            help="Hold layer L's neuron N (its h) at V while sampling, e.g. 0:12=1; repeatable.",
        ),
    ] = None,
    seed: opt(SEED) = DEFAULT,
    on_unknown: opt(ON_UNKNOWN) = None,
    device: opt(devices.DEVICE) = DEFAULT,
    settings: dict,
):
    """Generate text from a trained run. Only the text goes to stdout, as it is made: one
    sample streamed, several each printed when done."""
    prime = text_or_file(prime, prime_file, ("--prime", "--prime-file")) or ""
    dev = devices.resolve(device)
    clamps = parse_clamps(clamp or [])
    loaded = api.load(run_dir, dev)
    num_samples = settings.get("num_samples", 1)
    new_seed = seed is None and not settings.get("beam")  # a beam search draws nothing
    seed = int.from_bytes(os.urandom(4), "little") if new_seed else seed
    if dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(sampling.cpu_threads(num_samples))
    texts = loaded.stream(prime, seed=seed, on_unknown=on_unknown, allow_unk=allow_unk,
                          clamp=clamps, **settings)  # fmt: skip
    note = tokenizers.unknown_note(loaded.tokenizer, prime, on_unknown, "--prime", empty_ok=True)
    if note:  # once the options have passed their checks
        err.print(note, markup=False)
    if new_seed:
        err.print(f"seed {seed}", style="dim")
    out = sys.stdout
    if num_samples == 1 and not settings.get("beam"):
        out.write(prime)
        for piece in texts:
            out.write(piece)
            out.flush()
        out.write("\n")
    else:
        for text in texts:
            out.write(prime + text + "\n")
            out.flush()
    out.flush()


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
