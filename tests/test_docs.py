"""The docs, run: every command line and Python block a user would copy from README.md and
docs/*.md, and every link between the pages.

What runs: the fenced ```bash, ```console and ```python blocks of each page, in order, in a
working directory of the page's own, so that a later line finds the runs an earlier one
made (write examples that chain: train into checkpoints/NAME, then sample from it). A
`charrnn ...` (or `python -m charrnn ...`) line runs in process on charrnn.cli.app and must
exit 0; `a && b` runs both, `> FILE` writes stdout to FILE, `# ...` is a comment. In a
```console block `$ ` marks a command and the lines under it are output that must appear in
what it prints; a command shown printing a `charrnn: error:` line must exit 2, and runs
exactly as written. A ```python block is exec'd in the page's directory.

Substitutions, so that a page runs in seconds (these and no others):
- train and compare: the durations (--time-budget, --epochs, --steps) and sizes (--hidden,
  --embedding, --batch-size, --seq-len, --eval-every) a line gives are replaced by
  conftest's TINY flags; --layers stays as written (TINY's 1 where none is given); where
  the weights are tied (--tie-weights, or a word model) --embedding is TINY's --hidden. A
  --resume line gets --steps (the run's step + 10) instead of its duration; an
  --init-from line no model sizes (--hidden, --embedding, --layers: they are RUN's).
- train without --run-dir or --resume gets --run-dir checkpoints/line-N (the default name
  is stamped to the second, and two runs in one second would meet).
- inspect-gradients --cell (an untrained model): --hidden and --embedding as TINY's.
- bench train and bench sample: sizes as TINY's, --steps 2 --untimed-steps 1.
- --device cuda (or cuda:N) is --device cpu where torch sees no GPU.
- the built-in `python` corpus is the standard library's PYTHON_MODULES only; `shakespeare`
  is the real file from ../shared/corpora, checked by its sha256 as a download is (where
  that is absent, corpus.fetch gives input.txt instead).
- the files the pages name (FILES) are made in each page's directory: input.txt is the
  first 60,000 characters of tiny-shakespeare (where ../shared/corpora is absent,
  conftest's TEXT and a pangram, repeated); the .py files are modules of PYTHON_MODULES, so
  a run on `python` knows their characters.

A `charrnn serve ...` line starts a real server (a process of its own, on a free port
instead of the one the line gives) that serves the rest of the page: a `curl ...` line
runs with curl (with --fail-with-body, so an error fails it), and in the Python blocks the
port of the page's URLs is the server's. At the page's end it gets SIGTERM and must exit
0. A `charrnn export ...` line runs as any charrnn line does.

Lines that cannot run here are skipped by the patterns of SKIP (pip, venvs, builds,
torchrun, git, apt-get, the tests themselves, the bench/ scripts, which take minutes); every
other line must run. A new page is tested as it is added, and must be linked from the
README; a file name new to the examples goes into FILES.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charrnn import corpus
from charrnn.cli import app

from .conftest import SHARED, TEXT, TINY, ServerProcess

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

SKIP = [
    r"python3? -m (venv|pip|build|pytest)\b",
    r"(\.|source) \S*activate$",
    r"pip3? install\b",
    r"torchrun\b",
    r"git\b",
    r"(sudo )?apt(-get)?\b",
    r"(python3? |bash |flock \S+ )?bench/",
]
PYTHON_MODULES = ("textwrap.py", "string.py", "shlex.py", "fnmatch.py", "glob.py")
STDLIB = Path(sysconfig.get_paths()["stdlib"])
NAMES = [a + b for a in ("Ann", "Bel", "Cor", "Dag", "El", "Fen", "Gar", "Hal", "Ing", "Jor")
         for b in ("a", "ia", "o", "en", "ric", "wyn", "ald", "is")]  # fmt: skip
FILES = {
    "input.txt": lambda: INPUT,
    "poems.txt": lambda: INPUT[:5_000],
    "wiki.txt": lambda: INPUT,
    "book.txt": lambda: INPUT,
    "some.txt": lambda: INPUT[:3_000],
    "names.txt": lambda: "\n".join(NAMES * 3) + "\n",
    "notes/day1.md": lambda: INPUT[:4_000],
    "notes/old/day0.md": lambda: INPUT[4_000:8_000],
    "some.py": lambda: (STDLIB / "textwrap.py").read_text(encoding="utf-8"),
    "opening.txt": lambda: (STDLIB / "string.py").read_text(encoding="utf-8")[:300],
}
# What a page's Python blocks print, in part (a block that runs but prints nothing useful
# would pass unnoticed otherwise).
PRINTS = {
    "README.md": ["bits/char"],
    "python-api.md": ["val loss", "bits/char", "no/such/run: no such run directory"],
    "serving.md": ["CompletionUsage(completion_tokens=60"],
    "export.md": ["def "],
    "finetune.md": ["checkpoints/base 20"],
}
SHAKESPEARE = SHARED / "tinyshakespeare.txt"
INPUT = (
    SHAKESPEARE.read_text(encoding="utf-8")[:60_000]
    if SHAKESPEARE.exists()
    else ((TEXT + "The quick brown fox jumps over the lazy dog.\n") * 30)[:60_000]
)
TINY_VALUES = dict(zip(TINY[::2], TINY[1::2]))
DURATIONS = {"--time-budget", "--epochs", "--steps"}
SIZES = {"--hidden", "--embedding", "--batch-size", "--seq-len", "--eval-every"}
runner = CliRunner()


# Reading the pages ----------------------------------------------------------------------


@dataclass
class Command:
    words: list[str]
    where: str  # page:line
    output: list[str] = field(default_factory=list)  # what a ```console block shows it print


@dataclass
class Block:
    lang: str
    text: str
    line: int  # of the block's first line in the page


def blocks(page: Path) -> list[Block]:
    found, lines = [], page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"```(\w*)\s*$", lines[i])
        if m:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append(Block(m[1], "\n".join(lines[i + 1 : end]) + "\n", i + 2))
            i = end
        i += 1
    return found


def commands(block: Block, page: Path) -> list[Command]:
    """The commands of a bash or console block: continuation lines joined, comments out,
    `a && b` as two commands; a console block's output lines go with their command."""
    found: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        start, line = i, lines[i]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        if block.lang == "console" and not line.startswith("$ "):
            if line.strip():
                assert found, f"{page.name}:{block.line + start}: output before any command"
                found[-1].output.append(line.strip())
            continue
        line = line.removeprefix("$ ").strip()
        words = shlex.split(line, comments=True)
        where = f"{page.relative_to(ROOT)}:{block.line + start}"
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            found.append(Command(words[:cut], where))
            words = words[cut + 1 :]
    return found


def skipped(command: Command) -> bool:
    line = shlex.join(command.words)
    return any(re.match(pattern, line) for pattern in SKIP)


# Substitutions --------------------------------------------------------------------------


def without(args: list[str], flags: set[str]) -> list[str]:
    """args less each of `flags` and its value."""
    kept, i = [], 0
    while i < len(args):
        if args[i] in flags:
            i += 2
        elif args[i].split("=", 1)[0] in flags:
            i += 1
        else:
            kept.append(args[i])
            i += 1
    return kept


def value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def tiny(args: list[str], *flags: str) -> list[str]:
    return [w for f in flags for w in (f, TINY_VALUES[f])]


def substitute(args: list[str], where: str) -> list[str]:
    """The command line a test runs for the one a page shows (the module docstring's list)."""
    command = args[:2] if args[0] == "bench" else args[:1]
    if "--device" in args and not torch.cuda.is_available():
        i = args.index("--device")
        if args[i + 1].startswith("cuda"):
            args = [*args[: i + 1], "cpu", *args[i + 2 :]]
    if command in (["train"], ["compare"]) and "--resume" in args:
        step = json.loads((Path(value(args, "--resume")) / "config.json").read_text())["step"]
        return [*without(args, DURATIONS), "--steps", str(step + 10)]
    if command in (["train"], ["compare"]):
        flags = [f for f in TINY_VALUES if f != "--layers" or "--layers" not in args]
        if "--init-from" in args:  # the model is RUN's, made with TINY's sizes
            flags = [f for f in flags if f not in ("--hidden", "--embedding", "--layers")]
        out = [*without(args, DURATIONS | SIZES), *tiny(args, *flags)]
        word = value(args, "--tokenizer") == "word" and "--no-tie-weights" not in args
        if "--tie-weights" in args or word:
            out = [*without(out, {"--embedding"}), "--embedding", TINY_VALUES["--hidden"]]
        if command == ["train"] and "--run-dir" not in out:
            out += ["--run-dir", f"checkpoints/line-{where.rsplit(':', 1)[1]}"]
        return out
    if command == ["inspect-gradients"] and "--cell" in args:
        return [*without(args, SIZES), *tiny(args, "--hidden", "--embedding")]
    if command in (["bench", "train"], ["bench", "sample"]):
        sizes = ["--hidden", "--embedding"]
        sizes += ["--batch-size", "--seq-len"] if command[1] == "train" else []
        out = without(args, SIZES | {"--steps", "--untimed-steps"})
        return [*out, *tiny(args, *sizes), "--steps", "2", "--untimed-steps", "1"]
    return args


# Running a page -------------------------------------------------------------------------


@dataclass
class Servers:
    """The servers a page's `charrnn serve` lines started, and the port its URLs name."""

    running: list = field(default_factory=list)
    shown_port: str | None = None  # the port the page's lines give (--port N)

    def start(self, args: list[str]) -> None:
        self.shown_port = value(args, "--port") or "8000"
        runs = [a for a in without(args[1:], {"--port", "--host"}) if not a.startswith("-")]
        options = [a for a in without(args[1:], {"--port", "--host"}) if a not in runs]
        self.running.append(ServerProcess([Path(r) for r in runs], *options, cwd=Path.cwd()))

    def rewrite(self, text: str) -> str:
        """The page's URLs pointed at the last server started."""
        if not self.running:
            return text
        port = str(self.running[-1].port)
        return re.sub(rf"(127\.0\.0\.1|localhost):{self.shown_port}\b", rf"\1:{port}", text)

    def curl(self, command: Command) -> None:
        assert self.running, f"{command.where}: curl before any charrnn serve line"
        words = [self.rewrite(w) for w in command.words]
        done = subprocess.run([words[0], "--fail-with-body", "--max-time", "60", *words[1:]],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, f"{command.where}: {shlex.join(words)}\n{done.stdout}"
        assert done.stdout.strip(), f"{command.where}: {shlex.join(words)} printed nothing"

    def stop(self) -> None:
        for server in self.running:
            assert server.stop() == 0, server.text
            assert "Traceback" not in server.text, server.text


def run_command(command: Command, servers: Servers | None = None) -> None:
    words = command.words
    if words[0] == "curl" and servers is not None:
        servers.curl(command)
        return
    if words[:2] == ["charrnn", "serve"] and servers is not None:
        servers.start(words[1:])
        return
    args = words[1:] if words[0] == "charrnn" else words[3:]
    assert words[0] == "charrnn" or words[:3] == ["python", "-m", "charrnn"], (
        f"{command.where}: {shlex.join(words)!r} cannot run in a test: make it a charrnn "
        f"line, or add a pattern to SKIP"
    )
    to_file = value(args, ">")
    args = [w for w in args if w not in (">", to_file)] if to_file else args
    error = any(line.startswith("charrnn: error:") for line in command.output)
    ran = args if error else substitute(args, command.where)
    result = runner.invoke(app, ran)
    said = f"{command.where}: charrnn {shlex.join(ran)}\n{result.output[-3000:]}"
    assert result.exit_code == (2 if error else 0), said + str(result.exception or "")
    for line in command.output:
        assert " ".join(line.split()) in " ".join(result.output.split()), said
    if to_file:
        Path(to_file).write_text(result.stdout, encoding="utf-8")


def make_files(folder: Path, monkeypatch) -> None:
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text(), encoding="utf-8")
    monkeypatch.setattr(corpus, "python_sources", lambda: [STDLIB / m for m in PYTHON_MODULES])
    if SHAKESPEARE.exists():  # what `charrnn train shakespeare` downloads, checked by sha256
        shutil.copy(SHAKESPEARE, Path(os.environ["CHARRNN_CORPORA"]) / "shakespeare.txt")
    else:
        monkeypatch.setattr(corpus, "fetch", lambda download, folder=None: Path("input.txt"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_line_and_python_block_runs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_files(tmp_path, monkeypatch)
    steps = [b for b in blocks(page) if b.lang in ("bash", "console", "python")]
    every = [c for b in steps if b.lang != "python" for c in commands(b, page)]
    ran, skipped_lines, python, servers = [], [], 0, Servers()
    try:
        for block in steps:
            if block.lang == "python":
                code = compile(servers.rewrite(block.text), f"{page.name}:{block.line}", "exec")
                exec(code, {"__name__": "docs"})
                python += 1
                continue
            for command in commands(block, page):
                if skipped(command):
                    skipped_lines.append(command)
                else:
                    run_command(command, servers)
                    ran.append(command)
    finally:
        servers.stop()
    assert len(ran) + len(skipped_lines) == len(every)
    assert python == sum(b.lang == "python" for b in steps)
    printed = capsys.readouterr().out
    for part in PRINTS.get(page.name, []):
        assert part in printed, f"{page.name}'s Python blocks did not print {part!r}"


# Links ----------------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(page: Path) -> str:
    """The page without its fenced blocks (whose brackets are code, not links)."""
    return re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", prose(page), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
        found.add(slug.replace(" ", "-"))
    return found


def links(page: Path) -> list[tuple[Path, str]]:
    """(file, anchor) of each link to a file of the checkout."""
    found = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        found.append(((page.parent / path).resolve() if path else page, anchor))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_lead_to_files_and_headings_that_exist(page):
    for path, anchor in links(page):
        assert path.exists(), f"{page.name} links to {path}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page.name}: no heading #{anchor} in {path.name}"


def test_the_readme_links_every_docs_page():
    linked = {path for path, _ in links(README)}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README's Documentation list lacks: {unlinked}"


def test_the_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    readme = [c.words for b in blocks(README) if b.lang == "bash" for c in commands(b, README)]
    assert ["python", "-m", "pytest", "-q"] in readme and "python -m pytest -q" in ci
