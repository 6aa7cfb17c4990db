"""--average: the weights' moving average, sampled every span/16 steps; validation picks it
where the trained weights stall, its weights are the ones saved, a run with it resumes
exactly, and it is fitted on for word models and off for char models."""

import json

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from charrnn import checkpoint, fitting
from charrnn.cli import app
from charrnn.metrics import evaluate
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer
from charrnn.training import pace
from charrnn.training.average import SAMPLES, Average
from charrnn.training.config import TrainConfig
from charrnn.training.loop import fit

from .conftest import TEXT, cli_train, job, load_last, start_run
from .test_validation import NOISE

runner = CliRunner()


def test_the_average_samples_the_weights_every_span_over_16_steps_into_an_ema():
    model = nn.Linear(1, 1, bias=False)
    average = Average(model, span=4 * SAMPLES)  # a sample every 4 steps, each weighing 1/16
    assert average.every == 4
    expected = None
    for step in range(1, 13):
        with torch.no_grad():
            model.weight.fill_(float(step))
        average.update(model, step)
        if step % 4 == 0:  # the first sample is taken as it is
            expected = step if expected is None else expected + (step - expected) / SAMPLES
    assert average.model.weight.item() == torch.tensor(expected).item()
    assert not average.model.training  # evaluated and sampled, never trained
    assert Average(model, span=3).every == 1  # a short span: every step


def noise_run(tmp_path, name: str, steps: int, resume=None):
    """A char model on NOISE (nothing to learn but how often each letter comes) by SGD at a
    high, constant lr, which leaves the weights rattling; averaging over 8 steps."""
    tok = CharTokenizer.fit(NOISE)
    ids = np.concatenate([[0], tok.encode(NOISE)]).astype(np.int32)
    config = TrainConfig(seq_len=16, batch_size=4, steps=steps, eval_every=4, patience=0,
                         optimizer="sgd", lr=4.0, min_lr_frac=1.0, lr_decay=1.0,
                         warmup_steps=0, average=8)  # fmt: skip
    if resume:
        model, saved = load_last(tmp_path / name)
    else:
        torch.manual_seed(0)
        model = RNNLanguageModel(ModelConfig(tok.vocab_size, hidden=32, embedding=8,
                                             dropout=0.1))  # fmt: skip
        start_run(tmp_path / name, model, tok)
        saved = None
    the_job = job(model, tok, ids, config, tmp_path / name, resume=saved)
    return model, list(fit(the_job)), the_job


def test_validation_picks_the_average_where_the_trained_weights_stall_and_saves_it(tmp_path):
    _, reports, the_job = noise_run(tmp_path, "run", steps=60)
    evals = [r for r in reports if r.kind == "eval"]
    p = evals[-1].progress
    metrics = checkpoint.read_metrics(tmp_path / "run")
    assert [m["averaged"] for m in metrics] == [r.averaged for r in evals]
    best = next(m for m in metrics if m["step"] == p.best_step)
    assert best["averaged"], "the average of rattling weights is the better one"
    assert not evals[0].averaged  # the first evaluation is a new best: no average tried
    saved = checkpoint.load_weights(tmp_path / "run" / checkpoint.WEIGHTS, the_job.model.config)
    val = evaluate(saved, the_job.val_ids, 16, the_job.tokenizer, "cpu")
    assert abs(val.loss - p.best_val_loss) < 1e-9  # the weights saved are those evaluated
    _, state = load_last(tmp_path / "run")
    assert state["average"]  # last/ holds the average beside the trained weights


def test_a_run_with_the_average_resumes_exactly(tmp_path):
    whole, _, _ = noise_run(tmp_path, "whole", steps=40)
    noise_run(tmp_path, "cut", steps=22)
    resumed, _, _ = noise_run(tmp_path, "cut", steps=40, resume=True)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for file in (checkpoint.WEIGHTS, f"{checkpoint.LAST}/{checkpoint.WEIGHTS}"):
        # (the tensors, not the bytes: safetensors writes its metadata keys in any order)
        a, b = (load_file(tmp_path / run / file) for run in ("whole", "cut"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file
    (_, a), (_, b) = load_last(tmp_path / "whole"), load_last(tmp_path / "cut")
    assert a["average"]["samples"] == b["average"]["samples"] > 0
    for key, value in a["average"]["weights"].items():
        assert torch.equal(value, b["average"]["weights"][key]), key


def test_a_word_model_averages_over_two_intervals_and_a_char_model_does_not():
    def fitted(tokenizer: str, **given) -> dict:
        untimed = pace.Pace(5.0, 100, "5 epochs")
        return fitting.fit(("cpu", tokenizer, "sgd"), 10_000, 1_000, 20, 500, untimed,
                           given).train  # fmt: skip

    assert fitted("word")["average"] == 2 * fitted("word")["eval_every"] == 10
    assert fitted("word", eval_every=7)["average"] == 14
    assert fitted("char")["average"] == 0 and fitted("bpe")["average"] == 0
    assert "average" not in fitted("word", average=3)  # a flag wins


def test_average_is_a_flag_off_turns_it_off_and_the_evaluation_line_says_it(tmp_path):
    run_dir = cli_train(tmp_path, TEXT, "--tokenizer", "word", "--average", "off")
    assert json.loads((run_dir / "config.json").read_text())["train"]["average"] == 0
    assert all("averaged" not in m for m in checkpoint.read_metrics(run_dir))
    run_dir = cli_train(tmp_path, NOISE, "--steps", "40", "--eval-every", "4", "--patience",
                        "off", "--optimizer", "sgd", "--lr", "2", "--average", "8",
                        name="on")  # fmt: skip
    assert json.loads((run_dir / "config.json").read_text())["train"]["average"] == 8
    metrics = checkpoint.read_metrics(run_dir)
    assert any(m["averaged"] for m in metrics)
    best = json.loads((run_dir / "config.json").read_text())["best_step"]
    averaged = next(m["averaged"] for m in metrics if m["step"] == best)
    info = json.loads(runner.invoke(app, ["info", str(run_dir), "--json"]).stdout)
    assert info["best_averaged"] is averaged
    shown = " ".join(runner.invoke(app, ["info", str(run_dir)]).stdout.split())
    assert ("(the averaged weights, --average)" in shown) is averaged
    bad = runner.invoke(app, ["train", "--average", "often", "--steps", "1"])
    assert bad.exit_code == 2 and "--average" in bad.stderr and "or off" in bad.stderr


def test_the_python_api_takes_average_as_train_does(tmp_path):
    import charrnn

    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    run = charrnn.train(tmp_path / "t.txt", tmp_path / "run", tokenizer="word", steps=4,
                        eval_every=2, hidden=16, embedding=16, average=6)  # fmt: skip
    assert run.config.train.average == 6
    assert all("averaged" in m for m in checkpoint.read_metrics(tmp_path / "run"))
