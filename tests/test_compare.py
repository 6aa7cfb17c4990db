"""`charrnn compare`: one ordinary run per cell and seed on the same text and budget, the
table, compare.json and compare.png; carrying on after a real SIGINT; refusing another
command's DIR; and every run on all ranks under torchrun."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn import compare as comparing
from charrnn.cli import app
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer

from .conftest import TEXT, assert_picture, start_run

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "16", "--embedding", "8", "--batch-size", "4",
        "--seq-len", "16", "--device", "cpu"]  # fmt: skip


def compare(*args) -> "CliRunner.Result":
    return runner.invoke(app, ["compare", *map(str, args)])


def metrics_text(out: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(out.glob("*/metrics.jsonl"))}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """lstm and rnn, 2 seeds each, 6 steps: the comparison and what the command printed."""
    root = tmp_path_factory.mktemp("compare")
    (root / "tiny.txt").write_text(TEXT, encoding="utf-8")
    args = [root / "tiny.txt", "--cells", "lstm,rnn", "--seeds", 2, "--steps", 6,
            "--eval-every", 3, *TINY, "--out", root / "out"]  # fmt: skip
    result = compare(*args)
    assert result.exit_code == 0, result.output
    return root / "out", args, result


def test_one_ordinary_run_per_cell_and_seed_with_the_same_text_and_budget(done):
    out, _, _ = done
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["lstm-seed0", "lstm-seed1", "rnn-seed0", "rnn-seed1"]
    configs = {name: json.loads((out / name / "config.json").read_text()) for name in names}
    for name, config in configs.items():
        cell, seed = name.split("-seed")
        assert config["model"]["cell"] == cell and config["train"]["seed"] == int(seed)
        assert config["step"] == 6 and config["train"]["steps"] == 6
        assert config["model"]["ngram"] == 0  # the networks compared, no n-gram (not given)
        assert (out / name / "model.safetensors").exists() and (out / name / "last").is_dir()
        same = {**config["train"], "seed": None}, {**config["model"], "cell": None}
        first = configs["lstm-seed0"]
        assert same == ({**first["train"], "seed": None}, {**first["model"], "cell": None})
        assert config["corpus"]["sha256"] == first["corpus"]["sha256"]  # the same text
    runner_result = runner.invoke(app, ["sample", str(out / "rnn-seed1"), "--length", "10"])
    assert runner_result.exit_code == 0, runner_result.output


def test_compare_json_holds_each_run_and_each_cell_over_its_seeds(done):
    out, _, _ = done
    saved = json.loads((out / "compare.json").read_text())
    assert saved["format_version"] == 1
    assert saved["plan"]["cells"] == ["lstm", "rnn"] and saved["plan"]["seeds"] == 2
    assert saved["plan"]["settings"]["steps"] == 6 and "seed" not in saved["plan"]["settings"]
    runs = {r["run"]: r for r in saved["runs"]}
    assert [r["run"] for r in saved["runs"]] == ["lstm-seed0", "rnn-seed0", "lstm-seed1",
                                                 "rnn-seed1"]  # seed by seed  # fmt: skip
    for name, r in runs.items():
        best = min(checkpoint.read_metrics(out / name), key=lambda m: m["val_loss"])
        assert r["status"] == "done" and r["steps"] == 6 and r["tokens"] == 6 * 4 * 16
        assert (r["best_val_loss"], r["best_val_bpc"]) == (best["val_loss"], best["val_bpc"])
        assert r["tokens_per_sec"] > 0 and r["parameters"] > 0
    cells = {c["cell"]: c for c in saved["cells"]}
    for cell in ("lstm", "rnn"):
        losses = [runs[f"{cell}-seed{k}"]["best_val_loss"] for k in (0, 1)]
        c = cells[cell]
        assert c["done"] == 2 and c["planned"] == 2 and c["diverged"] == 0
        assert c["val_loss_mean"] == pytest.approx(statistics.mean(losses))
        assert c["val_loss_sd"] == pytest.approx(statistics.stdev(losses))  # n - 1
        assert c["val_loss_sd"] > 0  # the seeds differ
        assert c["steps_mean"] == 6 and c["parameters"] == runs[f"{cell}-seed0"]["parameters"]
    assert cells["lstm"]["parameters"] > cells["rnn"]["parameters"]  # 4 gates against 1


def test_the_table_goes_to_stdout_and_the_progress_to_stderr(done):
    out, _, result = done
    saved = {c["cell"]: c for c in json.loads((out / "compare.json").read_text())["cells"]}
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in
            (["lstm"], ["rnn"])]  # fmt: skip
    assert len(rows) == 2
    for row in rows:
        c = saved[row[0]]
        assert row[1] == "2/2" and row[2] == f"{c['val_loss_mean']:.4f}" and row[3] == "±"
        assert row[4] == f"{c['val_loss_sd']:.4f}" and row[-1] == "6"
        assert f"{c['parameters']:,}" in row
    assert "sample standard deviation over seeds" in " ".join(result.stdout.split())
    assert (
        "comparing lstm, rnn with 2 seeds each (0 to 1), --steps 6 per run: 4 runs in"
        in result.stderr
    )
    assert result.stderr.count("new run") == 4
    assert f"wrote {out / 'compare.json'} and compare.png" in result.stderr


def test_compare_png_has_a_colour_per_cell(done):
    out, _, _ = done
    assert_picture(out / "compare.png", ["C0", "C1"])


def test_the_same_command_again_trains_nothing(done):
    out, args, _ = done
    before = metrics_text(out)
    result = compare(*args)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("done before; skipped") == 4
    assert metrics_text(out) == before


def with_flag(args: list, flag: str, value) -> list:
    """`args` with `flag` given `value`: replaced where it is given, added where not."""
    if flag not in args:
        return [*args, flag, value]
    i = args.index(flag)
    return [*args[: i + 1], value, *args[i + 2 :]]


def test_another_command_on_the_same_dir_is_refused_in_one_line(done):
    out, args, _ = done
    before = (out / "compare.json").read_text(), metrics_text(out)
    for flag, value, words in (
        ("--steps", 9, "--steps 9 here, 6 there"),
        ("--cells", "lstm,gru", "--cells lstm,gru here, lstm,rnn there"),
        ("--seeds", 3, "--seeds 3 here, 2 there"),
        ("--lr", "0.1", "--lr 0.1 here, not given there"),
    ):
        result = compare(*with_flag(args, flag, value))
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("charrnn: error: --out"), result.stderr
        assert words in lines[0] and "another --out" in lines[0]
    assert ((out / "compare.json").read_text(), metrics_text(out)) == before


def test_a_run_stopped_before_its_first_checkpoint_starts_again(done, tmp_path):
    out, args, _ = done
    copy = tmp_path / "out"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    saved = json.loads((copy / "compare.json").read_text())
    for r in saved["runs"]:
        if r["run"] in ("rnn-seed1", "lstm-seed1"):
            r["status"] = "pending"  # as if cut short before compare.json said done
    (copy / "compare.json").write_text(json.dumps(saved))
    for name in ("last", "model.safetensors", "metrics.jsonl"):
        path = copy / "rnn-seed1" / name
        subprocess.run(["rm", "-r", str(path)], check=True)
    before = (copy / "lstm-seed1" / "metrics.jsonl").read_text()
    result = compare(*args[: args.index("--out")], "--out", copy)
    assert result.exit_code == 0, result.output
    assert "rnn-seed1: started again" in result.stderr
    assert "lstm-seed1: resumed at step 6" in result.stderr  # and had nothing left to do
    assert (copy / "lstm-seed1" / "metrics.jsonl").read_text() == before
    assert len(checkpoint.read_metrics(copy / "rnn-seed1")) == 2
    saved = json.loads((copy / "compare.json").read_text())
    assert {r["status"] for r in saved["runs"]} == {"done"}


def test_bad_flags_are_refused_before_anything_is_written(tmp_path):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases = {
        ("--cells", "lstm,nope"): "--cells 'lstm,nope': 'nope' is not a cell",
        ("--cells", "rnn,rnn"): "names rnn twice",
        ("--seeds", "0"): "--seeds must be at least 1",
        ("--hidden", "0"): "--hidden must be at least 1",
        ("--steps", "3", "--epochs", "1"): "give only one of --steps",
        ("--cell", "gru"): "no such option: --cell (Possible options: --cells",
        ("--seed", "1"): "no such option: --seed",
    }
    for extra, words in cases.items():
        result = compare(tmp_path / "tiny.txt", "--out", tmp_path / "new", *extra)
        assert result.exit_code == 2 and words in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = compare(tmp_path / "tiny.txt", "--out", tmp_path / "full", "--steps", "3")
    assert result.exit_code == 2 and "holds no compare.json" in result.stderr
    result = compare(tmp_path / "missing.txt", "--out", tmp_path / "new", "--steps", "3")
    assert result.exit_code == 2 and "missing.txt" in result.stderr
    assert not (tmp_path / "new").exists()


def test_spread_is_the_mean_and_the_sample_standard_deviation():
    assert comparing.spread([1.0, 2.0, 3.0]) == comparing.Spread(2.0, 1.0, 3)
    assert comparing.spread([1.5]) == comparing.Spread(1.5, None, 1)
    assert comparing.spread([]) is None
    with pytest.raises(ConfigError, match="choose from lstm, gru, rnn"):
        comparing.parse_cells(" , ")
    assert comparing.parse_cells(" gru, lstm ") == ("gru", "lstm")


def test_a_diverged_run_is_kept_out_of_its_cell_figures():
    plan = comparing.Plan(("x",), ("lstm",), 3, {}, "cpu", 1)
    runs = [comparing.RunResult(f"lstm-seed{k}", "lstm", k, status, 10, 6, 384, 1.0, 384.0,
                                loss, loss * 1.4, 6)
            for k, (status, loss) in enumerate([("done", 1.0), ("done", 2.0),
                                                ("diverged", 9.0)])]  # fmt: skip
    (cell,) = comparing.summarize(plan, runs)
    assert (cell.done, cell.diverged, cell.planned) == (2, 1, 3)
    assert cell.val_loss.mean == 1.5 and cell.val_loss.n == 2


def test_the_table_of_seven_cells_fits_80_columns_whole(tmp_path):
    """Through the command: a comparison whose runs are all finished (written here, with
    the figures of a real one) is only shown again, at 80 columns."""
    cells = ("lstm", "gru", "rnn", "peephole", "cifg", "mlstm", "mingru")
    plan = comparing.Plan(("x",), cells, 2, {}, "cpu", 1)
    tok = CharTokenizer.fit(TEXT)
    for item in plan.runs():
        config = ModelConfig(tok.vocab_size, cell=item.cell, hidden=8, embedding=4)
        start_run(tmp_path / item.name, RNNLanguageModel(config), tok)
        loss = 1.4539 + item.seed / 100
        checkpoint.append_metrics(tmp_path / item.name, {
            "step": 1700, "tokens": 2_896_048, "elapsed": 100.0, "val_loss": loss,
            "val_bpc": 2.0976 + item.seed / 100})  # fmt: skip
        checkpoint.update_config(tmp_path / item.name, {"step": 1700, "best_step": 1700})
    states = {item.name: "diverged" if item.cell == "mlstm" else "done" for item in plan.runs()}
    comparing.record(plan, tmp_path, states)
    result = compare("x", "--cells", ",".join(cells), "--seeds", 2, "--out", tmp_path,
                     "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    assert "1.4589 ± 0.0071" in text and "2.1026" in text and "28,960" in text
    assert "diverged (not in the figures): mlstm 2 of 2" in " ".join(text.split())
    assert "14 runs" in result.stderr and "finished before" in result.stderr


# A real process and a real signal -------------------------------------------------------


def launch(*args, ranks: int = 1) -> subprocess.Popen:
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    return subprocess.Popen(
        [*launcher, "-m", "charrnn", "compare", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # the token cache too


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_after_a_sigint_the_same_command_trains_only_what_is_missing(tmp_path):
    (tmp_path / "tiny.txt").write_text(TEXT * 3, encoding="utf-8")
    out = tmp_path / "out"
    args = [tmp_path / "tiny.txt", "--cells", "lstm,rnn", "--seeds", 1, "--steps", 1500,
            "--eval-every", 50, "--patience", "off", *TINY, "--out", out]  # fmt: skip
    proc = launch(*args)
    wait_for(lambda: len(checkpoint.read_metrics(out / "rnn-seed0")) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same charrnn compare command again" in stderr
    saved = {r["run"]: r["status"] for r in json.loads((out / "compare.json").read_text())["runs"]}
    assert saved == {"lstm-seed0": "done", "rnn-seed0": "pending"}
    stopped = checkpoint.read_metrics(out / "rnn-seed0")
    assert stopped[-1]["step"] < 1500
    lstm = (out / "lstm-seed0" / "metrics.jsonl").read_text()

    again = launch(*args)
    stdout, stderr = again.communicate(timeout=180)
    assert again.returncode == 0, stderr
    assert "lstm-seed0: done before; skipped" in stderr
    assert "rnn-seed0: resumed at step" in stderr
    assert (out / "lstm-seed0" / "metrics.jsonl").read_text() == lstm  # not trained again
    steps = [m["step"] for m in checkpoint.read_metrics(out / "rnn-seed0")]
    assert steps == list(range(50, 1501, 50))  # carried on, every evaluation once
    assert checkpoint.read_metrics(out / "rnn-seed0")[: len(stopped)] == stopped
    saved = json.loads((out / "compare.json").read_text())
    assert {r["status"] for r in saved["runs"]} == {"done"}
    assert "lstm" in stdout and "rnn" in stdout


@pytest.mark.slow
def test_under_torchrun_every_run_uses_all_ranks(tmp_path):
    (tmp_path / "tiny.txt").write_text(TEXT * 3, encoding="utf-8")
    out = tmp_path / "out"
    proc = launch(tmp_path / "tiny.txt", "--cells", "gru,rnn", "--seeds", 1, "--steps", 6,
                  "--eval-every", 3, *TINY, "--out", out, ranks=2)  # fmt: skip
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    for name in ("gru-seed0", "rnn-seed0"):
        config = json.loads((out / name / "config.json").read_text())
        assert config["world_size"] == 2 and config["step"] == 6
        tokens = [m["tokens"] for m in checkpoint.read_metrics(out / name)]
        assert tokens == [3 * 2 * 4 * 16, 6 * 2 * 4 * 16]  # 2 ranks x batch 4 x seq 16
    assert stdout.count("gru") == 2 and stdout.count("rnn") == 2  # rank 0 alone: title, row
    assert stderr.count("comparing gru, rnn") == 1
    assert json.loads((out / "compare.json").read_text())["plan"]["world_size"] == 2


def test_what_each_run_needs_follows_from_its_directory(tmp_path):
    item = comparing.Planned("gru", 1)
    run_dir = tmp_path / "gru-seed1"
    assert comparing.action(tmp_path, item, None) == "new"
    run_dir.mkdir()
    (run_dir / "stray.txt").write_text("not a run")
    with pytest.raises(ConfigError, match="is in the way"):
        comparing.action(tmp_path, item, None)
    (run_dir / "stray.txt").unlink()
    (run_dir / "config.json").write_text("{}")
    assert comparing.action(tmp_path, item, "pending") == "restart"  # no checkpoint yet
    (run_dir / "last").mkdir()
    for name in ("model.safetensors", "trainer_state.pt"):
        (run_dir / "last" / name).write_bytes(b"")
    assert comparing.action(tmp_path, item, "pending") == "resume"
    assert comparing.action(tmp_path, item, "done") == "skip"
    assert comparing.action(tmp_path, item, "diverged") == "skip"


def test_a_dir_holding_only_this_plans_runs_is_carried_on(tmp_path):
    plan = comparing.Plan(("x",), ("lstm", "rnn"), 1, {"steps": 5}, "cpu", 1)
    (tmp_path / "rnn-seed0").mkdir()  # set up, then killed before compare.json was written
    assert comparing.statuses(plan, tmp_path) == {}
    (tmp_path / "gru-seed0").mkdir()
    with pytest.raises(ConfigError, match="holds no compare.json"):
        comparing.statuses(plan, tmp_path)


def test_without_matplotlib_compare_makes_its_table_and_json(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    result = compare(tmp_path / "tiny.txt", "--cells", "rnn", "--seeds", 1, "--steps", 3,
                     *TINY, "--out", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "charrnn compare needs matplotlib: pip install 'charrnn[plot]'" in result.stderr
    assert "rnn" in result.stdout and (tmp_path / "out" / "compare.json").exists()
    assert not (tmp_path / "out" / "compare.png").exists()
