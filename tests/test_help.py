"""--help of every command, as an 80-column terminal shows it: choices as choices, every
default stated, no Python type names, whole sentences, and option help that fits."""

import re

import pytest
import typer
from typer.testing import CliRunner

from charrnn.cli import app


def every_command() -> list[list[str]]:
    """charrnn itself and every command and group registered, by their command lines."""
    group = typer.main.get_command(app)
    found = [[]]
    for name, cmd in group.commands.items():
        found.append([name])
        found += [[name, sub] for sub in getattr(cmd, "commands", {})]
    return found


COMMANDS = every_command()
runner = CliRunner()


def help_text(command: list[str]) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def options(text: str) -> dict[str, list[str]]:
    """Each option of a help text -> its lines (the first one and the wrapped ones)."""
    found, current = {}, None
    for line in text.split("Options:", 1)[-1].splitlines():
        m = re.match(r"  (--[a-z-]+)", line)
        if m:
            current = m[1]
            found[current] = [line]
        elif current and line.startswith("    "):
            found[current].append(line)
    return found


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "charrnn")
def test_help_reads_at_80_columns(command):
    text = help_text(command)
    for bad in ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list", "[[", "{"):
        assert bad not in text, f"{bad!r} in the help of {command}"
    assert all(len(line) <= 80 for line in text.splitlines()), text
    opts = {k: v for k, v in options(text).items() if k != "--help"}
    if opts:  # most option help fits on one or two lines (a long name has a line of its own)
        short = sum(len(lines) - (len(lines[0].split()) <= 2) <= 2 for lines in opts.values())
        assert short >= 0.75 * len(opts), opts


def test_the_command_list_gives_each_a_whole_sentence():
    listing = help_text([]).split("Commands:", 1)[1]
    summaries = re.findall(r"^  \S+\s+(.+(?:\n {4,}.+)*)", listing, re.MULTILINE)
    assert len(summaries) == len(app.registered_commands) + len(app.registered_groups)
    for summary in summaries:
        assert " ".join(summary.split()).endswith("."), summary


def test_choices_and_device_dependent_defaults_are_shown():
    train = options(help_text(["train"]))
    joined = {k: " ".join(" ".join(v).split()) for k, v in train.items()}
    assert "--cell [lstm|gru|rnn]" in joined["--cell"] or "One of: lstm" in joined["--cell"]
    assert "[default: cpu 512, cuda 1024, word 256, cuda word 1024]" in joined["--hidden"]
    assert "[default: cpu 3m0s, cuda 2m0s]" in joined["--time-budget"]
    assert "--tokenizer [char|word|bpe|unigram]" in joined["--tokenizer"]
    assert "[default: --no-tie-weights, word --tie-weights]" in joined["--tie-weights"]
    # every option that has a default says it
    missing = [k for k, v in joined.items() if "[default:" not in v]
    # (--forget-bias's help says what its default is: PyTorch's initialisation)
    assert set(missing) <= {"--steps", "--epochs", "--run-dir", "--resume", "--init-from",
                            "--help", "--forget-bias"}, missing  # fmt: skip
    sample = {k: " ".join(" ".join(v).split()) for k, v in options(help_text(["sample"])).items()}
    assert "[default: cpu]" in sample["--device"] and "[default: 1]" in sample["--temperature"]


def test_usage_lines_name_arguments_plainly():
    assert "Usage: charrnn train [OPTIONS] [CORPUS]..." in help_text(["train"])
    assert "Usage: charrnn eval [OPTIONS] RUN CORPUS..." in help_text(["eval"])
