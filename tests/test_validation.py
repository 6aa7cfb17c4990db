"""Validation decides, and the defaults fit the text: evaluations as often as the text needs,
the learning rate down and the run ended when val loss stops improving (exact resume of a
run that ended so), defaults fitted to the training split's size, the regularisers of the
LSTM language-model literature on every cell (their exact resume: test_every_cell.py), and
old runs keeping their behaviour."""

import json
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn import fitting, runconfig, settings
from charrnn.cells import CELLS
from charrnn.cli import app
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer
from charrnn.training import pace
from charrnn.training.config import TrainConfig
from charrnn.training.loop import fit
from charrnn.training.reports import Progress
from charrnn.training.schedule import after_evaluation, eval_interval

from .conftest import TEXT, cli_train, job, load_last, start_run

runner = CliRunner()
# Letters at random: nothing of the training split predicts the validation split, so a
# model that learns the first only gets worse on the second.
_rng = random.Random(0)  # one generator: a new one per letter gave "gggg..."
NOISE = "".join(_rng.choice("abcdefgh \n") for _ in range(6000))


def test_an_evaluation_without_a_better_loss_lowers_the_lr_and_patience_ends_the_run():
    config = TrainConfig(steps=100, patience=3, lr_decay=0.5)
    p = Progress()
    after_evaluation(config, p, improved=True)
    assert (p.stale, p.lr_scale, p.ended) == (0, 1.0, None)
    after_evaluation(config, p, improved=False)
    after_evaluation(config, p, improved=False)
    assert (p.stale, p.lr_scale, p.ended) == (2, 0.25, None)
    after_evaluation(config, p, improved=True)  # a better one: the count starts again
    assert (p.stale, p.lr_scale) == (0, 0.25)
    for _ in range(3):
        after_evaluation(config, p, improved=False)
    assert (p.stale, p.ended) == (3, "patience")
    off = TrainConfig(steps=100, patience=0, lr_decay=1.0)
    q = Progress()
    for _ in range(20):
        after_evaluation(off, q, improved=False)
    assert (q.lr_scale, q.ended) == (1.0, None)  # the old behaviour


def test_evaluations_come_several_times_an_epoch_within_a_share_of_the_time():
    assert eval_interval(44, 10_000, 2048) == 11  # 100 KB: 4 an epoch
    assert eval_interval(490, 111_540, 2048) == 123  # tiny-shakespeare: 4 an epoch
    assert eval_interval(50_000, 100_000, 2048) == 500  # a long epoch: every 500 steps
    assert eval_interval(50_000, 2_000_000, 2048) == 2198  # a big val split: 10% of the time
    assert eval_interval(1, 10, 2048) == 1


def test_patience_and_lr_decay_take_off_on_the_command_line():
    d = {x.name: x for x in settings.declared(TrainConfig)}
    assert d["patience"].setting.parse("off") == 0 and d["patience"].text(0) == "off"
    assert d["lr_decay"].setting.parse("off") == 1.0 and d["lr_decay"].text(0.5) == "0.5"
    with pytest.raises(ValueError, match="not a whole number or off"):
        d["patience"].setting.parse("never")


def test_a_run_that_stops_improving_ends_early_and_says_why_everywhere(tmp_path):
    run_dir = cli_train(
        tmp_path,
        NOISE,
        "--steps",
        "2000",
        "--eval-every",
        "4",
        "--patience",
        "3",
        "--hidden",
        "64",
        "--lr",
        "0.02",
        "--dropout",
        "0",
    )
    config = json.loads((run_dir / "config.json").read_text())
    assert config["ended"] == "patience" and config["step"] < 2000
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["ended"] == "patience" and metrics[-1]["step"] == config["step"]
    assert all("ended" not in m for m in metrics[:-1])
    assert metrics[-1]["lr"] < max(m["lr"] for m in metrics) / 2  # it came down first
    info = runner.invoke(app, ["info", str(run_dir)])
    assert "ended early: no better val loss in 3 evaluations" in " ".join(info.stdout.split())
    summary = json.loads(runner.invoke(app, ["info", str(run_dir), "--json"]).stdout)
    assert summary["ended"] == "patience"


def test_the_summary_says_the_run_ended_early(tmp_path):
    (tmp_path / "noise.txt").write_text(NOISE, encoding="utf-8")
    result = runner.invoke(app, ["train", str(tmp_path / "noise.txt"), "--run-dir",
                                 str(tmp_path / "r"), "--steps", "2000", "--eval-every", "4",
                                 "--patience", "2", "--hidden", "64", "--batch-size", "4",
                                 "--seq-len", "16", "--lr", "0.02"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ended early at step" in result.stderr and "(--patience 2)" in result.stderr


def noise_run(tmp_path, name: str, patience: int, resume=None):
    tok = CharTokenizer.fit(NOISE)
    ids = np.concatenate([[0], tok.encode(NOISE)]).astype(np.int32)
    config = TrainConfig(seq_len=16, batch_size=4, steps=120, eval_every=4, warmup_steps=2,
                         lr=0.02, patience=patience)  # fmt: skip
    if resume is not None:
        model, saved = load_last(tmp_path / name)
    else:
        torch.manual_seed(0)
        model = RNNLanguageModel(ModelConfig(tok.vocab_size, hidden=32, embedding=8,
                                             dropout=0.1, weight_drop=0.2))  # fmt: skip
        start_run(tmp_path / name, model, tok)
        saved = None
    reports = list(fit(job(model, tok, ids, config, tmp_path / name, resume=saved)))
    return model, reports


def test_a_run_ended_early_resumes_exactly_as_if_it_had_not_ended(tmp_path):
    whole, reports = noise_run(tmp_path, "whole", patience=0)
    assert reports[-1].progress.step == 120 and reports[-1].progress.ended is None
    _, cut = noise_run(tmp_path, "cut", patience=3)
    assert cut[-1].kind == "done" and cut[-1].progress.ended == "patience"
    assert cut[-1].progress.step < 120 and cut[-1].progress.lr_scale < 1  # decayed, saved
    resumed, more = noise_run(tmp_path, "cut", patience=0, resume=True)
    assert more[-1].progress.step == 120
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_defaults_are_fitted_to_the_passes_a_run_makes_and_a_flag_wins(tmp_path):
    def fitted(tokenizer: str, epochs: float, **given) -> dict:
        return fitting.fit(("cpu", tokenizer, "adamw"), 10_000, 1_000, 20, 500,
                           pace.Pace(epochs, epochs * 20, "how"), given).model  # fmt: skip

    for tokenizer, table in fitting.DROPOUT.items():
        few, many = fitted(tokenizer, 0.5)["dropout"], fitted(tokenizer, 1000)["dropout"]
        assert (few, many) == (table[0][1], table[-1][1]) and few < many
    assert fitted("word", 1000)["input_dropout"] == fitting.DROPOUT["word"][-1][1]
    assert "dropout" not in fitted("char", 1000, dropout=0.05)
    few = cli_train(tmp_path, TEXT, "--steps", "2", name="few")  # conftest's TINY sizes
    least = fitting.DROPOUT["char"][0][1]
    assert json.loads((few / "config.json").read_text())["model"]["dropout"] == least
    given = cli_train(tmp_path, TEXT, "--steps", "2", "--dropout", "0.05", name="given")
    assert json.loads((given / "config.json").read_text())["model"]["dropout"] == 0.05
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    first = runner.invoke(app, ["train", str(tmp_path / "t.txt"), "--time-budget", "1s",
                                "--run-dir", str(tmp_path / "r")])  # fmt: skip
    line = next(x for x in first.stderr.splitlines() if x.startswith("fitted to the text"))
    tokens = int(len(TEXT) * 0.9) + 1
    assert f"({tokens:,} train tokens, about " in line and " epochs in 1s at " in line
    assert " steps of --hidden 512, so about " in line  # a second is too short for 512
    assert "--hidden 256 --dropout" in line and "--lr 0.016 --eval-every" in line
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"]["hidden"] == 256 and config["train"]["lr"] == 0.016
    steps = runner.invoke(app, ["train", str(tmp_path / "t.txt"), "--steps", "2",
                                "--run-dir", str(tmp_path / "s")])  # fmt: skip
    assert steps.exit_code == 0 and "--hidden" not in steps.stderr.splitlines()[1]
    config = json.loads((tmp_path / "s" / "config.json").read_text())  # as few steps, kept
    assert config["model"]["hidden"] == 512 and config["train"]["lr"] == 0.008


def test_a_run_too_short_for_the_default_width_gets_half_of_it_and_char_a_hotter_lr():
    most = fitting.FEW_STEPS["char"]
    few, many = (pace.Pace(1, steps, "how", timed=True) for steps in (most - 1, most))
    char = ("cpu", "char", "adamw")
    assert fitting.narrower(char, 512, few, {}) == 256
    given_steps = pace.Pace(1, fitting.FEW_STEPS["char"] - 1, "how")  # --steps: none to gain
    assert fitting.narrower(char, 512, given_steps, {}) is None
    assert fitting.narrower(("cpu", "bpe", "adamw"), 512, few, {}) == 256
    assert fitting.narrower(char, 512, many, {}) is None
    assert fitting.narrower(char, 512, few, {"hidden": 512}) is None
    assert fitting.narrower(char, 512, few, {"embedding": 64}) is None
    fitted = fitting.fit(char, 10_000, 1_000, 20, 500, few, {}, "why ", 256, 0.008)
    assert fitted.model["hidden"] == 256 and "embedding" not in fitted.model
    assert "why " in fitted.why and fitted.train["lr"] == 0.016
    assert "lr" not in fitting.fit(char, 10_000, 1_000, 20, 500, many, {}, "", None, 0.008).train
    assert "lr" not in fitting.fit(char, 10_000, 1_000, 20, 500, few, {"lr": 0.001}, "", 256,
                                   0.008).train  # fmt: skip
    sgd = ("cpu", "char", "sgd")
    assert "lr" not in fitting.fit(sgd, 10_000, 1_000, 20, 500, few, {}, "", 256, 20.0).train
    word = ("cpu", "word", "sgd")
    assert fitting.narrower(word, 256, few, {}) == 128
    fitted = fitting.fit(word, 10_000, 1_000, 20, 500, few, {}, "", 128, 20.0)
    assert (fitted.model["hidden"], fitted.model["embedding"]) == (128, 128)  # tied: both
    assert "lr" not in fitted.train


def test_a_word_run_is_narrowed_for_few_steps_only_where_it_reads_its_text_few_times():
    """A word run that the time cuts short gains more from steps than from width; one
    that reads its text many times ends by --patience first, and keeps its width."""
    word, most = ("cpu", "word", "sgd"), fitting.FEW_STEPS["word"]
    big = pace.Pace(2.0, most - 1, "how", timed=True)  # 1 MB in 25 s: two passes
    small = pace.Pace(fitting.FEW_EPOCHS["word"], most - 1, "how", timed=True)  # 100 KB
    assert fitting.narrower(word, 256, big, {}) == 128
    assert fitting.narrower(word, 256, small, {}) is None
    assert fitting.narrower(word, 256, pace.Pace(2.0, most, "how", timed=True), {}) is None
    many_passes = pace.Pace(50.0, fitting.FEW_STEPS["char"] - 1, "how", timed=True)
    assert fitting.narrower(("cpu", "char", "adamw"), 512, many_passes, {}) == 256  # any passes


def test_a_time_budget_is_paced_by_a_probe_that_leaves_the_random_state_alone():
    config = TrainConfig(time_budget=60.0, batch_size=2, seq_len=8)
    model = ModelConfig(vocab_size=11, hidden=8, embedding=8)
    before = torch.get_rng_state()
    paced = pace.planned(config, model, windows_per_epoch=10, tokens_per_step=16,
                         device=torch.device("cpu"))  # fmt: skip
    assert torch.equal(torch.get_rng_state(), before)
    assert paced.epochs > 1 and "epochs in 1m0s at " in paced.how and paced.timed
    steps = pace.planned(TrainConfig(steps=25), model, 10, 16, torch.device("cpu"))
    assert (steps.epochs, steps.steps, steps.how, steps.timed) == (2.5, 25, "2.5 epochs", False)


def test_the_fitted_tables_take_the_first_row_the_value_is_under():
    table = ((100, "a"), (1000, "b"), (None, "c"))
    assert [fitting.first_under(table, n) for n in (0, 99, 100, 999, 1000, 10**9)] == list("aabbcc")


# The regularisers ----------------------------------------------------------------------


def regularised(cell="lstm", **given):
    torch.manual_seed(0)
    kinds = {"dropout": 0.0, "input_dropout": 0.0, "embedding_dropout": 0.0, "weight_drop": 0.0}
    return RNNLanguageModel(ModelConfig(12, cell=cell, layers=2, hidden=8, embedding=8,
                                        **{**kinds, **given}))  # fmt: skip


def test_variational_dropout_keeps_one_mask_for_the_whole_window():
    model = regularised(dropout=0.5).train()
    x = torch.ones(3, 7, 8)
    out = model._drop_window(x, 0.5, locked=True)  # [B, T, F]
    assert torch.equal(out, out[:, :1].expand_as(out))  # the same units at every step
    assert set(out.unique().tolist()) == {0.0, 2.0}
    free = model._drop_window(x, 0.5, locked=False)
    assert not torch.equal(free, free[:, :1].expand_as(free))


def test_embedding_dropout_drops_whole_tokens():
    model = regularised(embedding_dropout=0.5).train()
    ids = torch.tensor([[3, 3, 5, 5, 3, 5, 3, 5]] * 4)
    x = model._embed_window(ids)  # [B, T, E]
    for token in (3, 5):
        rows = x[ids == token]  # every occurrence: all dropped, or all kept (scaled)
        assert torch.equal(rows, rows[:1].expand_as(rows))


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_regulariser_acts_in_training_only(cell):
    ids = torch.randint(0, 12, (2, 9))
    plain = regularised(cell).eval()
    every = regularised(cell, dropout=0.3, input_dropout=0.3, embedding_dropout=0.3,
                        weight_drop=0.5)  # fmt: skip
    every.eval()
    assert torch.equal(plain(ids)[0], every(ids)[0])  # the same weights, nothing dropped
    every.train()
    torch.manual_seed(1)
    changed = every(ids)[0]
    assert not torch.equal(changed, plain(ids)[0])
    changed.sum().backward()  # the gradient reaches every weight, the dropped ones too
    for name, p in every.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # weight-drop has something to drop in every cell whose gates see h
    assert bool(every.layers[0].recurrent_weights()) == (cell != "mingru")


def test_the_regularisers_are_flags_and_a_run_samples_with_them(tmp_path):
    run_dir = cli_train(tmp_path, TEXT, "--steps", "4", "--input-dropout", "0.2",
                        "--embedding-dropout", "0.1", "--weight-drop", "0.3",
                        "--no-variational")  # fmt: skip
    model = json.loads((run_dir / "config.json").read_text())["model"]
    assert (model["input_dropout"], model["embedding_dropout"]) == (0.2, 0.1)
    assert (model["weight_drop"], model["variational"]) == (0.3, False)
    sampled = runner.invoke(app, ["sample", str(run_dir), "--length", "20", "--seed", "1"])
    assert sampled.exit_code == 0 and len(sampled.stdout) == 21
    bad = runner.invoke(app, ["train", "--weight-drop", "1", "--steps", "1"])
    assert bad.exit_code == 2 and "--weight-drop must be in [0, 1)" in bad.stderr


def test_a_format_2_run_keeps_its_dropout_its_length_and_its_lr():
    old = {"format_version": 2, "model": {"cell": "lstm", "dropout": 0.2},
           "train": {"steps": 100, "eval_every": 500}, "tokenizer": {}}  # fmt: skip
    new = runconfig.migrate(old, None)
    assert new["format_version"] == 7 and new["model"]["variational"] is False
    assert (new["train"]["patience"], new["train"]["lr_decay"]) == (0, 1.0)
    assert new["train"]["average"] == 0  # format 4's averaging: off for an old run
    assert new["tokenizer"]["word_split"] is None  # not a word run
    assert runconfig.migrate(new, None) == new  # the current format: as it is
    words = {**old, "format_version": 4, "tokenizer": {"tokenizer": "word"}}
    assert runconfig.migrate(words, None)["tokenizer"]["word_split"] == "punct"  # format 5
    assert runconfig.migrate(words, None)["model"]["shortlist"] == 0  # format 6: one softmax


def test_plain_sgd_gets_its_own_defaults_and_skips_a_bad_step(tmp_path):
    run_dir = cli_train(tmp_path, TEXT, "--steps", "6", "--optimizer", "sgd")
    train = json.loads((run_dir / "config.json").read_text())["train"]
    assert (train["optimizer"], train["lr"], train["grad_clip"]) == ("sgd", 20.0, 0.25)
    assert (train["min_lr_frac"], train["warmup_steps"], train["weight_decay"]) == (0.1, 0, 0.0)
    tok = CharTokenizer.fit(TEXT)
    ids = np.concatenate([[0], tok.encode(TEXT)]).astype(np.int32)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(tok.vocab_size, hidden=8, embedding=4))
    start_run(tmp_path / "nan", model, tok)
    model.decoder.bias.data[0] = float("nan")  # every step's loss is NaN: each is skipped
    config = TrainConfig(seq_len=8, batch_size=2, steps=3, optimizer="sgd", lr=1.0,
                         patience=0)  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reports = list(fit(job(model, tok, ids, config, tmp_path / "nan")))
    assert reports[-1].progress.skipped == 3
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, equal_nan=True)


def test_the_lr_comes_down_every_lr_patience_evaluations_without_a_better_loss():
    config = TrainConfig(steps=100, patience=0, lr_decay=0.25, lr_patience=2)
    p = Progress()
    for _ in range(5):
        after_evaluation(config, p, improved=False)
    assert (p.stale, p.lr_scale) == (5, 0.25**2)
