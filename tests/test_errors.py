"""Every mistake a user can make on the command line ends the same way: one line on stderr,
`charrnn: error: ...` naming the flag as typed, exit code 2, no traceback, nothing written.
An internal bug, on the other hand, keeps its traceback."""

import pytest
from typer.testing import CliRunner

from charrnn.cli import app

from .conftest import TEXT, TINY, cli_train

runner = CliRunner()

# (command line, what the one line must say); RUN is a trained run, CORPUS a small text.
BAD = [
    (["train", "CORPUS", "--cell", "foo"], "'--cell': 'foo' is not one of 'lstm'"),
    (["train", "CORPUS", "--layers", "x"], "'--layers': 'x' is not a whole number"),
    (["train", "CORPUS", "--layers", "0"], "--layers must be at least 1, not 0"),
    (["train", "CORPUS", "--dropout", "1.5"], "--dropout must be in [0, 1), not 1.5"),
    (["train", "CORPUS", "--lr", "-1"], "--lr must be positive, not -1"),
    (["train", "CORPUS", "--lr", "nan"], "--lr must be a finite number, not nan"),
    (["train", "CORPUS", "--time-budget", "soon"], "'soon' is not a duration"),
    (["train", "CORPUS", "--steps", "5", "--epochs", "1"], "give only one of --steps, --epochs"),
    (["train", "CORPUS", "--glob"], "option '--glob' requires an argument"),
    (["train", "CORPUS", "--nope"], "no such option: --nope"),
    (["train", "CORPUS", "--tokenizer", "words"], "'words' is not one of 'char'"),
    (["train", "CORPUS", "--vocab-size", "100"], "--vocab-size is for word, bpe and unigram"),
    (["train", "CORPUS", "--tie-weights", "--embedding", "8"], "--tie-weights needs --embedding"),
    (["train", "CORPUS", "--precision", "fp16"], "--precision fp16 needs a CUDA device"),
    (["train", "CORPUS", "--device", "cuda"], "--device cuda: CUDA is not available"),
    (["train", "CORPUS", "--device", "tpu"], "--device 'tpu' is not a device"),
    (["train", "CORPUS", "--seed", "-1"], "--seed must be in [0, 9223372036854775807], not -1"),
    (["train", "CORPUS", "--val-frac", "0"], "--val-frac must be in (0, 1), not 0"),
    (["train", "CORPUS", "--documents", "pages"], "'pages' is not one of 'none'"),
    (["train", "missing.txt"], "missing.txt: no such file or folder"),
    (["train", "CORPUS", "--resume", "RUN", "--run-dir", "other"], "--resume names the run"),
    (["train", "--resume", "RUN", "--hidden", "64"], "--hidden 64 differs from the run's 32"),
    (["train", "--resume", "RUN", "--glob", "*.md"], "--glob *.md differs from the run's *"),
    (["train", "--resume", "RUN", "--encoding-errors", "replace"], "--encoding-errors replace"),
    (["train", "--resume", "RUN", "--tokenizer", "word"], "--tokenizer word differs"),
    (["sample"], "missing argument 'RUN'"),
    (["sample", "RUN", "--temperature", "-1"], "--temperature cannot be negative, not -1"),
    (["sample", "RUN", "--top-k", "0"], "--top-k must be at least 1, not 0"),
    (["sample", "RUN", "--clamp", "0:1"], "--clamp '0:1' is not LAYER:NEURON=VALUE"),
    (["sample", "RUN", "--clamp", "9:0=1"], "--clamp 9:0: no layer 9"),
    (["sample", "RUN", "--prime", "Zü"], "--prime has characters the model has never seen"),
    (["sample", "RUN", "--prime", "Zü", "--on-unknown", "unk"], "a char model has no <unk>"),
    (["sample", "RUN", "--seed", "abc"], "'--seed': 'abc' is not a whole number"),
    (["sample", "nope"], "nope: no such run directory"),
    (["eval", "RUN"], "missing argument 'CORPUS'"),
    (["eval", "RUN", "CORPUS", "--seq-len", "0"], "--seq-len must be at least 1, not 0"),
    (["eval", "RUN", "CORPUS", "--on-unknown", "unk"], "a char model has no <unk>"),
    (["info", "nope"], "nope: no such run directory"),
    (["inspect-neurons", "RUN", "--top", "-1"], "--top cannot be negative, not -1"),
    (["inspect-neurons", "RUN", "--color", "red"], "'red' is not one of 'auto'"),
    (["bench", "train", "--hidden", "0"], "--hidden must be at least 1, not 0"),
    (["bench", "sample", "--num-samples", "0"], "--num-samples must be at least 1, not 0"),
    (["bench", "train", "--threads", "0"], "--threads must be at least 1, not 0"),
    (["bench", "nope"], "no such command 'nope'"),
    (["nope"], "no such command 'nope'"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    cli_train(root, TEXT, name="tiny")
    (root / "tiny").rename(root / "run")
    return root


def snapshot(root):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.mark.parametrize("args, needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_command_line_is_one_line_exit_2_and_writes_nothing(args, needle, trained,
                                                                   monkeypatch):  # fmt: skip
    monkeypatch.chdir(trained)  # relative paths (missing.txt, other, nope) land here
    names = {"RUN": str(trained / "run"), "CORPUS": str(trained / "tiny.txt")}
    args = [names.get(a, a) for a in args]
    if args[0] == "train" and "--resume" not in args:  # a tiny run, but for the bad flags
        where = [] if "--run-dir" in args else ["--run-dir", str(trained / "new")]
        args = ["train", *TINY, *where, *args[1:]]
    before = snapshot(trained)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    assert snapshot(trained) == before  # nothing written, nothing half-written


def test_an_internal_bug_keeps_its_traceback(trained, monkeypatch):
    from charrnn import api

    def broken(*args, **kwargs):
        raise ValueError("a bug, not the user's mistake")

    monkeypatch.setattr(api, "load", broken)
    result = runner.invoke(app, ["info", str(trained / "run")])
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError) and "charrnn: error" not in result.stderr
