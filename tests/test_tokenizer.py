import subprocess
import sys

import numpy as np
import pytest

from charrnn import tokenizer as tokenizers
from charrnn.tokenizer import CharTokenizer

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

from charrnn.tokenizer import TokenizerConfig, WordTokenizer  # noqa: E402

CODE = "def f(x):\n    return x  + 1\n\n\tif x:\r\n        pass  # done\n"


def test_word_tokens_keep_newlines_and_indentation():
    tok = tokenizers.fit(TokenizerConfig("word"), [CODE])
    ids = tok.encode(CODE)
    assert tok.decode(ids) == CODE
    pieces = [tok.decode([i]) for i in ids.tolist()]
    assert pieces[:8] == ["def", " ", "f", "(", "x", ")", ":", "\n"]
    assert "        " in pieces and "\t" in pieces and "\r" in pieces  # runs of blanks
    assert tok.count_chars(ids) == len(CODE)


def test_word_vocabulary_keeps_the_commonest_and_maps_the_rest_to_unk():
    text = "a a a b b c <unk> d"
    tok = tokenizers.fit(TokenizerConfig("word", vocab_size=5), [text])
    assert tok.tokens == ["<eos>", "<unk>", " ", "a", "b"]  # 2 specials + the 3 commonest
    assert tok.decode(tok.encode("a c b", "unk")) == "a <unk> b"
    assert tok.encode("<unk>").tolist() == [tok.unk_id]  # WikiText's own <unk> is ours
    rare = tokenizers.fit(TokenizerConfig("word", min_count=2), [text])
    assert rare.unknown("a c d") == ["c", "d"]


def test_word_unknowns_error_skip_or_unk():
    tok = tokenizers.fit(TokenizerConfig("word"), ["the cat sat"])
    with pytest.raises(ValueError, match="'dog'"):
        tok.encode("the dog sat")
    assert tok.decode(tok.encode("the dog sat", "skip")) == "the  sat"
    assert tok.decode(tok.encode("the dog sat", "unk")) == "the <unk> sat"


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_sentencepiece_round_trips_any_text_exactly(kind, tmp_path):
    import sentencepiece

    from .conftest import TEXT

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
    assert again.kind == kind and again.encode(TEXT).tolist() == tok.encode(TEXT).tolist()


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_count_chars_is_the_length_of_the_decoded_text_plus_one_per_eos(kind):
    from .conftest import TEXT

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
        "import hashlib; from charrnn import tokenizer as t; t.SP_SENTENCES = 200\n"
        "lines = [f'{i} {w} and {w * 2}\\n' for i in range(3000) for w in ['ab', 'cd'][i % 2:]]\n"
        "tok = t.fit(t.TokenizerConfig('bpe', vocab_size=400), lines)\n"
        "print(hashlib.sha256(tok.model).hexdigest())"
    )
    run = [sys.executable, "-c", script]
    digests = {subprocess.run(run, check=True, capture_output=True, text=True).stdout
               for _ in range(3)}  # fmt: skip
    assert len(digests) == 1, digests


def test_sample_lines_keeps_all_or_a_uniform_sample():
    assert tokenizers.sample_lines(iter("abc"), 5) == ["a", "b", "c"]
    sample = tokenizers.sample_lines(map(str, range(10_000)), 1000)
    assert len(set(sample)) == 1000 and sample == tokenizers.sample_lines(
        map(str, range(10_000)), 1000
    )
    assert 3500 < np.mean([int(x) for x in sample]) < 6500  # from the whole text, not its start
