import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import charrnn
from charrnn import tokenizers
from charrnn.errors import ConfigError
from charrnn.tokenizers import CharTokenizer, subwords

UNICODE = "héllo wörld — ünïcödé ∑ 𝄞 emoji 🦜 e\u0301 Ω\tend\r\n\x00\ud800"


def test_round_trip_is_exact_on_unicode():
    tok = CharTokenizer.fit(UNICODE)
    ids = tok.encode(UNICODE)
    assert ids.dtype == np.int32 and len(ids) == len(UNICODE)  # one id per code point
    assert tok.decode(ids) == UNICODE


def test_no_normalisation_keeps_combining_characters_apart():
    tok = CharTokenizer.fit("e\u0301\u00e9")  # e + combining acute, and precomposed é
    assert tok.vocab_size == 4  # <eos>, e, é, U+0301
    assert tok.decode(tok.encode("\u00e9e\u0301")) == "\u00e9e\u0301"


def test_eos_is_reserved_and_decodes_to_nothing():
    tok = CharTokenizer.fit("<eos>")
    assert tok.eos_id == 0
    assert 0 not in tok.encode("<eos>").tolist()
    assert tok.decode([0, *tok.encode("<eos>").tolist(), 0]) == "<eos>"


def test_unknown_names_the_characters():
    tok = CharTokenizer.fit("abc")
    assert tok.unknown("abxcyx") == ["x", "y"]
    with pytest.raises(ValueError, match="'x'"):
        tok.encode("ax")


def test_files_round_trip_through_the_run_directory(tmp_path):
    tok = CharTokenizer.fit(UNICODE)
    for name, data in tok.files().items():
        (tmp_path / name).write_bytes(data)
    loaded = tokenizers.load(tmp_path)
    assert loaded.symbols == tok.symbols
    assert loaded.encode(UNICODE).tolist() == tok.encode(UNICODE).tolist()


def test_load_names_a_bad_file(tmp_path):
    (tmp_path / tokenizers.TOKENIZER_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        tokenizers.load(tmp_path)


# word and subword tokenizers -------------------------------------------------------------

from charrnn.tokenizers import TokenizerConfig  # noqa: E402
from charrnn.tokenizers.words import LegacyWordTokenizer, WordTokenizer  # noqa: E402

from .conftest import SHARED, TEXT  # noqa: E402

CODE = "def f(x):\n    return x  + 1\n\n\tif x:\r\n        pass  # done\n"
WIKI = (
    " = Robert Boulter = \n \n Robert Boulter is an English actor . He 's had a guest @-@ role .\n"
)
FIXTURE = Path(__file__).parent / "data" / "v1" / "word-gru"


def pieces(tok, text: str) -> list[str]:
    return [tok.tokens[i] for i in tok.encode(text).tolist()]


PUNCT = TokenizerConfig("word", word_split="punct")


def test_word_tokens_are_words_and_punctuation_and_a_single_space_is_free():
    wiki = tokenizers.fit(PUNCT, [WIKI * 3])
    assert pieces(wiki, " = Robert Boulter = \n \n") == ["=", "Robert", "Boulter", "=", "\n", "\n"]
    prose = tokenizers.fit(PUNCT, [TEXT])
    assert pieces(prose, "First Citizen:\nSpeak, speak.\n") == [
        "First", "Citizen", ":", "\n", "Speak", ",", "speak", ".", "\n"
    ]  # fmt: skip
    # any other gap costs a token: <join> where two tokens touch, the blanks themselves
    assert pieces(prose, "speak,speak : all") == ["speak", ",", "<join>", "speak", " ", ":", "all"]
    blanks = tokenizers.fit(PUNCT, [TEXT, "\tAll  All"])
    assert pieces(blanks, "\tAll  ") == ["\t", "All", "  "]
    for tok, text in ((wiki, WIKI), (prose, TEXT)):
        ids = tok.encode(text)
        assert tok.decode(ids) == text and tok.count_chars(ids) == len(text)
        assert len(ids) <= sum(len(line.split()) + 1 for line in text.splitlines()) * 1.5


def test_word_tokens_are_all_between_two_blanks_by_default():
    prose = tokenizers.fit(TokenizerConfig("word"), [TEXT])
    assert prose.split == "space"
    assert pieces(prose, "First Citizen:\nSpeak, speak.\n") == [
        "First", "Citizen:", "\n", "Speak,", "speak.", "\n"
    ]  # fmt: skip
    spaced = tokenizers.fit(TokenizerConfig("word"), [TEXT, "Speak,  speak."])
    assert pieces(spaced, "Speak,  speak.\n") == ["Speak,", "  ", "speak.", "\n"]
    assert prose.encode("speak,speak", "unk").tolist() == [prose.unk_id]  # one unseen word
    ids = prose.encode(TEXT)  # a token a word: the words and lines, and the odd blank
    words = sum(len(line.split()) + 1 for line in TEXT.splitlines())
    assert prose.decode(ids) == TEXT and words <= len(ids) <= words * 1.05
    wiki = tokenizers.fit(TokenizerConfig("word"), [WIKI * 3])
    assert pieces(wiki, " He 's had a guest @-@ role .") == [
        "He", "'s", "had", "a", "guest", "@-@", "role", "."
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="--word-split is for the word tokenizer"):
        TokenizerConfig("char", word_split="space")


HAND = [
    "", " ", "  ", "\n", " \n ", "  two  spaces  ", " leading", "trailing ", "a  b   c",
    "\ttab\tand\t\ttabs\t", "win\r\ndows\r\n\r\n", "lone\rcr \r\n", ",starts with a comma",
    "(paren) 'quote' \"dq\" end.", "héllo wörld — ünïcödé Ω ∑ 🦜 e\u0301", "<unk> a<unk>b <unk>",
    "x\n\n\n  \n\ty", "a,b , c ,d", "\u00a0nbsp\u3000ideographic\u2028sep",
]  # fmt: skip


@pytest.mark.parametrize("split", ["space", "punct"])
@pytest.mark.parametrize("text", HAND)
def test_word_round_trip_on_hand_cases_fitted_on_the_same_text(text, split):
    fits = ([text], [TEXT, CODE, text])
    for tok in (WordTokenizer.fit(chunks, 10_000, split=split) for chunks in fits):
        ids = tok.encode(text)
        assert tok.decode(ids) == text and tok.unknown(text) == []
        assert tok.count_chars(ids) == len(text)


@pytest.mark.parametrize("split", ["space", "punct"])
def test_word_round_trip_of_text_fitted_on_other_text(split):
    tok = tokenizers.fit(TokenizerConfig("word", word_split=split), [TEXT, CODE, WIKI])
    mixed = ("speak  All\t:\n\n  Citizen,", "  x  ( 1 )\r\n") if split == "punct" else (
        "Speak,  First\t=\n\n  Citizen:", "  x  + 1\r\n")  # fmt: skip
    for text in (TEXT, CODE, WIKI, *mixed):
        assert tok.decode(tok.encode(text)) == text
    # a run of blanks it never saw is spelled by the blanks it has
    assert tok.unknown("x" + " " * 13 + "\t\t") == [] and "       " not in tok.index
    assert tok.decode(tok.encode("x" + " " * 13 + "\t\t")) == "x" + " " * 13 + "\t\t"


def test_an_unseen_run_of_blanks_is_spelled_by_the_longest_runs_known():
    # A text indented unlike the text fitted (a license's 70-space centring) pays a token
    # for each known run it takes, not one for every blank.
    tok = tokenizers.fit(TokenizerConfig("word"), ["a    b  c\td\n", "e    f\n"])
    assert "    " in tok.index and " " * 10 not in tok.index
    text = "a" + " " * 10 + "b\t\tc\n"
    ids = tok.encode(text)
    assert [tok.tokens[i] for i in ids] == ["a", "    ", "    ", "  ", "b", "\t", "\t", "c", "\n"]
    assert tok.decode(ids) == text and tok.count_chars(ids) == len(text)
    assert tok.decode(tok.encode("a\u3000  b", "unk")) == "a<unk>  b"  # a blank it lacks


def test_word_documents_and_chunks_cut_at_newlines_join_back():
    tok = tokenizers.fit(TokenizerConfig("word"), [WIKI, TEXT])
    a, b = WIKI, " He had a guest role .\n"
    assert tok.decode([*tok.encode(a), *tok.encode(b)]) == a + b  # a ends at a newline
    ids = [tok.eos_id, *tok.encode(a.strip()), tok.eos_id, *tok.encode(" He"), tok.eos_id]
    assert tok.decode(ids) == a.strip() + " He"  # each document decodes as it was encoded
    assert tok.count_chars(ids) == len(a.strip() + " He") + 3


def test_word_vocabulary_keeps_the_commonest_and_maps_the_rest_to_unk():
    text = "a a a b b c <unk> d"
    tok = tokenizers.fit(TokenizerConfig("word", vocab_size=6), [text])
    assert tok.tokens == ["<eos>", "<unk>", "<join>", " ", "a", "b"]  # 3 specials + 3 commonest
    assert tok.decode(tok.encode("a c b", "unk")) == "a <unk> b"
    assert tok.encode("<unk>").tolist() == [tok.unk_id]  # WikiText's own <unk> is ours
    rare = tokenizers.fit(TokenizerConfig("word", min_count=2), [text])
    assert rare.unknown("a c d") == ["c", "d"]


def test_word_unknowns_error_skip_or_unk():
    tok = tokenizers.fit(TokenizerConfig("word"), ["the cat sat"])
    with pytest.raises(ValueError, match="'dog'"):
        tok.encode("the dog sat")
    assert tok.decode(tok.encode("the dog sat", "skip")) == "the  sat"  # the text without it
    assert tok.decode(tok.encode("the dog sat", "unk")) == "the <unk> sat"
    assert tok.decode(tok.encode("the\u3000cat", "unk")) == "the<unk>cat"  # an unseen blank


def test_glue_is_picked_to_save_gap_tokens():
    from charrnn.tokenizers.words import _solve_glue

    counts = {  # (before, after, parted by a space) -> n; None is a word
        (None, ",", False): 90, (None, ",", True): 10, (",", None, True): 80,
        ("(", None, False): 30, (None, "(", True): 30, ("@", "-", False): 20,
        ("-", "@", False): 20, (None, "@", True): 40, ("@", None, True): 40,
    }  # fmt: skip
    left, right = _solve_glue(Counter(counts))
    assert "," in left and "," not in right and "(" in right and "(" not in left
    assert "-" in left and "-" in right and "@" not in left | right


@pytest.mark.parametrize("split, version", [("space", 3), ("punct", 2)])
def test_word_files_round_trip_and_say_their_version(tmp_path, split, version):
    tok = tokenizers.fit(TokenizerConfig("word", word_split=split), [TEXT, CODE])
    for name, data in tok.files().items():
        (tmp_path / name).write_bytes(data)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    assert data["type"] == "word" and data["version"] == version  # punct: as charrnn wrote
    assert data.get("split", "punct") == split
    loaded = tokenizers.load(tmp_path)
    assert isinstance(loaded, WordTokenizer) and loaded.files() == tok.files()
    assert loaded.split == split and loaded.encode(CODE).tolist() == tok.encode(CODE).tolist()
    (tmp_path / "tokenizer.json").write_text(json.dumps({**data, "version": 4}))
    with pytest.raises(ValueError, match="version 4"):
        tokenizers.load(tmp_path)


def test_a_legacy_word_run_loads_as_the_legacy_tokenizer_and_encodes_as_before():
    tok = tokenizers.load(FIXTURE)
    assert isinstance(tok, LegacyWordTokenizer) and tok.tokenizer == "word"
    assert tok.files()["tokenizer.json"] == (FIXTURE / "tokenizer.json").read_bytes()
    ids = tok.encode(TEXT)
    assert len(ids) == 732  # what charrnn 0.1.0 scored this text with (word-gru.eval.json)
    assert [tok.tokens[i] for i in ids[:4].tolist()] == ["First", " ", "Citizen", ":"]
    assert tok.decode(ids) == TEXT and tok.count_chars(ids) == len(TEXT)
    assert tok.decode(tok.encode("Speak, zebra", "skip")) == "Speak, "
    run = charrnn.load(FIXTURE)
    model, loaded = run.model, run.tokenizer
    assert isinstance(loaded, LegacyWordTokenizer) and model.config.vocab_size == tok.vocab_size


def test_legacy_word_tokens_keep_newlines_and_indentation():
    tok = LegacyWordTokenizer.fit([CODE], 10_000)
    ids = tok.encode(CODE)
    assert tok.decode(ids) == CODE
    pieces = [tok.decode([i]) for i in ids.tolist()]
    assert pieces[:8] == ["def", " ", "f", "(", "x", ")", ":", "\n"]
    assert "        " in pieces and "\t" in pieces and "\r" in pieces  # runs of blanks
    assert tok.count_chars(ids) == len(CODE)


@pytest.mark.skipif(not (SHARED / "wikitext-2-valtest").exists(), reason="no WikiText here")
def test_wikitext_has_about_as_many_tokens_as_words_and_lines():
    text = (SHARED / "wikitext-2-valtest" / "test.txt").read_text(encoding="utf-8")
    ids = WordTokenizer.fit([text], 10_000).encode(text, "unk")  # 10,000 words kept
    words = sum(len(line.split()) + 1 for line in text.splitlines())
    assert words <= len(ids) <= 1.05 * words


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_sentencepiece_round_trips_any_text_exactly(kind, tmp_path):
    import sentencepiece

    tok = tokenizers.fit(TokenizerConfig(kind, vocab_size=400), [TEXT, CODE])
    assert tok.unknown(UNICODE) == ["\ud800"]  # a lone surrogate has no UTF-8 bytes
    for text in (TEXT, CODE, UNICODE[:-1], "  leading\n\n\ntrailing  \n", "a\u2581b \u2581"):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.count_chars(ids) == len(text)  # bytes of one character count once
    # the saved model is sentencepiece's own: its processor reads it and agrees with ours
    for name, data in tok.files().items():
        (tmp_path / name).write_bytes(data)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    for text in (CODE, TEXT):  # encode() cuts the text at newlines: the ids are the same
        assert sp.encode(text) == tok.encode(text).tolist()
    assert sp.decode(sp.encode(TEXT)) == TEXT
    again = tokenizers.load(tmp_path)
    assert again.tokenizer == kind and again.encode(TEXT).tolist() == tok.encode(TEXT).tolist()


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_count_chars_is_the_length_of_the_decoded_text_plus_one_per_eos(kind):
    tok = tokenizers.fit(TokenizerConfig(kind), [TEXT])
    ids = np.concatenate([[tok.eos_id], tok.encode(TEXT), [tok.eos_id], tok.encode("All:")])
    assert tok.count_chars(ids) == len(TEXT) + len("All:") + 2


def test_tokenizer_config_refuses_bad_values():
    with pytest.raises(ValueError, match="--tokenizer 'words': choose one of char, word"):
        TokenizerConfig("words")
    with pytest.raises(ValueError, match="not char"):
        TokenizerConfig("char", vocab_size=100)
    with pytest.raises(ValueError, match="--min-count must be at least 1"):
        TokenizerConfig("word", min_count=0)
    assert isinstance(tokenizers.fit(TokenizerConfig("word"), ["x"]), WordTokenizer)


def test_sentencepiece_fits_the_same_model_in_every_process_on_a_sample_of_the_lines():
    # past SP_SENTENCES lines the tokenizer is trained on a sample of them: the same one in
    # every process (sentencepiece's own sampling was not), so the same text gives the
    # same tokenizer
    script = (
        "import hashlib; from charrnn.tokenizers import subwords as t; t.SP_SENTENCES = 200\n"
        "lines = [f'{i} {w} and {w * 2}\\n' for i in range(3000) for w in ['ab', 'cd'][i % 2:]]\n"
        "tok = t.SentencePieceTokenizer.fit(lines, 'bpe', 400)\n"
        "print(hashlib.sha256(tok.model).hexdigest())"
    )
    run = [sys.executable, "-c", script]
    digests = {subprocess.run(run, check=True, capture_output=True, text=True).stdout
               for _ in range(3)}  # fmt: skip
    assert len(digests) == 1, digests


def test_sample_lines_keeps_all_or_a_uniform_sample():
    assert subwords.sample_lines(iter("abc"), 5) == ["a", "b", "c"]
    sample = subwords.sample_lines(map(str, range(10_000)), 1000)
    assert len(set(sample)) == 1000 and sample == subwords.sample_lines(
        map(str, range(10_000)), 1000
    )
    assert 3500 < np.mean([int(x) for x in sample]) < 6500  # from the whole text, not its start


# words as pytorch/examples word_language_model counts them ------------------------------

LINES = "First Citizen:\nSpeak, speak.\n\nAll"  # 3 + 3 + 1 + 2: each line's words and its end


def five_tokenizers():
    text = TEXT + CODE + LINES + " All\u3000All\u2028All"
    yield CharTokenizer.fit(text)
    yield tokenizers.fit(TokenizerConfig("word"), [text])
    yield LegacyWordTokenizer.fit([text], 10_000)
    for kind in ("bpe", "unigram"):
        yield tokenizers.fit(TokenizerConfig(kind, vocab_size=400), [text])


@pytest.mark.parametrize("step", [1 << 20, 3, 1])
def test_count_words_is_words_plus_lines_of_the_text_with_eos_as_newline(step, monkeypatch):
    monkeypatch.setattr(tokenizers.base, "SLICE", step)  # a word or a character cut between slices
    for tok in five_tokenizers():
        what = type(tok).__name__ + " " + tok.tokenizer
        assert tok.count_words(tok.encode(LINES)) == 9, what  # a last line without "\n" counts
        assert tok.count_words(tok.encode(LINES + "\n")) == 9, what
        assert tok.count_words(tok.encode("")) == 0, what
        eos = tok.eos_id
        ids = [*tok.encode("First Citizen:"), eos, *tok.encode("Speak, speak."), eos]
        assert tok.count_words(np.array(ids)) == 6, what  # "First Citizen:\nSpeak, speak.\n"
        assert tok.count_words(np.array([eos, *ids])) == 7, what  # an empty line first
        assert tok.count_words(tok.encode("All\u3000All\u2028All")) == 5, what  # 2 lines
        assert tok.count_words(tok.encode(TEXT)) == sum(
            len(line.split()) + 1 for line in TEXT.splitlines()
        )


def test_count_words_reads_a_memory_mapped_corpus_in_slices(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizers.base, "SLICE", 1000)
    tok = tokenizers.fit(TokenizerConfig("word"), [TEXT])
    path = tmp_path / "ids.bin"
    np.tile(tok.encode(TEXT).astype("<u2"), 20).tofile(path)
    ids = np.memmap(path, dtype="<u2", mode="r")
    assert tok.count_words(ids) == 20 * tok.count_words(tok.encode(TEXT))
    assert tok.count_chars(ids) == 20 * len(TEXT)


@pytest.mark.parametrize(
    "text, words",
    [("", 0), ("\n", 1), ("a", 2), ("a\nb", 4), ("a\nb\n", 4), ("a \n\n b c ", 6),
     ("a\r\nb\rc", 6), ("  \t ", 1), ("x\x0cy\x85z", 6)],
)  # fmt: skip
def test_text_words_is_pytorch_examples_count(text, words):
    assert tokenizers.text_words([text]) == words
    assert sum(len(line.split()) + 1 for line in text.splitlines()) == words
    assert tokenizers.text_words(text) == words  # one character at a time
