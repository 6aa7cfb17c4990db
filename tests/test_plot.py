"""`charrnn plot`: the curves of real runs as a PNG that decodes, has the promised size and
shows the curves; and the one line when matplotlib is missing."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from charrnn import plots
from charrnn.cli import app

from .conftest import TEXT, assert_picture, colour_pixels

runner = CliRunner()
TINY = ["--steps", "12", "--eval-every", "3", "--layers", "1", "--hidden", "16",
        "--embedding", "8", "--batch-size", "4", "--seq-len", "16", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    (root / "tiny.txt").write_text(TEXT, encoding="utf-8")
    for cell in ("lstm", "rnn"):
        result = runner.invoke(app, ["train", str(root / "tiny.txt"), *TINY, "--cell", cell,
                                     "--run-dir", str(root / cell)])  # fmt: skip
        assert result.exit_code == 0, result.output
    return root


@pytest.mark.parametrize("metric, x", [("loss", "steps"), ("bpc", "tokens"), ("bpc", "time")])
def test_plot_draws_train_and_val_curves_of_each_run(runs, metric, x):
    out = runs / f"{metric}-{x}.png"
    args = ["plot", str(runs / "lstm"), str(runs / "rnn"), "--metric", metric, "--x", x]
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the picture is the product; stderr says where it went
    assert f"wrote {out} (1000 x 600 pixels)" in result.stderr
    assert_picture(out, ["C0", "C1"])  # a colour per run


def test_one_run_is_one_colour(runs):
    out = runs / "one.png"
    result = runner.invoke(app, ["plot", str(runs / "lstm"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert_picture(out, ["C0"])
    assert colour_pixels(out, "C1") == 0


def test_plot_refuses_what_it_cannot_draw(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((runs / "lstm" / "config.json").read_text())
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "compare.json").write_text("{}")
    cases = {
        (str(runs / "lstm"), str(tmp_path / "x.jpg")): "-o",
        (str(runs / "lstm"), str(tmp_path / "no" / "x.png")): "there is no folder",
        (str(tmp_path / "nothing"), str(tmp_path / "x.png")): "no such run directory",
        (str(empty), str(tmp_path / "x.png")): "no evaluations yet",
        (str(tmp_path / "cmp"), str(tmp_path / "x.png")): "holds a comparison",
    }
    for (run_dir, out), words in cases.items():
        result = runner.invoke(app, ["plot", run_dir, "-o", out])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("charrnn: error:"), result.stderr
        assert words in lines[0]
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.jpg"))


def test_without_matplotlib_plot_says_how_to_install_it(runs, tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
        "from charrnn.cli import app\n"
        f"app(['plot', {str(runs / 'lstm')!r}, '-o', {str(tmp_path / 'x.png')!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "charrnn: error: charrnn plot needs matplotlib: pip install 'charrnn[plot]'\n"
    )
    assert not (tmp_path / "x.png").exists()


def test_a_step_evaluated_twice_keeps_its_latest_record(runs, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text((runs / "lstm" / "config.json").read_text())
    lines = [{"step": 3, "val_loss": 2.0}, {"step": 6, "val_loss": 1.5},
             {"step": 6, "val_loss": 1.4}, {"step": 9, "val_loss": 1.2}]  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert [m["val_loss"] for m in plots.run_curve(run_dir)] == [2.0, 1.4, 1.2]
