"""--ngram: the Kneser-Ney model against a plain dictionary version of the formulas, its
two ways of reading (a text's targets, a sampler's next token) against each other, the
mixture's weight, and a word run that trains, saves, scores, samples, serves and resumes
with one."""

import collections
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import charrnn
from charrnn import checkpoint, fitting, ngram
from charrnn.cli import app
from charrnn.model import ModelConfig
from charrnn.ngram import NGram, fit_weight, mix
from charrnn.sample import generate_ids, sample_config

from .conftest import TEXT

runner = CliRunner()


def by_hand(ids: list[int], order: int, V: int):
    """p(w | history) of interpolated Kneser-Ney, from Counters, as textbooks write it."""
    raw = collections.Counter(tuple(ids[i : i + order]) for i in range(len(ids) - order + 1))
    counts = {order: raw}
    for n in range(order - 1, 0, -1):  # continuation counts: distinct tokens before
        longer = {tuple(ids[i : i + n + 1]) for i in range(len(ids) - n)}
        counts[n] = collections.Counter(g[1:] for g in longer)

    def discount(c):
        n1 = sum(1 for v in c.values() if v == 1)
        n2 = sum(1 for v in c.values() if v == 2)
        return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95) if n1 + n2 else 0.5

    D = {n: discount(c) for n, c in counts.items()}

    def p(history: tuple, w: int) -> float:
        c1 = counts[1]
        prob = (max(c1.get((w,), 0) - D[1], 0) + D[1] * len(c1) / V) / sum(c1.values())
        for n in range(2, order + 1):
            if len(history) < n - 1:
                break
            h = tuple(history[len(history) - n + 1 :])
            after = {g: c for g, c in counts[n].items() if g[:-1] == h}
            if after:
                total = sum(after.values())
                prob = (max(after.get(h + (w,), 0) - D[n], 0) + D[n] * len(after) * prob) / total
        return prob

    return p


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_kneser_ney_matches_the_formulas_and_sums_to_one(order):
    rng = np.random.default_rng(order)
    V = 7
    train = rng.integers(0, V - 1, 300).tolist()  # id 6 is never seen
    model, p = NGram.count(np.array(train), order, V), by_hand(train, order, V)
    text = rng.integers(0, V, 60)
    got = model.logp(text).exp()
    want = [p(tuple(text[max(0, i - order + 1) : i].tolist()), int(text[i])) for i in range(1, 60)]
    assert got.numpy() == pytest.approx(want, rel=1e-9)
    # a sampler's view: the next token's distribution after each history (-1: none yet)
    rows = [[-1] * (order - 1), *[text[i : i + order - 1].tolist() for i in range(9)]]
    histories = torch.tensor(rows, dtype=torch.long).view(len(rows), order - 1)
    probs = model.log_probs(histories).exp().double()
    assert probs.sum(-1).numpy() == pytest.approx(np.ones(len(probs)), rel=1e-5)
    for row, history in zip(probs, histories.tolist()):
        seen = tuple(t for t in history if t >= 0)
        assert row.numpy() == pytest.approx([p(seen, w) for w in range(V)], rel=1e-5)


def test_the_tables_round_trip_and_damaged_ones_are_refused():
    model = NGram.count(np.array([0, 1, 2, 1, 0, 1, 2, 2, 3]), 3, 5)
    again = NGram.of_tensors(model.tensors(), 3, 5)
    text = np.array([1, 2, 1, 0, 4, 2])
    assert torch.equal(again.logp(text), model.logp(text))
    bad = dict(model.tensors(), **{"keys.2": model.tensors()["keys.2"].flip(0)})
    with pytest.raises(ValueError, match="order-2 keys are not sorted"):
        NGram.of_tensors(bad, 3, 5)
    with pytest.raises(ValueError, match="not the tables of an order-2 model"):
        NGram.of_tensors(model.tensors(), 2, 5)


def test_the_weight_is_the_likeliest_mixture():
    rng = np.random.default_rng(0)
    net = torch.from_numpy(-rng.exponential(3.0, 2000))
    kn = torch.from_numpy(-rng.exponential(3.5, 2000))
    weight = fit_weight(net, kn)
    grid = np.linspace(0.01, 0.99, 981)
    best = grid[np.argmax([mix(net, kn, w).sum().item() for w in grid])]
    assert weight == pytest.approx(best, abs=2e-3)
    assert torch.equal(mix(net, kn, 0.0), net) and torch.allclose(mix(net, kn, 1.0), kn)


def test_an_order_too_long_for_the_vocabulary_is_refused():
    assert ngram.max_order(10_000) == 4
    with pytest.raises(
        charrnn.CharrnnError, match="--ngram 5 is too long for a vocabulary of 10,000"
    ):
        ModelConfig(10_000, ngram=5)


def shuffled(seed: int = 0, lines: int = 80) -> str:
    """TEXT's words in a random order, ten a line: a text a trigram cannot learn by heart
    (TEXT itself, one passage again and again, it does: its weight goes to 1)."""
    words = TEXT.split()
    rng = np.random.default_rng(seed)
    return "".join(" ".join(rng.choice(words, 10)) + "\n" for _ in range(lines))


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ngram")
    corpus = root / "text.txt"
    corpus.write_text(shuffled(), encoding="utf-8")
    run = root / "run"
    args = ["train", str(corpus), "--tokenizer", "word", "--steps", "12", "--eval-every", "6",
            "--hidden", "16", "--embedding", "16", "--batch-size", "4", "--seq-len", "8",
            "--run-dir", str(run)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "val is the mixture with the n-gram (weight 0." in " ".join(result.output.split())
    return run, corpus


def test_a_word_run_has_a_trigram_whose_weight_validation_fits(word_run):
    run, corpus = word_run
    loaded = charrnn.load(run)
    assert loaded.config.model.ngram == 3 and (run / "ngram.safetensors").is_file()
    lines = checkpoint.read_metrics(run)
    assert all(0 < m["ngram_weight"] < 1 and m["val_loss"] <= m["val_net_loss"] for m in lines)
    assert float(loaded.model.ngram_weight) == pytest.approx(lines[-1]["ngram_weight"])
    result = runner.invoke(app, ["eval", str(run), str(corpus), "--json"])
    scored = json.loads(result.stdout)
    assert scored["ngram_weight"] == pytest.approx(lines[-1]["ngram_weight"])
    assert scored["loss"] <= scored["net_loss"]
    assert "--ngram 3" in runner.invoke(app, ["info", str(run)]).output.replace("\n", " ")


def test_greedy_samples_and_a_beam_of_one_follow_the_mixture(word_run):
    run, _ = word_run
    loaded = charrnn.load(run)
    model, tok = loaded.model, loaded.tokenizer
    prime = [tok.eos_id, *tok.encode("First Citizen:").tolist()]
    config = sample_config(tok, "none", length=12, temperature=0)
    made = generate_ids(model, prime, config, tok.eos_id)[0].tolist()
    # by hand: the network one token at a time, its log-probabilities mixed with the
    # trigram's after the tokens so far, the likeliest allowed one taken
    ids, weight = list(prime), float(model.ngram_weight)
    with torch.no_grad():
        logits, state = model(torch.tensor([ids]))
        logits = logits[:, -1]
        for _ in range(12):
            history = torch.tensor([ids[-2:]])
            mixed = mix(logits.float().log_softmax(-1), model.ngram.log_probs(history), weight)
            mixed[:, list(config.banned_ids)] = -math.inf
            ids.append(int(mixed.argmax()))
            logits, state = model.step(torch.tensor([ids[-1]]), state)
    assert made == ids[len(prime) :][: len(made)] and len(made) >= 1
    assert loaded.sample("First Citizen:", length=12, temperature=0) == loaded.sample(
        "First Citizen:", length=12, beam=1
    )


def test_a_damaged_ngram_file_is_one_line_and_exit_2(word_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(word_run[0], run)
    (run / "ngram.safetensors").write_bytes(b"not safetensors")
    result = runner.invoke(app, ["sample", str(run), "--length", "5"])
    assert result.exit_code == 2
    assert "ngram.safetensors: not the n-gram of this run" in result.output
    (run / "ngram.safetensors").unlink()
    result = runner.invoke(app, ["sample", str(run), "--length", "5"])
    assert result.exit_code == 2 and "ngram.safetensors" in result.output


def test_ngram_off_and_an_old_run_have_no_ngram(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(corpus), "--tokenizer", "word", "--steps", "4",
                                 "--eval-every", "4", "--hidden", "16", "--embedding", "16",
                                 "--ngram", "0", "--run-dir", str(run)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (run / "ngram.safetensors").exists()
    assert "ngram_weight" not in checkpoint.read_metrics(run)[-1]
    config = json.loads((run / "config.json").read_text())
    del config["model"]["ngram"]  # as format 6 wrote it
    config["format_version"] = 6
    (run / "config.json").write_text(json.dumps(config))
    assert charrnn.load(run).config.model.ngram == 0
    assert math.isfinite(charrnn.load(run).score(TEXT).loss)


def test_an_export_says_the_ngram_is_not_in_the_graph(word_run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    result = runner.invoke(app, ["export", str(word_run[0]), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "the network alone: the run's n-gram (--ngram 3) is not in it" in result.output


def test_the_order_is_the_tokenizers_shortened_for_a_large_vocabulary_off_for_a_long_text():
    assert fitting.ngram_order(7, 1_000_000, 65) == (7, "")
    assert fitting.ngram_order(0, 1_000_000, 65) == (0, "")
    assert fitting.ngram_order(3, 10_000, 10_000) == (3, "")
    order, why = fitting.ngram_order(7, 1_000_000, 3_000)
    assert order == ngram.max_order(3_000) == 5 and "the longest n-gram 3,000 ids can key" in why
    order, why = fitting.ngram_order(7, fitting.NGRAM_MOST_TOKENS + 1, 65)
    assert order == 0 and "no n-gram over 16M train tokens" in why


def test_a_char_run_mixes_in_an_order_7_ngram_and_a_large_alphabet_a_shorter_one(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    tiny = ["--steps", "2", "--eval-every", "2", "--hidden", "16", "--batch-size", "2"]
    result = runner.invoke(app, ["train", str(corpus), *tiny, "--run-dir", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert charrnn.load(tmp_path / "a").config.model.ngram == 7
    assert "--ngram" not in result.stderr.splitlines()[1]  # the fitted line: nothing fitted
    # 600 distinct characters: keys of 7 ids of 601 would not fit an int64
    alphabet = "".join(map(chr, range(0x4E00, 0x4E00 + 600)))
    corpus.write_text((alphabet + "\n") * 4, encoding="utf-8")
    result = runner.invoke(app, ["train", str(corpus), *tiny, "--run-dir", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    fitted = result.stderr.splitlines()[1]
    assert "the longest n-gram 602 ids can key" in fitted and " --ngram 6 " in fitted
    assert charrnn.load(tmp_path / "b").config.model.ngram == 6 == ngram.max_order(602)
    given = runner.invoke(app, ["train", str(corpus), *tiny, "--ngram", "7", "--run-dir",
                                str(tmp_path / "c")])  # fmt: skip
    assert given.exit_code == 2 and "--ngram 7 is too long for a vocabulary of 602" in given.stderr
