"""The training step without host syncs: the divergence guard on the device, the fused
AdamW's skipped update, and --precision."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer
from charrnn.training.config import TrainConfig, resolve_precision
from charrnn.training.loop import fit
from charrnn.training.meters import MAX_BAD_STEPS, Guard
from charrnn.training.trainer import Trainer

from .conftest import TEXT, job, load_last, start_run
from .test_resilience import poison


def tiny_trainer(tmp_path, **train):
    tok = CharTokenizer.fit(TEXT)
    ids = np.concatenate([[0], tok.encode(TEXT)]).astype(np.int32)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(tok.vocab_size, layers=2, hidden=16, embedding=8))
    config = TrainConfig(**{"seq_len": 8, "batch_size": 3, "steps": 50, **train})
    return model, tok, ids, config


def test_a_bad_step_changes_nothing_but_the_position(tmp_path):
    model, tok, ids, config = tiny_trainer(tmp_path)
    trainer = Trainer(job(model, tok, ids, config, tmp_path, val=200))
    for _ in range(3):
        trainer.step()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
    steps = [s["step"].clone() for s in trainer.optimizer.state.values()]
    state = tuple(s.clone() for s in trainer.state)
    poison(model, {1})  # the next training forward returns NaN logits
    nats, tokens = trainer.step()
    assert nats.item() == 0 and tokens.item() == 0  # nothing counted
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert all(
        torch.equal(a, s["exp_avg"]) for a, s in zip(moments, trainer.optimizer.state.values())
    )
    assert all(torch.equal(a, s["step"]) for a, s in zip(steps, trainer.optimizer.state.values()))
    assert all(torch.equal(a, b) for a, b in zip(state, trainer.state))
    assert trainer.progress.step == 4 and trainer.read_guard() == 1
    assert trainer.progress.skipped == 1
    trainer.step()  # a good one: the update happens again
    assert not torch.equal(weights["decoder.weight"], model.decoder.weight)


def test_guard_counts_runs_on_the_device_and_misses_none_between_reads():
    guard = Guard(torch.device("cpu"))
    for bad in [0, 1, 1, 1, 0, 1]:
        guard.add(torch.tensor(bool(bad)), torch.tensor(bool(bad)))
    assert guard.take() == (4, 3)  # 4 skipped; the longest run, 3, ended before the read
    guard.add(torch.tensor(True), torch.tensor(True))
    assert guard.take() == (1, 2)  # the run of 1 before the read goes on


def test_the_guard_acts_at_the_next_read_even_after_the_run_ended(tmp_path):
    run = tmp_path / "run"
    model, tok, ids, config = tiny_trainer(tmp_path, steps=40, eval_every=20)
    start_run(run, model, tok)
    # Steps 22..27 are bad (6 in a row), 28.. good: the host reads at step 30 and still
    # sees the run, so the run rolls back to step 20's last/, 3 steps "late".
    poison(model, set(range(22, 22 + MAX_BAD_STEPS + 1)))
    reports = list(fit(job(model, tok, ids, config, run, val=200)))
    rollback = next(r for r in reports if r.kind == "rollback")
    assert rollback.progress.step == 20 and rollback.progress.lr_scale == 0.5
    assert "6 non-finite steps in a row by step 30" in rollback.message
    assert reports[-1].kind == "done" and reports[-1].progress.step == 40
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_precision_is_checked_resolved_and_recorded(tmp_path, text_file):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        resolve_precision("bf16", cpu)
    with pytest.raises(ConfigError, match="fp8"):
        TrainConfig(steps=1, precision="fp8")
    runner = CliRunner()
    tiny = ["--steps", "2", "--layers", "1", "--hidden", "8", "--embedding", "4",
            "--batch-size", "2", "--seq-len", "8", "--device", "cpu"]  # fmt: skip
    bad = runner.invoke(app, ["train", str(text_file), *tiny, "--precision", "fp16",
                              "--run-dir", str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code == 2 and "needs a CUDA device" in bad.stderr
    assert not (tmp_path / "bad").exists()
    good = runner.invoke(app, ["train", str(text_file), *tiny, "--run-dir", str(tmp_path / "r")])
    assert good.exit_code == 0, good.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["train"]["precision"] == "fp32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_trains_and_saves_its_scaler(tmp_path, precision):
    run = tmp_path / "run"
    model, tok, ids, config = tiny_trainer(tmp_path, steps=20, eval_every=10)
    config = TrainConfig(**{**config.to_dict(), "precision": precision})
    model = model.cuda()
    start_run(run, model, tok)
    reports = list(fit(job(model, tok, ids, config, run, "cuda", val=200)))
    evals = [r for r in reports if r.kind == "eval"]
    assert len(evals) == 2 and all(np.isfinite(r.val.loss) for r in evals)
    _, saved = load_last(run)
    assert saved["scaler"]["scale"] > 0
