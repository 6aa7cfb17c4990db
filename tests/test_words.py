"""Word and subword models end to end: bits per character that compare across
tokenizers, documents that sample whole, and prime text with unknown symbols."""

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import charrnn
from charrnn import checkpoint
from charrnn.cli import app

from .conftest import TEXT

runner = CliRunner()
SMALL = ["--hidden", "32", "--embedding", "16", "--batch-size", "4", "--seq-len", "16",
         "--eval-every", "50"]  # fmt: skip


def train(tmp_path, name, text, *args):
    corpus = tmp_path / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8")
    run = tmp_path / name
    result = runner.invoke(app, ["train", str(corpus), *SMALL, *args, "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    return run, corpus, result


@pytest.mark.parametrize("kind, shortlist", [("word", 2000), ("word", 9), ("bpe", 0)])
def test_bits_per_char_is_total_nats_over_ln2_over_characters(tmp_path, kind, shortlist):
    run, corpus, _ = train(tmp_path, kind, TEXT, "--tokenizer", kind, "--steps", "30",
                           "--shortlist", str(shortlist), "--ngram", "0")  # fmt: skip
    assert charrnn.load(run).model.head == (9 if shortlist == 9 else 0)  # 2000: the vocabulary
    # one window holds the whole text, so eval reads it in one stream, as below
    result = runner.invoke(app, ["eval", str(run), str(corpus), "--json", "--seq-len", "5000"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    # the same figure from scratch: one forward pass over <eos> + the text
    loaded = charrnn.load(run)
    model, tok = loaded.model, loaded.tokenizer
    ids = torch.tensor([[tok.eos_id, *tok.encode(TEXT).tolist()]])
    logits, _ = model(ids[:, :-1])
    nats = F.cross_entropy(logits[0].double(), ids[0, 1:], reduction="sum").item()
    assert scored["chars"] == len(TEXT) and scored["tokens"] == ids.shape[1] - 1
    assert scored["tokens"] < len(TEXT) / 2  # these are words and subwords, not characters
    assert scored["bpc"] == pytest.approx(nats / math.log(2) / len(TEXT), rel=1e-5)
    assert json.loads((run / "config.json").read_text())["tokenizer"]["tokenizer"] == kind
    if kind == "bpe":
        assert (run / "tokenizer.model").exists()
    sampled = runner.invoke(app, ["sample", str(run), "--length", "12", "--seed", "1"])
    assert sampled.exit_code == 0 and sampled.stdout.strip(), sampled.output


NAMES = "\n".join(random.Random(0).sample(["anna", "bob", "cleo", "dora", "eli", "fay"] * 60, 360))


def test_documents_lines_sample_whole_names(tmp_path):
    run, _, result = train(
        tmp_path, "names", NAMES, "--documents", "lines", "--steps", "150", "--lr", "1e-2"
    )
    assert json.loads((run / "config.json").read_text())["corpus"]["documents"] == "lines"
    sampled = runner.invoke(
        app, ["sample", str(run), "--num-samples", "8", "--seed", "1", "--length", "40"]
    )
    assert sampled.exit_code == 0, sampled.output
    lines = sampled.stdout.split("\n")
    assert len(lines) == 9 and lines[-1] == ""  # 8 documents, one per line
    names = set(NAMES.split())
    assert sum(line in names for line in lines[:8]) >= 6, lines  # learned whole names


WORDS = " ".join(f"common{i % 5} rare{i}" for i in range(400)) + "\n"


def test_word_model_maps_rare_words_to_unk_and_never_samples_it_unless_asked(tmp_path):
    run, _, result = train(
        tmp_path, "words", WORDS, "--tokenizer", "word", "--min-count", "2", "--steps", "100"
    )
    assert "are <unk>" in result.stderr  # the share of <unk> is reported
    sample = ["sample", str(run), "--length", "100", "--seed", "3", "--num-samples", "4"]
    plain = runner.invoke(app, sample)
    assert plain.exit_code == 0 and "<unk>" not in plain.stdout
    allowed = runner.invoke(app, [*sample, "--allow-unk"])
    assert allowed.exit_code == 0 and "<unk>" in allowed.stdout


def test_unknown_prime_error_skip_unk(tmp_path):
    run, _, _ = train(tmp_path, "w", TEXT, "--tokenizer", "word", "--steps", "5")
    prime = ["sample", str(run), "--length", "5", "--seed", "1", "--prime", "Speak, zebra"]
    refused = runner.invoke(app, [*prime, "--on-unknown", "error"])
    assert refused.exit_code == 2 and "'zebra'" in refused.stderr and "skip" in refused.stderr
    for how in ("skip", "unk", None):  # a word model's default: unk
        result = runner.invoke(app, [*prime, *(["--on-unknown", how] if how else [])])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("Speak, zebra")  # the prime is printed as given
        said = "read 1 word the model has never seen as <unk>" if how != "skip" else "skipped 1"
        assert f"note: {said}" in result.stderr
    bad = runner.invoke(app, [*prime, "--on-unknown", "ignore"])
    assert bad.exit_code == 2 and "is not one of 'error', 'skip', 'unk'" in bad.stderr
    char, _, _ = train(tmp_path, "c", TEXT, "--steps", "5")
    no_unk = runner.invoke(app, ["sample", str(char), "--prime", "Spe☃k", "--on-unknown", "unk"])
    assert no_unk.exit_code == 2 and "has no <unk>" in no_unk.stderr
    skip = runner.invoke(app, ["sample", str(char), "--prime", "Spe☃k", "--on-unknown", "skip",
                               "--length", "3"])  # fmt: skip
    assert skip.exit_code == 0


def test_resume_refuses_another_tokenizer_and_a_second_run_reads_the_cache(tmp_path):
    run, corpus, first = train(tmp_path, "r", TEXT.upper(), "--tokenizer", "word", "--steps", "5")
    assert "encoded" in first.stderr
    changed = runner.invoke(app, ["train", "--resume", str(run), "--tokenizer", "char"])
    assert changed.exit_code == 2 and "--tokenizer char differs from the run's word" in (
        changed.stderr
    )
    again = runner.invoke(app, ["train", str(corpus), *SMALL, "--tokenizer", "word",
                                "--steps", "2", "--run-dir", str(tmp_path / "again")])  # fmt: skip
    assert again.exit_code == 0 and "token ids from the cache" in again.stderr
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--steps", "8",
                                  "--tokenizer", "word"])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output


def test_a_folder_without_matching_files_and_an_empty_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("hello")
    result = runner.invoke(app, ["train", str(tmp_path / "docs"), "--glob", "*.txt"])
    assert result.exit_code == 2 and "no files matching --glob '*.txt'" in result.stderr
    (tmp_path / "empty.txt").write_text("")
    result = runner.invoke(app, ["train", str(tmp_path / "empty.txt"), "--tokenizer", "bpe"])
    assert result.exit_code == 2 and "the corpus is empty" in result.stderr
    assert np.__name__  # numpy is what the ids are made of


def test_a_subword_vocabulary_too_small_for_the_text_is_one_clear_line(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    args = ["train", str(tmp_path / "t.txt"), "--tokenizer", "unigram", "--vocab-size", "100",
            "--run-dir", str(tmp_path / "r")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("charrnn: error: --vocab-size 100 is too small")
    least = 256 + 3 + len(set(TEXT) - {"\n"})  # bytes, <eos> <unk> "\n", the other characters
    assert f"give at least {least} " in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_eval_on_text_with_unknown_symbols(tmp_path):
    run, corpus, _ = train(tmp_path, "e", TEXT, "--steps", "5")
    other = tmp_path / "other.txt"
    other.write_text(TEXT + "Speak ☃\n", encoding="utf-8")
    refused = runner.invoke(app, ["eval", str(run), str(other)])
    assert (
        refused.exit_code == 2
        and "'☃'" in refused.stderr
        and "--on-unknown skip" in (refused.stderr)
    )
    skipped = runner.invoke(app, ["eval", str(run), str(other), "--on-unknown", "skip", "--json"])
    assert skipped.exit_code == 0, skipped.output
    result = json.loads(skipped.stdout)
    assert result["skipped_chars"] == 1 and result["chars"] == len(TEXT) + len("Speak ☃\n") - 1


def test_a_continuation_keeps_the_space_after_the_prime():
    from charrnn import tokenizers
    from charrnn.sample import continuation
    from charrnn.tokenizers import TokenizerConfig

    tok = tokenizers.fit(TokenizerConfig("word"), [TEXT])
    prime = [tok.eos_id, *tok.encode("Speak,").tolist()]
    assert continuation(tok, prime, tok.encode("speak.").tolist()) == " speak."
    assert tok.decode(tok.encode("speak.")) == "speak."  # alone it starts a text: no space


HAND = "the cat sat on the mat\nthe dog sat\n\na cat, a dog.\n"  # words + one per line:
HAND_WORDS = (6 + 1) + (3 + 1) + (0 + 1) + (4 + 1)  # = 17, as pytorch/examples counts


@pytest.mark.parametrize("kind", ["char", "word", "bpe", "unigram"])
def test_perplexity_per_word_is_total_nats_over_the_hand_counted_words(tmp_path, kind):
    extra = ["--vocab-size", "300"] if kind in ("bpe", "unigram") else []
    run, _, _ = train(tmp_path, kind, HAND * 40, "--tokenizer", kind, "--steps", "3", *extra)
    (tmp_path / "hand.txt").write_text(HAND, encoding="utf-8")
    result = runner.invoke(app, ["eval", str(run), str(tmp_path / "hand.txt"), "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["words"] == HAND_WORDS
    nats = scored["loss"] * scored["tokens"]
    assert scored["word_perplexity"] == pytest.approx(math.exp(nats / HAND_WORDS), rel=1e-9)
    assert scored["token_perplexity"] == pytest.approx(math.exp(scored["loss"]), rel=1e-9)
    assert "val_word_perplexity" in checkpoint.read_metrics(run)[-1]
    info = runner.invoke(app, ["info", str(run)])
    assert "ppl/word" in info.stdout


def test_a_word_model_has_defaults_of_its_own_and_ties_only_sizes_that_fit(tmp_path):
    run, _, result = train(tmp_path, "w", TEXT, "--tokenizer", "word", "--steps", "2")
    first = result.stderr.splitlines()[0]
    assert "--hidden 32 --embedding 16" in first  # (SMALL's sizes win over the defaults)
    model = json.loads((run / "config.json").read_text())["model"]
    assert not model["tie_weights"]  # SMALL's embedding 16 and hidden 32 differ: not tied
    bare = runner.invoke(app, ["train", str(tmp_path / "w.txt"), "--tokenizer", "word",
                               "--steps", "1", "--run-dir", str(tmp_path / "bare")])  # fmt: skip
    assert bare.exit_code == 0, bare.output
    first = bare.stderr.splitlines()[0]
    assert "--hidden 256 --embedding 256" in first and "--tie-weights" in first  # the defaults
    assert "--seq-len 35" in first and "--shortlist 2000" in first

    def short(name: str) -> str:
        """The fitted line of a word run of 1 s on tmp_path/NAME.txt."""
        done = runner.invoke(app, ["train", str(tmp_path / f"{name}.txt"), "--tokenizer",
                                   "word", "--time-budget", "1s", "--run-dir",
                                   str(tmp_path / f"{name}-short")])  # fmt: skip
        assert done.exit_code == 0, done.output
        return done.stderr

    # a second of a large text reads it less than 5 times: halved (the tied embedding too)
    # for a time budget too short for the default width (fitting.py)
    words = random.Random(1).choices([f"w{i}" for i in range(400)], k=60_000)
    lines = (" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
    (tmp_path / "big.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    said = short("big")
    assert "--hidden 128 --embedding 128" in said and "--tie-weights" in said
    assert "steps of --hidden 256, so " in said
    # a small text read many times ends by --patience first: the width is kept
    said = short("w")
    assert "--hidden 256 --embedding 256" in said and "steps of --hidden" not in said
