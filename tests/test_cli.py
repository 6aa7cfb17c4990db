"""The commands end to end through Typer's CliRunner, and every bad input's one-line error."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from charrnn.cli import app

from .conftest import TINY

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from .conftest import TEXT

    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.txt").write_text(TEXT, encoding="utf-8")
    result = runner.invoke(
        app, ["train", str(root / "tiny.txt"), *TINY, "--run-dir", str(root / "run")]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # progress and tables go to stderr
    assert "--cell lstm --layers 1 --hidden 32" in result.stderr.splitlines()[0]
    return root / "run"


def test_train_writes_a_self_describing_run_directory(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "last", "metrics.jsonl"} <= names
    config = json.loads((run_dir / "config.json").read_text())
    assert config["format_version"] == 7 and config["step"] == 20
    assert config["train"]["seq_len"] == 16 and config["model"]["hidden"] == 32


def test_sample_is_reproducible_plain_text_on_stdout(run_dir):
    args = ["sample", str(run_dir), "--length", "60", "--seed", "5", "--prime", "All:"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout and first.stdout.startswith("All:")
    assert "\x1b" not in first.stdout
    other = runner.invoke(app, [*args[:-2], "--seed", "6", "--prime", "All:"])
    assert other.stdout != first.stdout


def test_sample_many_and_greedy(run_dir):
    result = runner.invoke(app, ["sample", str(run_dir), "--length", "30", "--num-samples", "3",
                                 "--temperature", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    one = result.stdout[: len(result.stdout) // 3]  # greedy: three times the same sample
    assert result.stdout == one * 3 and len(one) == 30 + 1 and one.endswith("\n")


def test_a_model_of_one_long_text_never_ends_a_sample_early(run_dir):
    # trained with --documents none, it never had to predict <eos>: a barely trained
    # model gives <eos> about 1/V, and 4 x 300 tokens would meet one, were it allowed
    args = ["sample", str(run_dir), "--length", "300", "--num-samples", "4", "--seed", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(result.stdout) == 4 * (300 + 1)
    one = runner.invoke(app, [*args[:4], "--seed", "1"])  # streamed, one sample
    assert one.exit_code == 0 and len(one.stdout) == 300 + 1


def test_info_and_eval(run_dir, text_file):
    result = runner.invoke(app, ["info", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["step"] == 20 and info["parameters"] > 0 and info["best_val_bpc"] > 0
    result = runner.invoke(app, ["info", str(run_dir)])
    assert result.exit_code == 0 and "parameters" in result.stdout
    result = runner.invoke(app, ["eval", str(run_dir), str(text_file), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["tokens"] == scores["chars"] == text_file.read_text().__len__()
    assert scores["bpc"] == pytest.approx(scores["loss"] / 0.6931471805599453)


def test_resume_continues_the_run(run_dir):
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--steps", "30"])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr
    assert json.loads((run_dir / "config.json").read_text())["step"] == 30


def test_resume_refuses_a_changed_shape(run_dir):
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--hidden", "64"])
    assert result.exit_code == 2
    assert "--hidden 64 differs from the run's 32" in result.stderr


def one_error_line(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 or "Usage" in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_bad_corpora_get_one_clear_line(tmp_path):
    cases = {
        "empty.txt": (b"", "empty"),
        "binary.txt": (b"abc\x00def", "NUL byte at offset 3"),
        "latin1.txt": ("caf\u00e9 ok".encode("latin-1"), "invalid UTF-8 at byte offset 3"),
        "utf16.txt": ("hello".encode("utf-16"), "UTF-16-LE"),  # with a byte-order mark
        "utf32.txt": ("hello".encode("utf-32"), "UTF-32-LE"),
        "utf16be.txt": ("no mark here\n".encode("utf-16-be"), "iconv -f UTF-16-BE"),
        "utf32le.txt": ("no mark here\n".encode("utf-32-le"), "iconv -f UTF-32-LE"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        result = runner.invoke(
            app, ["train", str(tmp_path / name), *TINY, "--run-dir", str(tmp_path / "r")]
        )
        one_error_line(result, name, message)
        assert not (tmp_path / "r").exists()  # nothing half-written
    one_error_line(runner.invoke(app, ["train", str(tmp_path / "nope.txt")]), "no such file")
    (tmp_path / "folder").mkdir()
    result = runner.invoke(app, ["train", str(tmp_path / "folder"), "--glob", "*.md"])
    one_error_line(result, "no files matching")


def test_invalid_utf8_can_be_replaced(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(("caf\u00e9 " * 400).encode("latin-1"))
    result = runner.invoke(app, ["train", str(path), *TINY, "--steps", "2", "--encoding-errors",
                                 "replace", "--run-dir", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 0, result.output


def test_a_corpus_smaller_than_a_batch_shrinks_it_and_a_tiny_one_is_refused(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("abcdefghij" * 12)  # 120 chars: room for a few streams of 16
    result = runner.invoke(app, ["train", str(small), *TINY, "--batch-size", "64", "--steps", "2",
                                 "--run-dir", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "using --batch-size 6 instead of 64" in result.stderr
    small.write_text("abc")
    result = runner.invoke(app, ["train", str(small), *TINY, "--run-dir", str(tmp_path / "r2")])
    one_error_line(result, "too small")
    assert not (tmp_path / "r2").exists()


def test_not_a_run_directory_and_unknown_prime(tmp_path, run_dir):
    one_error_line(runner.invoke(app, ["sample", str(tmp_path)]), "not a run directory")
    one_error_line(runner.invoke(app, ["info", str(tmp_path / "missing")]), "no such run directory")
    result = runner.invoke(app, ["sample", str(run_dir), "--prime", "Zürich ☃"])
    one_error_line(result, "'ü'", "'☃'")


def test_an_existing_run_is_not_overwritten(run_dir, text_file):
    result = runner.invoke(app, ["train", str(text_file), *TINY, "--run-dir", str(run_dir)])
    one_error_line(result, "already holds a run")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sample", "RUN", "--temperature", "-1"], "temperature"),
        (["sample", "RUN", "--top-p", "1.5"], "--top-p must be in (0, 1], not 1.5"),
        (["sample", "RUN", "--num-samples", "0"], "--num-samples must be at least 1, not 0"),
        (["train", "CORPUS", "--hidden", "-3"], "hidden"),
        (["train", "CORPUS", "--time-budget", "soon"], "duration"),
        (["train", "CORPUS", "--steps", "3", "--epochs", "1"], "one of"),
        (["train", "CORPUS", "--val-frac", "1.5"], "--val-frac must be in (0, 1), not 1.5"),
    ],
)
def test_bad_numbers_are_clear_errors(args, needle, run_dir, text_file):
    args = [str(run_dir) if a == "RUN" else str(text_file) if a == "CORPUS" else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.output


def test_python_dash_m_charrnn_runs():
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "sample" in result.stdout
