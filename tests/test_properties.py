"""Property tests (hypothesis): round trips, window coverage, and CLI option validation."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charrnn import tokenizers
from charrnn.cli import app
from charrnn.data import Streams
from charrnn.tokenizers import CharTokenizer, TokenizerConfig
from charrnn.tokenizers.words import ATOMS, SPLITS, LegacyWordTokenizer

from .conftest import cli_train

runner = CliRunner()


@given(st.text(min_size=1))
def test_char_round_trip_on_any_unicode(text):
    tok = CharTokenizer.fit(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.unknown(text) == []


# text with the structure a word tokenizer cares about: words, punctuation, blanks,
# newlines of both kinds, a literal <unk>; and anything else now and then
PIECES = ["a", "bc", " ", " ", "  ", ",", ".", "(", "'", "\n", "\r\n", "\r", "\t", "<unk>", "é"]
PROSE = st.lists(st.one_of(st.sampled_from(PIECES), st.characters())).map("".join)


def words_of(text: str) -> int:
    return sum(len(line.split()) + 1 for line in text.splitlines())


@given(st.one_of(st.text(min_size=1), PROSE))
def test_word_round_trip_on_any_unicode(text):
    for tok in (
        *(tokenizers.fit(TokenizerConfig("word", word_split=s), [text]) for s in SPLITS),
        LegacyWordTokenizer.fit([text], 10_000),
    ):
        ids = tok.encode(text)
        assert tok.decode(ids) == text and tok.unknown(text) == []
        assert tok.count_chars(ids) == len(text) and tok.count_words(ids) == words_of(text)


@given(PROSE, PROSE)
def test_word_text_cut_after_a_newline_encodes_in_two(a, b):
    a += "\n"  # how the corpus is read: chunks that end at a newline
    for split in SPLITS:
        tok = tokenizers.fit(TokenizerConfig("word", word_split=split), [a, b])
        assert tok.decode(np.concatenate([tok.encode(a), tok.encode(b)])) == a + b
        documents = [tok.eos_id, *tok.encode(a), tok.eos_id, *tok.encode(b), tok.eos_id]
        assert tok.decode(documents) == a + b and tok.count_chars(documents) == len(a + b) + 3
        assert tok.count_words(documents) == words_of("\n" + a + "\n" + b + "\n")


def spelled(blanks: str, known) -> list[str]:
    """A run of blanks as the word tokenizer spells it: itself if known, else from the
    left the longest known runs, and a blank no known run starts with on its own."""
    if blanks in known:
        return [blanks]
    pieces = []
    while blanks:
        n = max((n for n in range(1, len(blanks) + 1) if blanks[:n] in known), default=1)
        pieces, blanks = [*pieces, blanks[:n]], blanks[n:]
    return pieces


@given(PROSE, PROSE)
def test_word_unknowns_are_cut_out_or_written_as_unk(seen, text):
    for split in SPLITS:
        tok = tokenizers.fit(TokenizerConfig("word", word_split=split), [seen])
        unknown = set(tok.unknown(text))
        atoms = [c for a in ATOMS[split].findall(text)
                 for c in (spelled(a, tok.index) if a.isspace() else [a])]  # fmt: skip
        kept = "".join(a for a in atoms if a not in unknown)
        assert tok.decode(tok.encode(text, "skip")) == kept
        assert tok.decode(tok.encode(text, "unk")) == "".join(
            "<unk>" if a in unknown else a for a in atoms
        )


@given(st.one_of(st.text(), PROSE), st.lists(st.integers(0, 50)))
def test_text_words_does_not_care_where_the_text_is_cut(text, cuts):
    cuts = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    pieces = [text[i:j] for i, j in zip(cuts, cuts[1:])]
    assert tokenizers.text_words(pieces) == words_of(text)


_BPE = []


def bpe():
    if not _BPE:  # trained once, on a little English and code
        from .conftest import TEXT
        from .test_tokenizer import CODE

        _BPE.append(tokenizers.fit(TokenizerConfig("bpe", vocab_size=300), [TEXT, CODE]))
    return _BPE[0]


@settings(deadline=None)  # the first example also trains the tokenizer
@given(st.text(st.characters(blacklist_categories=["Cs"])))  # all but lone surrogates
def test_bpe_round_trip_on_any_unicode_it_never_saw(text):
    tok = bpe()
    ids = tok.encode(text)
    assert tok.decode(ids) == text and tok.count_chars(ids) == len(text)


@given(st.text(min_size=1), st.text())
def test_unknown_lists_exactly_the_unseen_characters(seen, other):
    tok = CharTokenizer.fit(seen)
    assert set(tok.unknown(other)) == set(other) - set(seen)


@given(
    n=st.integers(min_value=2, max_value=3000),
    b=st.integers(min_value=1, max_value=64),
    t=st.integers(min_value=1, max_value=300),
)
def test_every_token_is_a_target_exactly_once_per_epoch(n, b, t):
    if (n - 1) // b == 0:
        return  # too few tokens for b streams: batchify refuses, tested elsewhere
    ids = np.arange(n, dtype=np.int32)
    s = Streams.of(ids, b)
    targets = np.concatenate([y.numpy().ravel() for _, y in s.windows(t)])
    covered = b * ((n - 1) // b)
    assert sorted(targets.tolist()) == list(range(1, covered + 1))


# Small or bad values only: a valid but huge one would really train a huge model.
NUMBERS = st.one_of(
    st.integers(min_value=-5, max_value=30).map(str),
    st.floats(min_value=-2, max_value=2).map(str),
    st.sampled_from(["", "abc", "1e999", "-0", "nan", "inf", "-inf", "0x10", "2s"]),
)
SAMPLE_OPTIONS = ["--length", "--temperature", "--top-k", "--top-p", "--num-samples", "--seed"]
TRAIN_OPTIONS = ["--hidden", "--layers", "--embedding", "--dropout", "--seq-len", "--batch-size",
                 "--lr", "--steps", "--epochs", "--time-budget", "--val-frac",
                 "--grad-clip", "--warmup-steps", "--weight-decay"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return cli_train(tmp_path_factory.mktemp("sample"))


@settings(max_examples=60, deadline=None)
@given(option=st.sampled_from(SAMPLE_OPTIONS), value=NUMBERS)
def test_sample_options_never_traceback(option, value, trained):
    """Every value reaches the option's check: a run that loads, and text or one line."""
    args = ["sample", str(trained), option, value]
    args += [] if option == "--length" else ["--length", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if result.exit_code == 2:  # one line naming the option, never a failed load
        assert result.stderr.count("\n") == 1 and option in result.stderr, result.stderr
    else:
        assert result.stdout and not result.stderr.startswith("charrnn: error")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(option=st.sampled_from(TRAIN_OPTIONS), value=NUMBERS)
def test_train_options_are_validated_before_anything_is_written(option, value, tmp_path):
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n" * 50)
    run = tmp_path / "run"
    args = ["train", str(corpus), "--run-dir", str(run), option, value]
    if option not in ("--steps", "--epochs", "--time-budget"):
        args += ["--steps", "1"]
    args += [] if option in ("--hidden", "--embedding") else ["--hidden", "8", "--embedding", "4"]
    args += [] if option == "--seq-len" else ["--seq-len", "8"]
    args += [] if option == "--batch-size" else ["--batch-size", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert result.stderr.strip(), "an error says why"
        assert not (run / "model.safetensors").exists()
    else:
        assert (run / "config.json").exists()
    assert "Traceback" not in result.stderr
