"""Never lose a run: real processes, real signals, a real full disk, injected divergence."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import charrnn as charrnn_api
from charrnn import checkpoint
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer
from charrnn.training.config import TrainConfig
from charrnn.training.loop import fit
from charrnn.training.meters import MAX_BAD_STEPS

from .conftest import TEXT, job, load_last, start_run

ARGS = ["--layers", "1", "--hidden", "48", "--embedding", "8", "--batch-size", "4",
        "--seq-len", "16", "--dropout", "0.2", "--seed", "3", "--patience", "off"]  # fmt: skip


def charrnn(*args) -> subprocess.Popen:
    # One thread each: the tests run several trainings at once on a small machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "charrnn", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def wait_for(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def metrics(run: Path) -> list[dict]:
    lines = checkpoint.read_metrics(run)
    return [{k: v for k, v in m.items() if k != "elapsed"} for m in lines]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT * 3, encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_last_and_resume_is_bit_identical(tmp_path, corpus, signum, code):
    steps = ["--steps", "300", "--eval-every", "50"]
    whole = charrnn("train", corpus, *ARGS, *steps, "--run-dir", tmp_path / "whole")
    cut = charrnn("train", corpus, *ARGS, *steps, "--run-dir", tmp_path / "cut")
    wait_for(lambda: len(checkpoint.read_metrics(tmp_path / "cut")) >= 1)
    cut.send_signal(signum)
    _, stderr = cut.communicate(timeout=60)
    assert cut.returncode == code, stderr
    assert "charrnn train --resume" in stderr
    stopped_at = torch.load(tmp_path / "cut/last/trainer_state.pt", weights_only=True)
    assert 50 <= stopped_at["progress"]["step"] < 300
    resumed = charrnn("train", "--resume", tmp_path / "cut")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()
    assert whole.wait(timeout=120) == 0, whole.stderr.read()
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")  # losses, to the bit
    for name in ("model.safetensors", "last/model.safetensors"):
        cut_weights = safetensors.torch.load_file(tmp_path / "cut" / name)
        whole_weights = safetensors.torch.load_file(tmp_path / "whole" / name)
        for key, tensor in whole_weights.items():
            assert torch.equal(cut_weights[key], tensor), key


@pytest.mark.slow
def test_a_second_signal_stops_at_once(tmp_path, corpus):
    proc = charrnn("train", corpus, *ARGS, "--hidden", "512", "--steps", "100000",
                   "--eval-every", "1", "--run-dir", tmp_path / "r")  # fmt: skip
    # once it trains (its first evaluation is written): the handler is in place from there
    wait_for(lambda: (tmp_path / "r" / "metrics.jsonl").exists())
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode == 130


@pytest.mark.slow
def test_sigkill_during_saves_never_breaks_the_checkpoints(tmp_path, corpus):
    """Saves every step, killed at random moments: best and last always load after."""
    run = tmp_path / "r"
    rng = random.Random(0)
    args = ["train", corpus, *ARGS, "--hidden", "192", "--steps", "100000", "--eval-every", "1"]
    kills = 0
    while kills < 10:
        resume = (run / "config.json").exists() and checkpoint.last_dir(run) is not None
        saves = len(checkpoint.read_metrics(run))
        proc = charrnn(*(["train", "--resume", run] if resume else [*args, "--run-dir", run]))
        wait_for(lambda n=saves, p=proc: len(checkpoint.read_metrics(run)) > n + 1 or p.poll())
        assert proc.poll() is None, proc.stderr.read()  # still training, saving every step
        time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()
        proc.wait()
        kills += 1
        charrnn_api.load(run)
        _, saved = load_last(run)
        assert saved["progress"]["step"] >= 1
    metrics_lines = checkpoint.read_metrics(run)
    assert len(metrics_lines) >= 10


# In-process: a full disk and divergence ---------------------------------------------------


def tiny_run(run: Path, **train):
    tok = CharTokenizer.fit(TEXT)
    ids = np.concatenate([[0], tok.encode(TEXT)]).astype(np.int32)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(tok.vocab_size, layers=1, hidden=32, embedding=8))
    start_run(run, model, tok)
    config = TrainConfig(**{"seq_len": 16, "batch_size": 4, "eval_every": 5, **train})
    return model, fit(job(model, tok, ids, config, run))


def test_a_full_disk_is_reported_and_keeps_the_previous_checkpoint(small_disk):
    run = small_disk / "run"
    model, reports = tiny_run(run, steps=15)
    first = next(r for r in reports if r.kind == "eval")
    assert first.message is None
    before = (run / "last" / "trainer_state.pt").read_bytes()
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    second = next(r for r in reports if r.kind == "eval")
    assert "No space left on device" in second.message and "previous" in second.message
    assert (run / "last" / "trainer_state.pt").read_bytes() == before
    charrnn_api.load(run)
    load_last(run)
    filler.unlink()  # space again: the next save works
    third = next(r for r in reports if r.kind == "eval")
    assert third.message is None
    assert load_last(run)[1]["progress"]["step"] == 15


def test_a_write_error_during_save_is_reported(tmp_path, monkeypatch):
    model, reports = tiny_run(tmp_path / "run", steps=10)
    next(r for r in reports if r.kind == "eval")

    def fail(path, data):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint, "atomic_write", fail)
    report = next(r for r in reports if r.kind == "eval")
    assert "Input/output error" in report.message
    assert load_last(tmp_path / "run")[1]["progress"]["step"] == 5


def poison(model, bad_steps: set[int]):
    """Make forward return NaN logits (or nats) on the given (1-based) training calls."""
    forward, calls = model.forward, [0]

    def poisoned(ids, state=None, targets=None):
        out, state = forward(ids, state, targets)
        if model.training:
            calls[0] += 1
            if calls[0] in bad_steps:
                out = out * float("nan")
        return out, state

    model.forward = poisoned


def test_a_few_nan_steps_are_skipped(tmp_path):
    model, reports = tiny_run(tmp_path / "run", steps=20)
    poison(model, {7, 8})
    reports = list(reports)
    assert reports[-1].kind == "done" and reports[-1].progress.skipped == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_divergence_rolls_back_once_with_a_lower_lr_then_stops(tmp_path):
    run = tmp_path / "run"
    model, reports = tiny_run(run, steps=40)
    poison(model, set(range(11, 11 + MAX_BAD_STEPS)) | set(range(20, 1000)))
    reports = list(reports)
    kinds = [r.kind for r in reports if r.kind not in ("step", "eval")]
    assert kinds == ["rollback", "diverged"]
    rollback = next(r for r in reports if r.kind == "rollback")
    assert rollback.progress.step == 10 and rollback.progress.lr_scale == 0.5
    assert "halved" in rollback.message and "lower --lr" in reports[-1].message
    best = charrnn_api.load(run).model
    assert all(torch.isfinite(p).all() for p in best.parameters())
    assert all(torch.isfinite(p).all() for p in load_last(run)[0].parameters())


def test_deterministic_flag_is_recorded_and_runs(tmp_path, corpus):
    proc = charrnn("train", corpus, *ARGS, "--steps", "3", "--deterministic",
                   "--run-dir", tmp_path / "r")  # fmt: skip
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["deterministic"]
