"""Text <-> token ids. Nothing here knows about tensors or models.

A tokenizer is fitted on a corpus, saved into the run directory beside the model that
uses it (the model owns its vocabulary), and loaded back from there. Ids come out as
NumPy arrays so a corpus of millions of characters is encoded without Python lists.
Fitting reads the corpus as an iterable of text chunks, so no corpus has to fit in
memory at once.

Three kinds, all exact on the text they can represent, and all with id 0 = `<eos>`, the
end-of-sequence token that separates documents and ends a sample:

- CharTokenizer: one token per Unicode code point, no normalisation.
- word: words and punctuation, the `vocab_size` commonest (seen at least `min_count`
  times) kept, the rest `<unk>` (id 1). charrnn.words owns both formats: WordTokenizer,
  where a single space between two tokens costs no token, and LegacyWordTokenizer (runs
  written before it), where every run of whitespace is a token.
- SentencePieceTokenizer (`bpe` | `unigram`): trained in-process by sentencepiece with an
  identity normalisation and byte fallback, so every text round-trips; the model file is
  saved as tokenizer.model and works with sentencepiece's own tools.

Two counts make models of different tokenizers comparable, each with `<eos>` standing
where the text had a boundary (a newline, or the end of a document):

- `count_chars(ids)`: the characters the ids decode to, one for each `<eos>`; bits per
  character are computed from it.
- `count_words(ids)`: the words as pytorch/examples word_language_model counts them,
  `sum(len(line.split()) + 1 for line in text.splitlines())` of the text the ids decode to
  with each `<eos>` read as "\n" (see `text_words`); per-word perplexity is computed from it.

Both read the ids in slices, so a memory-mapped corpus is never decoded whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from charrnn import settings
from charrnn.errors import CharrnnError, ConfigError
from charrnn.settings import at_least, option, setting

EOS = "<eos>"
UNK = "<unk>"
TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"
KINDS = ("char", "word", "bpe", "unigram")
ON_UNKNOWN = option(
    "on_unknown", str, "error", "Symbols the model never saw: error, skip them, or unk.",
    choices=("error", "skip", "unk"),
)  # fmt: skip
WORD_VERSION = 2  # the format of charrnn.words.WordTokenizer (1: LegacyWordTokenizer)


@dataclass(frozen=True)
class TokenizerConfig:
    tokenizer: str = setting("char", "What a token is (see Tokens in the README).", choices=KINDS)
    vocab_size: int | None = setting(
        None, "Tokens kept, <eos> and <unk> included.",
        by={"word": 10_000, "bpe": 2_000, "unigram": 2_000}, check=at_least(3),
    )  # fmt: skip
    min_count: int = setting(1, "word: a word seen fewer times is <unk>.", check=at_least(1))

    def __post_init__(self):
        settings.validate(self)
        if self.tokenizer == "char" and self.vocab_size is not None:
            raise ConfigError("--vocab-size is for word, bpe and unigram tokenizers, not char")

    def to_dict(self) -> dict:
        return settings.to_json(self)


class UnknownSymbols(CharrnnError):
    """A text has symbols a tokenizer has no token for (and was asked not to drop them)."""


def unknown_note(
    tok: Tokenizer, text: str, on_unknown: str, where: str = "the text", empty_ok: bool = False
) -> str | None:
    """What --on-unknown does to a text about to be read (`where` names it): UnknownSymbols
    naming the symbols the model never saw (error), or a note of how many are left out
    (skip) or read as <unk> (unk); None when every symbol is known. Unless `empty_ok`, a
    text of nothing but unknown symbols is refused."""
    if on_unknown == "unk" and tok.unk_id is None:
        raise UnknownSymbols(f"--on-unknown unk: a {tok.kind} model has no <unk>; use skip")
    unknown = tok.unknown(text)
    if not unknown:
        return None
    what = "words" if tok.kind == "word" else "characters"
    shown = " ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
    if on_unknown == "error":
        unk = ", unk maps them to <unk>" if tok.unk_id is not None else ""
        raise UnknownSymbols(f"{where} has {what} the model has never seen: {shown} "
                             f"(--on-unknown skip drops them{unk})")  # fmt: skip
    if not empty_ok and len(tok.encode(text, on_unknown)) == 0:
        raise UnknownSymbols(f"{where} has only {what} the model has never seen: {shown}")
    count = _unknown_count(tok, text)
    unseen = f"{what if count > 1 else what[:-1]} the model has never seen"  # 1 word
    if on_unknown == "skip":
        return f"note: skipped {count:,} {unseen}: {shown}"
    return f"note: read {count:,} {unseen} as <unk>: {shown}"


def _unknown_count(tok: Tokenizer, text: str) -> int:
    """How many symbols of `text` are unknown, each occurrence counted."""
    if tok.unk_id is not None:  # a word model: what <unk> would stand for, skip leaves out
        unks = [int((tok.encode(text, how) == tok.unk_id).sum()) for how in ("unk", "skip")]
        return unks[0] - unks[1]  # a literal <unk> in the text is known, and kept by skip
    return sum(text.count(c) for c in tok.unknown(text))  # char, bpe: single code points


def default_vocab(config: TokenizerConfig) -> int:
    """--vocab-size, or else the default for this tokenizer."""
    return config.vocab_size or settings.default_of(
        TokenizerConfig, "vocab_size", [config.tokenizer]
    )


class Tokenizer(Protocol):
    """What the rest of charrnn needs from a tokenizer."""

    kind: str
    vocab_size: int
    eos_id: int
    unk_id: int | None  # None: every text can be encoded, or none may be unknown

    # unknown = "error" raises UnknownSymbols naming the unknown symbols, "skip" drops them,
    # "unk" maps them to <unk> (where the tokenizer has one).
    def encode(self, text: str, unknown: str = "error") -> np.ndarray: ...  # [N] int32
    def decode(self, ids) -> str: ...
    def unknown(self, text: str) -> list[str]: ...  # symbols of `text` not in the vocabulary
    def count_chars(self, ids) -> int: ...  # characters the ids decode to (for bits/char)
    def count_words(self, ids) -> int: ...  # words + lines of that text (for per-word ppl)
    def files(self) -> dict[str, bytes]: ...  # file name -> content, saved in the run directory


def _code_points(text: str) -> np.ndarray:
    # UTF-32 is one 4-byte unit per code point; surrogatepass keeps lone surrogates
    # (legal in a Python str) as themselves instead of failing.
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")


def _from_points(points: np.ndarray) -> list[str]:
    return list(points.astype("<u4").tobytes().decode("utf-32-le", errors="surrogatepass"))


def _sum_lengths(lengths: np.ndarray, ids) -> int:
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


def _refuse_unknown(unknown: list[str]) -> None:
    shown = " ".join(repr(s) for s in unknown[:20])
    more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
    raise UnknownSymbols(f"text has symbols not in the vocabulary: {shown}{more}")


class CharTokenizer:
    """One token per Unicode code point; id 0 is `<eos>`, then the symbols in code-point order."""

    kind = "char"
    unk_id = None

    def __init__(self, symbols: list[str]):
        if any(len(s) != 1 for s in symbols) or len(set(symbols)) != len(symbols):
            raise ValueError("a char vocabulary holds distinct single characters")
        self.symbols = sorted(symbols)
        self._points = _code_points("".join(self.symbols))  # sorted, for searchsorted
        self._lines = np.concatenate([_code_points("\n"), self._points])  # <eos> read as "\n"
        self.eos_id = 0
        self.vocab_size = len(self.symbols) + 1

    @classmethod
    def fit(cls, chunks: Iterable[str]) -> CharTokenizer:
        points = np.zeros(0, dtype="<u4")
        for chunk in [chunks] if isinstance(chunks, str) else chunks:
            points = np.union1d(points, _code_points(chunk))
        return cls(_from_points(points))

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        points = _code_points(text)
        index = np.searchsorted(self._points, points)
        index = np.minimum(index, len(self._points) - 1)
        known = self._points[index] == points
        if not known.all():
            if unknown == "error":
                _refuse_unknown(self.unknown(text))
            if unknown == "unk":
                raise UnknownSymbols("a char model has no <unk>; use --on-unknown skip or error")
            index = index[known]
        return (index + 1).astype(np.int32)

    def decode(self, ids) -> str:
        # <eos> decodes to nothing: it marks a boundary, it is not text.
        return "".join(self.symbols[i - 1] for i in np.asarray(ids).tolist() if i != self.eos_id)

    def unknown(self, text: str) -> list[str]:
        points = np.unique(_code_points(text))
        return _from_points(points[~np.isin(points, self._points)])

    def count_chars(self, ids) -> int:
        return int(np.asarray(ids).size)  # every token is one character, <eos> included

    def count_words(self, ids) -> int:
        points = (self._lines[part] for part, _ in slices(ids))
        return text_words(p.tobytes().decode("utf-32-le", errors="surrogatepass") for p in points)

    def files(self) -> dict[str, bytes]:
        data = {"type": self.kind, "specials": [EOS], "symbols": self.symbols}
        return {TOKENIZER_FILE: json.dumps(data, ensure_ascii=True).encode("ascii")}


def fit_version(config: TokenizerConfig) -> int | None:
    """The format a fit of this config writes, where formats have changed (word: 2), so
    that a cached fit of an older format is never taken for a new run."""
    return WORD_VERSION if config.tokenizer == "word" else None


def fit(config: TokenizerConfig, chunks: Iterable[str]) -> Tokenizer:
    """A new tokenizer fitted on the text of `chunks` (read once)."""
    if config.tokenizer == "char":
        return CharTokenizer.fit(chunks)
    if config.tokenizer == "word":
        from charrnn.words import WordTokenizer

        return WordTokenizer.fit(chunks, default_vocab(config), config.min_count)
    from charrnn.subwords import SentencePieceTokenizer

    return SentencePieceTokenizer.fit(chunks, config)


def from_files(files: dict[str, bytes]) -> Tokenizer:
    """The tokenizer that `files()` wrote. Raises ValueError on anything else."""
    data = json.loads(files[TOKENIZER_FILE].decode("ascii"))
    kind = data["type"]
    if kind == "char" and data["specials"] == [EOS]:
        return CharTokenizer(data["symbols"])
    if kind == "word":
        from charrnn import words

        return words.from_data(data)
    if kind in ("bpe", "unigram") and data["model"] == SENTENCEPIECE_FILE:
        from charrnn.subwords import SentencePieceTokenizer

        return SentencePieceTokenizer(kind, files[SENTENCEPIECE_FILE])
    raise ValueError(f"unknown tokenizer type {kind!r}")


def load(run_dir: Path) -> Tokenizer:
    """The tokenizer saved in a directory. Raises ValueError naming the file if it is bad."""
    path = Path(run_dir) / TOKENIZER_FILE
    try:
        files = {TOKENIZER_FILE: path.read_bytes()}
        if "model" in json.loads(files[TOKENIZER_FILE]):
            path = Path(run_dir) / SENTENCEPIECE_FILE
            files[SENTENCEPIECE_FILE] = path.read_bytes()
        return from_files(files)
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; this run directory has no tokenizer") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RuntimeError) as e:
        raise ValueError(f"{path}: not a valid tokenizer file ({e})") from None
