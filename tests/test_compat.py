"""Run directories written by older charrnn versions keep working: tests/data/v1 holds runs
that charrnn 0.1.0 wrote (config.json format_version 1), with the text they sampled and
the scores they got then."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import charrnn
from charrnn.cli import app

from .conftest import TEXT

V1 = Path(__file__).parent / "data" / "v1"
runner = CliRunner()


@pytest.mark.parametrize("name", ["char-lstm", "word-gru"])
def test_a_format_1_run_samples_the_same_text_and_scores_the_same(name, tmp_path):
    run = V1 / name
    result = runner.invoke(app, ["sample", str(run), "--seed", "3", "--length", "40",
                                 "--prime", "All"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == (V1 / f"{name}.sample.txt").read_text()
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    scored = runner.invoke(app, ["eval", str(run), str(tmp_path / "tiny.txt"), "--json"])
    assert scored.exit_code == 0, scored.output
    now, then = json.loads(scored.stdout), json.loads((V1 / f"{name}.eval.json").read_text())
    for key in ("loss", "bpc", "tokens", "chars"):
        assert now[key] == pytest.approx(then[key], rel=1e-6), key
    assert now["token_perplexity"] == pytest.approx(then["perplexity"], rel=1e-6)  # renamed


def test_a_format_1_config_reads_with_the_new_names():
    run = charrnn.load(V1 / "word-gru")
    assert run.config.tokenizer.tokenizer == "word" and run.config.tokenizer.vocab_size is None
    assert run.config.model.cell == "gru" and run.config.train.steps == 20
    info = runner.invoke(app, ["info", str(V1 / "char-lstm"), "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["tokenizer"] == {
        "tokenizer": "char", "vocab_size": None, "min_count": 1, "word_split": None
    }  # fmt: skip


def test_a_format_1_run_resumes_and_is_upgraded(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(V1 / "char-lstm", run)
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    result = runner.invoke(app, ["train", "--resume", str(run), str(tmp_path / "tiny.txt"),
                                 "--steps", "30"])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["format_version"] == 7 and config["step"] == 30
    assert config["tokenizer"]["tokenizer"] == "char"
    assert charrnn.load(run).config.step == 30
