"""What every tokenizer shares: the specials, the interface, the unknown-symbol errors, and
the counts of characters and words that make models of different tokens comparable.

Every tokenizer has id 0 = `<eos>`, the end-of-sequence token that separates documents and
ends a sample. Two counts, each with `<eos>` standing where the text had a boundary (a
newline, or the end of a document):

- `count_chars(ids)`: the characters the ids decode to, one for each `<eos>`; bits per
  character are computed from it.
- `count_words(ids)`: the words as pytorch/examples word_language_model counts them,
  `sum(len(line.split()) + 1 for line in text.splitlines())` of the text the ids decode to
  with each `<eos>` read as "\\n" (see `text_words`); per-word perplexity is computed from it.

Both read the ids in slices (`slices`), so a memory-mapped corpus is never decoded whole.
Nothing here knows a particular tokenizer, a tensor or a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NoReturn, Protocol

import numpy as np

from charrnn.errors import CharrnnError

EOS = "<eos>"
UNK = "<unk>"
TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"
SHOWN = 20  # unknown symbols named in a message; the rest are counted


class Tokenizer(Protocol):
    """What the rest of charrnn needs from a tokenizer."""

    tokenizer: str  # what --tokenizer made it: char, word, bpe or unigram
    vocab_size: int
    eos_id: int
    unk_id: int | None  # None: every text can be encoded, or none may be unknown

    # unknown = "error" raises UnknownSymbols naming the unknown symbols, "skip" drops them,
    # "unk" maps them to <unk> (where the tokenizer has one).
    def encode(self, text: str, unknown: str = "error") -> np.ndarray: ...  # [N] int32
    def decode(self, ids) -> str: ...
    def unknown(self, text: str) -> list[str]: ...  # symbols of `text` not in the vocabulary
    def token_text(self, i: int) -> str: ...  # one token as `info` lists it (<eos>, <unk>, ...)
    def count_chars(self, ids) -> int: ...  # characters the ids decode to (for bits/char)
    def count_words(self, ids) -> int: ...  # words + lines of that text (for per-word ppl)
    def files(self) -> dict[str, bytes]: ...  # file name -> content, saved in the run directory


class UnknownSymbols(CharrnnError):
    """A text has symbols a tokenizer has no token for (and was asked not to drop them)."""


def shown(unknown: list[str]) -> str:
    """The unknown symbols as a message names them: the first SHOWN, then how many more."""
    more = f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
    return " ".join(repr(s) for s in unknown[:SHOWN]) + more


def what_unknown(tokenizer: str) -> str:
    """What an unknown symbol of this kind of tokenizer is: words, or characters."""
    return "words" if tokenizer == "word" else "characters"


def unknown_symbols(tok: Tokenizer, unknown: list[str], where: str = "the text") -> NoReturn:
    """The one error for a text with symbols the model never saw (--on-unknown error)."""
    unk = ", unk maps them to <unk>" if tok.unk_id is not None else ""
    raise UnknownSymbols(
        f"{where} has {what_unknown(tok.tokenizer)} the model has never seen: "
        f"{shown(unknown)} (--on-unknown skip drops them{unk})"
    )


def no_unk(tokenizer: str) -> UnknownSymbols:
    """The one error for --on-unknown unk with a model that has no <unk>."""
    return UnknownSymbols(f"--on-unknown unk: a {tokenizer} model has no <unk>; use skip or error")


def code_points(text: str) -> np.ndarray:
    # UTF-32 is one 4-byte unit per code point; surrogatepass keeps lone surrogates
    # (legal in a Python str) as themselves instead of failing.
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")


def from_points(points: np.ndarray) -> list[str]:
    return list(points.astype("<u4").tobytes().decode("utf-32-le", errors="surrogatepass"))


def sum_lengths(lengths: np.ndarray, ids) -> int:
    """sum(lengths[ids]) in slices, so a memory-mapped corpus is never copied whole."""
    ids = np.asarray(ids)
    step = 1 << 22
    return int(sum(lengths[ids[i : i + step]].sum() for i in range(0, ids.size, step)))


SLICE = 1 << 20  # count_chars and count_words read the ids this many at a time
# What str.splitlines() ends a line at ("\r\n" is one end); every one is also whitespace
# to str.split(), so no word spans two lines.
LINE_ENDS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def slices(ids, joined: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """(ids[a:b] as int64, the id before it, <eos> at the start): SLICE ids at a time.
    `joined[id]` True: that token belongs to the one before it (a UTF-8 continuation
    byte), so no slice starts at it."""
    ids = np.asarray(ids)
    start = 0
    while start < ids.size:
        end = min(start + SLICE, ids.size)
        while joined is not None and end < ids.size and joined[ids[end]]:
            end += 1
        yield np.asarray(ids[start:end], dtype=np.int64), int(ids[start - 1]) if start else 0
        start = end


def text_words(pieces: Iterable[str]) -> int:
    r"""`sum(len(line.split()) + 1 for line in text.splitlines())` of the text the pieces
    join into, read piece by piece (a word or a "\r\n" may be cut between two pieces).

    That is pytorch/examples word_language_model's count: each line's words and its
    <eos>. A last line without a newline still counts (as reading a file line by line
    gives it): "a\nb" and "a\nb\n" both have 2 lines and 4 words; an empty text has none.
    Lines end where splitlines() ends them, so "\r", "\f" and "\u2028" end one too.
    """
    words = ends = 0
    in_word = after_cr = open_line = False
    for piece in pieces:
        if not piece:
            continue
        words += len(piece.split()) - (in_word and not piece[0].isspace())
        ends += sum(map(piece.count, LINE_ENDS)) - piece.count("\r\n")
        ends -= after_cr and piece[0] == "\n"  # the second half of a "\r\n" cut in two
        in_word, after_cr = not piece[-1].isspace(), piece[-1] == "\r"
        open_line = piece[-1] not in LINE_ENDS
    return words + ends + open_line
