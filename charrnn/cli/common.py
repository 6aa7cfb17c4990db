"""What every command shares: the Typer app, the stderr console, the one-line errors of
bad input (exit code 2), and the option types and parsers used by several commands."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console

from charrnn import checkpoint, corpus

app = typer.Typer(
    help="Train recurrent language models on any text, sample from them, look inside them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""


@contextmanager
def user_errors():
    """Turn every error the user can cause into one line on stderr and exit code 2."""
    try:
        yield
    except (UsageError, corpus.CorpusError, checkpoint.CheckpointError, ValueError) as e:
        typer.echo(f"charrnn: error: {e}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def parse_duration(text: str) -> float:
    """'90' or '90s' -> 90.0, '3m' -> 180.0, '1h30m' -> 5400.0 seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "": 1}
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)\s*([hms]?)\s*)+", text or "")
    if not parts:
        raise typer.BadParameter(f"{text!r} is not a duration (examples: 90s, 3m, 1h30m)")
    seconds = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([hms]?)", text))
    if seconds <= 0:
        raise typer.BadParameter(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m or h else "") + f"{s}s"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise typer.BadParameter(f"{name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter(f"{name}: CUDA is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise typer.BadParameter(f"{name!r}: charrnn runs on cpu or cuda")
    return device


# Options shared by several commands, defined once.
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]
Glob = Annotated[str, typer.Option(help="Which files to read from folders.")]
EncodingErrors = Annotated[
    str, typer.Option(help="strict: stop at invalid UTF-8; replace: read it as U+FFFD.")
]
Run = Annotated[Path, typer.Argument(help="A run directory made by `charrnn train`.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")]
OnUnknown = Annotated[
    str, typer.Option(help="Unknown symbols in the prime: error | skip | unk (to <unk>).")
]
Precision = Annotated[
    Optional[str],
    typer.Option(help="auto | fp32 | fp16 | bf16 (autocast, CUDA only). auto: fp32 for now."),
]


def check_encoding_errors(value: str) -> str:
    if value not in ("strict", "replace"):
        raise typer.BadParameter(f"--encoding-errors must be strict or replace, not {value!r}")
    return value
