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
