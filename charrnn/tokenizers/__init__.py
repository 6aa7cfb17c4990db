"""Text <-> token ids: the --tokenizer settings, fitting, saving and loading a tokenizer,
and what --on-unknown does to a text. Nothing here knows about tensors or models.

A tokenizer is fitted on a corpus, saved into the run directory beside the model that
uses it (the model owns its vocabulary), and loaded back from there. Ids come out as
NumPy arrays so a corpus of millions of characters is encoded without Python lists.
Fitting reads the corpus as an iterable of text chunks, so no corpus has to fit in
memory at once.

Four kinds (`--tokenizer`), all exact on the text they can represent, all with id 0 =
`<eos>` (base.py: the specials, the interface, the counts of characters and words):

    char           chars.CharTokenizer: one token per Unicode code point
    word           words.WordTokenizer: words and punctuation, the `vocab_size` commonest
                   (seen at least `min_count` times) kept, the rest `<unk>` (id 1); runs
                   written before it load words.LegacyWordTokenizer
    bpe, unigram   subwords.SentencePieceTokenizer: trained in-process by sentencepiece,
                   identity normalisation and byte fallback; saved as tokenizer.model
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from charrnn import settings
from charrnn.errors import ConfigError
from charrnn.settings import at_least, option, setting
from charrnn.tokenizers import words
from charrnn.tokenizers.base import (
    EOS,
    SENTENCEPIECE_FILE,
    TOKENIZER_FILE,
    UNK,
    Tokenizer,
    UnknownSymbols,
    no_unk,
    shown,
    text_words,
    unknown_symbols,
    what_unknown,
)
from charrnn.tokenizers.chars import CharTokenizer
from charrnn.tokenizers.subwords import SentencePieceTokenizer

KINDS = ("char", "word", "bpe", "unigram")
# Its default depends on the model read, so a command resolves it once the run is loaded.
ON_UNKNOWN = option(
    "on_unknown", str, "error", "Symbols the model never saw: error, skip them, or unk "
    "(read them as <unk>).", choices=("error", "skip", "unk"), by={"word": "unk"},
)  # fmt: skip


@dataclass(frozen=True)
class TokenizerConfig:
    tokenizer: str = setting("char", "What a token is (see docs/tokens.md).", choices=KINDS)
    vocab_size: int | None = setting(
        None, "Tokens kept, <eos> and <unk> included.",
        by={"word": 10_000, "bpe": 2_000, "unigram": 2_000}, check=at_least(3),
    )  # fmt: skip
    min_count: int = setting(1, "word: a word seen fewer times is <unk>.", check=at_least(1))
    # Whole words (punctuation attached) made the zoo's word models better than words and
    # marks apart where the text glues its punctuation (fortunes, tiny-shakespeare), and
    # as good on WikiText-2, which spaces it already (bench/RESULTS.md, "Word split").
    word_split: str | None = setting(
        None, "word: a token is all between two blanks (\"end.\", \"don't\"), or "
        "punct: words and punctuation marks apart.", by={"word": "space"}, choices=words.SPLITS,
    )  # fmt: skip

    def __post_init__(self):
        settings.validate(self)
        if self.tokenizer == "char" and self.vocab_size is not None:
            raise ConfigError("--vocab-size is for word, bpe and unigram tokenizers, not char")
        if self.tokenizer != "word" and self.word_split is not None:
            raise ConfigError(f"--word-split is for the word tokenizer, not {self.tokenizer}")

    def to_dict(self) -> dict:
        return settings.to_json(self)


def on_unknown_or_default(tok: Tokenizer, on_unknown: str | None) -> str:
    """--on-unknown, or else (None) its default for this model: unk for a word model (it
    reads rare words so), error for the others."""
    if on_unknown is None:
        return ON_UNKNOWN.default_in([tok.tokenizer])
    if on_unknown == "unk" and tok.unk_id is None:
        raise no_unk(tok.tokenizer)
    return on_unknown


def unknown_note(
    tok: Tokenizer, text: str, on_unknown: str, where: str = "the text", empty_ok: bool = False
) -> str | None:
    """What --on-unknown does to a text about to be read (`where` names it): UnknownSymbols
    naming the symbols the model never saw (error), or a note of how many are left out
    (skip) or read as <unk> (unk); None when every symbol is known. Unless `empty_ok`, a
    text of nothing but unknown symbols is refused."""
    on_unknown = on_unknown_or_default(tok, on_unknown)
    unknown = tok.unknown(text)
    if not unknown:
        return None
    if on_unknown == "error":
        unknown_symbols(tok, unknown, where)
    what = what_unknown(tok.tokenizer)
    if not empty_ok and len(tok.encode(text, on_unknown)) == 0:
        raise UnknownSymbols(f"{where} has only {what} the model has never seen: {shown(unknown)}")
    count = _unknown_count(tok, text)
    unseen = f"{what if count > 1 else what[:-1]} the model has never seen"  # 1 word
    if on_unknown == "skip":
        return f"note: skipped {count:,} {unseen}: {shown(unknown)}"
    return f"note: read {count:,} {unseen} as <unk>: {shown(unknown)}"


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


def word_split(config: TokenizerConfig) -> str:
    """--word-split, or else the word tokenizer's default."""
    return config.word_split or settings.default_of(TokenizerConfig, "word_split", ["word"])


def fit_version(config: TokenizerConfig) -> int | None:
    """The format a fit of this config writes, where formats have changed (word: 3), so
    that a cached fit of an older format is never taken for a new run."""
    return words.VERSION if config.tokenizer == "word" else None


def fit(config: TokenizerConfig, chunks: Iterable[str]) -> Tokenizer:
    """A new tokenizer fitted on the text of `chunks` (read once)."""
    if config.tokenizer == "char":
        return CharTokenizer.fit(chunks)
    if config.tokenizer == "word":
        return words.WordTokenizer.fit(
            chunks, default_vocab(config), config.min_count, word_split(config)
        )
    return SentencePieceTokenizer.fit(chunks, config.tokenizer, default_vocab(config))


def from_files(files: dict[str, bytes]) -> Tokenizer:
    """The tokenizer that `files()` wrote. Raises ValueError on anything else."""
    data = json.loads(files[TOKENIZER_FILE].decode("ascii"))
    kind = data["type"]  # the file's key for the --tokenizer it was made by
    if kind == "char" and data["specials"] == [EOS]:
        return CharTokenizer(data["symbols"])
    if kind == "word":
        return words.from_data(data)
    if kind in ("bpe", "unigram") and data["model"] == SENTENCEPIECE_FILE:
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


__all__ = [
    "EOS", "KINDS", "ON_UNKNOWN", "UNK", "CharTokenizer", "SentencePieceTokenizer", "Tokenizer",
    "TokenizerConfig", "UnknownSymbols", "default_vocab", "fit", "from_files", "load",
    "on_unknown_or_default", "text_words", "unknown_note",
]  # fmt: skip
