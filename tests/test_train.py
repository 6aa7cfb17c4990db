import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn import checkpoint
from charrnn.errors import ConfigError
from charrnn.metrics import evaluate
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.ngram import mix
from charrnn.run import with_ngram
from charrnn.tokenizers import CharTokenizer
from charrnn.training.config import TrainConfig
from charrnn.training.loop import fit
from charrnn.training.schedule import lr_at

from .conftest import TEXT, job, load_last, start_run


def test_schedule_warms_up_then_decays_to_the_floor():
    c = TrainConfig(lr=1.0, warmup_steps=10, min_lr_frac=0.1, steps=100)
    assert lr_at(c, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(c, 9, 0.09) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.09)) * 0.9 + 0.1)
    assert lr_at(c, 99, 1.0) == pytest.approx(0.1)
    assert lr_at(c, 50, 0.5) == pytest.approx(0.55)


def test_config_wants_exactly_one_duration():
    with pytest.raises(ConfigError, match="give one of --steps, --epochs, --time-budget"):
        TrainConfig(steps=3, epochs=1)
    with pytest.raises(ConfigError, match="give one of"):
        TrainConfig()
    with pytest.raises(ConfigError, match="^--steps must be at least 1, not -2$"):
        TrainConfig(steps=-2)


def tiny(cell="lstm", dropout=0.0, seed=0, shortlist=0, ngram=0):
    tok = CharTokenizer.fit(TEXT)
    torch.manual_seed(seed)
    config = ModelConfig(tok.vocab_size, cell=cell, layers=2, hidden=24, embedding=8,
                         dropout=dropout, shortlist=shortlist, ngram=ngram)  # fmt: skip
    ids = np.concatenate([[0], tok.encode(TEXT)]).astype(np.int32)
    return with_ngram(RNNLanguageModel(config), ids[:-300]), tok, ids  # job()'s training split


@pytest.mark.parametrize("shortlist", [0, 10])  # one softmax; the 10 first ids and the rest
def test_evaluate_scores_every_target_once(shortlist):
    model, tok, ids = tiny(shortlist=shortlist)
    assert model.head == shortlist < tok.vocab_size
    model.eval()
    ids = ids[:500]
    # One stream: evaluation must equal one forward over the whole text.
    m = evaluate(model, ids, seq_len=400, tokenizer=tok, device="cpu")
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(ids[:-1]).long()[None])
        nats = F.cross_entropy(logits[0], torch.from_numpy(ids[1:]).long(), reduction="sum")
    assert m.tokens == 499 and m.chars == 499
    assert m.loss == pytest.approx(nats.item() / 499, rel=1e-5)
    assert m.bpc == pytest.approx(nats.item() / math.log(2) / 499, rel=1e-5)
    # Many streams and a tail: every target still counted.
    m = evaluate(model, ids, seq_len=7, tokenizer=tok, device="cpu")
    assert m.tokens == 499 and m.token_perplexity == pytest.approx(math.exp(m.loss))
    assert m.words == tok.count_words(ids[1:])


def test_evaluate_scores_the_mixture_with_an_ngram_and_fits_its_weight():
    model, tok, ids = tiny(ngram=3)
    model.eval()
    # half the text the trigram was counted on, half noise that only the (untrained,
    # near uniform) network does not find surprising: a weight between 0 and 1
    noise = np.random.default_rng(0).integers(0, tok.vocab_size, 250).astype(ids.dtype)
    ids = np.concatenate([ids[:250], noise])
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(ids[:-1]).long()[None])
    net = -F.cross_entropy(logits[0].double(), torch.from_numpy(ids[1:]).long(), reduction="none")
    kn = model.ngram.logp(ids)
    fitted = evaluate(model, ids, seq_len=400, tokenizer=tok, device="cpu", fit=True)
    weight = float(model.ngram_weight)
    assert fitted.ngram_weight == pytest.approx(weight) and 0 < weight < 1
    assert fitted.net_loss == pytest.approx(-net.mean().item(), rel=1e-5)
    assert fitted.loss == pytest.approx(-mix(net, kn, weight).mean().item(), rel=1e-5)
    for other in (weight - 0.05, weight + 0.05):  # EM found the best weight
        assert -mix(net, kn, other).mean().item() > fitted.loss
    again = evaluate(model, ids, seq_len=400, tokenizer=tok, device="cpu")  # the weight kept
    assert again.loss == pytest.approx(fitted.loss, rel=1e-9)
    assert float(model.ngram_weight) == weight


def run_fit(tmp_path, steps, stop_at=None, resume=None, dropout=0.3, shortlist=0, ngram=0):
    model, tok, ids = tiny(dropout=dropout, shortlist=shortlist, ngram=ngram)
    if resume is not None:
        model, resume = load_last(tmp_path)
        model = with_ngram(model, ids[:-300])
    else:
        start_run(tmp_path, model, tok)
    config = TrainConfig(seq_len=16, batch_size=4, steps=steps, eval_every=5, warmup_steps=3)
    stop = (lambda: bool(reports) and reports[-1].progress.step >= stop_at) if stop_at else None
    reports = []
    for r in fit(job(model, tok, ids, config, tmp_path, resume=resume), stop or (lambda: False)):
        reports.append(r)
    return model, reports


def test_fit_learns_and_writes_the_run_directory(tmp_path):
    model, reports = run_fit(tmp_path, steps=30, dropout=0.0)
    evals = [r for r in reports if r.kind == "eval"]
    assert [r.progress.step for r in evals] == [5, 10, 15, 20, 25, 30]
    assert evals[-1].val.loss < evals[0].val.loss
    assert reports[-1].kind == "done"
    lines = checkpoint.read_metrics(tmp_path)
    assert len(lines) == 6 and {
        "val_loss",
        "val_bpc",
        "val_word_perplexity",
        "val_token_perplexity",
        "train_loss",
    } <= set(lines[0])
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "last").is_dir()


@pytest.mark.parametrize("shortlist, ngram", [(0, 0), (10, 0), (0, 3)])
def test_stop_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, shortlist, ngram):
    whole, _ = run_fit(tmp_path / "a", steps=12, shortlist=shortlist, ngram=ngram)
    _, reports = run_fit(tmp_path / "b", steps=12, stop_at=7, shortlist=shortlist, ngram=ngram)
    assert reports[-1].kind == "stopped" and reports[-1].progress.step == 7
    resumed, _ = run_fit(tmp_path / "b", steps=12, resume=True, shortlist=shortlist, ngram=ngram)
    if ngram:  # its weight, fitted at each evaluation, is saved and restored with the model
        assert float(resumed.ngram_weight) > 0  # (TEXT repeats itself: the trigram knows it)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_gradient_norms_are_summed_on_the_device_and_skipped_steps_left_out():
    from charrnn.training.meters import GradNorms

    grads = GradNorms(torch.device("cpu"))
    for norm in (1.0, float("nan"), 3.0, 0.5):
        grads.add(torch.tensor(norm), clip=2.0)
    stats = grads.take()
    assert stats.steps == 3 and stats.max == 3.0 and stats.clipped == pytest.approx(1 / 3)
    assert stats.mean == pytest.approx(4.5 / 3) and grads.take() is None  # started again


def test_metrics_record_the_gradient_norm_before_clipping(tmp_path):
    run_fit(tmp_path, steps=10, dropout=0.0)
    lines = checkpoint.read_metrics(tmp_path)
    assert all(0 < m["grad_norm_mean"] <= m["grad_norm_max"] for m in lines)
    assert all(0 <= m["clipped_frac"] <= 1 for m in lines)


def test_a_run_goes_on_while_the_network_improves_under_an_ngram_that_carries_the_mixture(
    tmp_path,
):
    # TEXT repeats one passage: its trigram predicts it all but perfectly, the mixture's
    # weight goes to 1 and the mixture's val loss stops moving at once; the network still
    # learns, and validation must not call that a stall
    _, reports = run_fit(tmp_path, steps=40, dropout=0.0, ngram=3)
    lines = checkpoint.read_metrics(tmp_path)
    mixture = [m["val_loss"] for m in lines]
    stalls = sum(not b < min(mixture[: i + 1]) for i, b in enumerate(mixture[1:]))
    assert stalls >= 4  # --patience 4 would have ended it on the mixture's alone
    nets = [m["val_net_loss"] for m in lines]
    assert nets[-1] < nets[0] and reports[-1].kind == "done"
    assert reports[-1].progress.step == 40 and reports[-1].progress.ended is None
