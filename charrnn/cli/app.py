"""The frame of the `charrnn` command: the Typer app, the one boundary where a user's mistake
becomes one line on stderr, the help layout, and the stderr console.

Every command module registers itself on `app` with `command()`. A CharrnnError from the
library, a usage error from the command line (a bad choice, a bad number, a missing value,
an unknown flag) and a typer.BadParameter all end the same way, here and nowhere else:
`charrnn: error: MESSAGE` on stderr and exit code 2, before anything is written. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from charrnn import corpus
from charrnn.cli.options import own_options
from charrnn.errors import CharrnnError, ConfigError

EXIT_USAGE = 2
COLUMN = 24  # the widest option name column; longer names (and metavars) sit on their own line
RunDir = Annotated[
    Path, typer.Argument(metavar="RUN", help="A run directory made by charrnn train.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")]
err = Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line


def text_or_file(text: str | None, file: Path | None, flags: tuple[str, str]) -> str | None:
    """The text of a command's pair of options `--text TEXT | --file FILE` (`flags`: their
    names): one of them, read as a corpus file is (a regular UTF-8 file), or None."""
    if text is not None and file is not None:
        raise ConfigError(f"give {flags[0]} or {flags[1]}, not both")
    return corpus.read_file(file, flags[1]) if file is not None else text


def error_line(message: str) -> str:
    """A message as the one line charrnn prints for it."""
    message = re.sub(r"\s*\n\s*", "; ", message.strip())
    if re.match(r"[A-Z][a-z]", message):  # click's "Invalid value ..." reads on after "error:"
        message = message[0].lower() + message[1:]
    return f"charrnn: error: {message}"


def usage_message(error: Exception, argv: list[str] = ()) -> str:
    """A click usage error as one sentence that says where to look."""
    ctx = getattr(error, "ctx", None)
    text = error.format_message() if hasattr(error, "format_message") else str(error)
    text = text.replace("Value error, ", "")  # how Typer's validation words a bad choice
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    dashed = dashed_file(error, argv)
    if dashed is not None:
        text = f"no such option: {dashed}"
        where = f" (a file whose name starts with '-'? put -- before it: -- {dashed})"
    return text.rstrip(".") + where


def dashed_file(error: Exception, argv: list[str]) -> str | None:
    """The word of the command line that click took for an unknown option but that looks
    like a file (`-dash.txt`, read as the options -d -a ...), or None."""
    name = getattr(error, "option_name", None)
    if type(error).__name__ != "NoSuchOption" or not name:
        return None
    words = argv[: argv.index("--")] if "--" in argv else argv
    word = next((w for w in words if w.startswith(name)), name)
    named_like_a_file = not word.startswith("--") and ("." in word or "/" in word)
    return word if os.path.exists(word) or named_like_a_file else None


class Group(TyperGroup):
    """The top-level group: its main() is the error boundary of every command."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        try:
            code = super().main(args, "charrnn", complete_var, False, **extra)
        except typer.Abort:
            typer.echo("charrnn: aborted", err=True)
            code = 1
        except Exception as e:  # noqa: BLE001 - sorted below: user errors, or re-raised
            code = user_error(e, argv)
        if not standalone_mode:
            return code
        sys.exit(code or 0)


def user_error(error: Exception, argv: list[str] = ()) -> int:
    """Print a user's error as one line and return its exit code; re-raise anything else.
    `argv`: the command line, for a hint on a file taken for an option."""
    click_error = type(error).__module__.startswith(("typer", "click"))
    if click_error and type(error).__name__ == "NoArgsIsHelpError":
        typer.echo(error.format_message(), err=True)  # bare `charrnn`: the help, as usage
        return EXIT_USAGE
    if click_error and hasattr(error, "exit_code") and hasattr(error, "format_message"):
        typer.echo(error_line(usage_message(error, list(argv))), err=True)
        return error.exit_code
    if isinstance(error, CharrnnError):
        typer.echo(error_line(str(error)), err=True)
        return EXIT_USAGE
    raise error


def argument_name(param) -> str:
    """RUN, [CORPUS]... or CORPUS...: how usage and help name an argument."""
    name = param.metavar or param.name.upper()
    if param.nargs == -1:
        return f"{name}..." if param.required else f"[{name}]..."
    return name if param.required else f"[{name}]"


class Command(TyperCommand):
    """A command whose help reads at 80 columns: arguments by name, options with their
    metavars, choices and defaults (cli/options.py), and no Python type names."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = ["[OPTIONS]"]
        pieces += [argument_name(p) for p in self.get_params(ctx) if _is_argument(p)]
        return pieces

    def format_options(self, ctx, formatter) -> None:
        params = self.get_params(ctx)
        arguments = [(argument_name(p), p.help or "") for p in params if _is_argument(p)]
        options = [rec for p in params if not _is_argument(p) if (rec := p.get_help_record(ctx))]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows, col_max=COLUMN)


def _is_argument(param) -> bool:
    return param.param_type_name == "argument"


app = typer.Typer(
    cls=Group,
    help="Train recurrent language models on any text, sample from them, look inside them.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,  # a bug keeps its plain traceback
    context_settings={"max_content_width": 100},
)


def command(name: str | None = None, *, summary: str, parent: typer.Typer = app):
    """Register a command. `summary`: the one sentence `charrnn --help` lists it by. Its own
    options typed by options.opt() get their declared defaults for this command."""

    def register(func):
        called = name or func.__name__.strip("_").replace("_", "-")
        if parent.info.name:  # a group's command: `bench sample` is bench-sample, not sample
            called = f"{parent.info.name}-{called}"
        return parent.command(name, cls=Command, short_help=summary)(own_options(func, called))

    return register
