"""Subword tokenizers: BPE or unigram pieces, trained in-process by sentencepiece.

SentencePieceTokenizer (`--tokenizer bpe | unigram`) uses an identity normalisation, keeps
newlines as a piece of their own and falls back to bytes, so every text round-trips; its
model is saved as tokenizer.model and works with sentencepiece's own tools. Past
SP_SENTENCES lines, it is trained on a sample of the text drawn with a fixed seed
(sample_lines): the same text always gives the same tokenizer. The conventions shared by
every tokenizer (<eos> is id 0, counting characters and words) are in tokenizers/base.py.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import re
from collections.abc import Iterable

import numpy as np

from charrnn.errors import ConfigError
from charrnn.tokenizers.base import (
    EOS,
    SENTENCEPIECE_FILE,
    TOKENIZER_FILE,
    no_unk,
    slices,
    sum_lengths,
    text_words,
    unknown_symbols,
)

SP_SENTENCES = 2_000_000  # sentencepiece trains on at most this many lines of the text
SURROGATE = re.compile("[\ud800-\udfff]")  # lone surrogates: legal in a str, not in UTF-8
SPACE = "\u2581"  # sentencepiece's stand-in for " "; a literal one is encoded as its bytes
SEGMENT = re.compile(f"(\n|{SPACE})")  # where SentencePieceTokenizer.encode cuts the text


class SentencePieceTokenizer:
    """BPE or unigram subwords by sentencepiece, with an identity normalisation, newlines
    kept as their own piece, and byte fallback: decode(encode(s)) == s for any text."""

    eos_id, unk_id = 0, None  # byte fallback: nothing is unknown but lone surrogates

    def __init__(self, tokenizer: str, model: bytes):
        import sentencepiece

        self.tokenizer, self.model = tokenizer, model
        self.sp = sentencepiece.SentencePieceProcessor(model_proto=model)
        self.vocab_size = self.sp.get_piece_size()
        if self.sp.eos_id() != 0 or self.sp.piece_to_id("<0x00>") == self.sp.unk_id():
            raise ValueError("not a charrnn sentencepiece model (<eos> is not id 0, or no bytes)")
        self._cut_ids = {  # see encode()
            "\n": [self.sp.piece_to_id("\n")],
            SPACE: [self.sp.piece_to_id(f"<0x{b:02X}>") for b in SPACE.encode()],
        }
        self._lengths = np.array([self._piece_chars(i) for i in range(self.vocab_size)])
        self._continues = np.array([self._continues_char(i) for i in range(self.vocab_size)])

    def _continues_char(self, i: int) -> bool:  # a UTF-8 continuation byte
        return self.sp.is_byte(i) and 0x80 <= int(self.sp.id_to_piece(i)[3:5], 16) < 0xC0

    def _piece_chars(self, i: int) -> int:
        if i == self.eos_id:
            return 1
        if self.sp.is_byte(i):  # a character is its leading byte; continuation bytes add none
            return int(not self._continues_char(i))
        if self.sp.is_control(i) or self.sp.is_unknown(i):
            return 0
        return len(self.sp.id_to_piece(i))

    @classmethod
    def fit(cls, chunks: Iterable[str], tokenizer: str, vocab_size: int) -> SentencePieceTokenizer:
        import sentencepiece

        lines = (line for chunk in chunks for line in chunk.splitlines(keepends=True))
        out = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(sample_lines(lines, SP_SENTENCES)), model_writer=out,
                model_type=tokenizer, vocab_size=vocab_size,
                hard_vocab_limit=False,  # a small corpus gets a smaller vocabulary
                normalization_rule_name="identity", remove_extra_whitespaces=False,
                add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=False,
                byte_fallback=True, character_coverage=1.0, user_defined_symbols=["\n"],
                eos_id=0, eos_piece=EOS, unk_id=1, bos_id=-1, pad_id=-1,
                max_sentence_length=1 << 16, num_threads=2, minloglevel=2,
            )  # fmt: skip
        except RuntimeError as e:
            # byte fallback takes 256 pieces, and each character of the text must have one
            need = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
            if not need:
                raise
            raise ConfigError(
                f"--vocab-size {need[1]} is too small for a {tokenizer} tokenizer of this "
                f"text: give at least {need[2]} (256 byte pieces, the specials and each "
                "distinct character of the text)"
            ) from None
        return cls(tokenizer, out.getvalue())

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        if SURROGATE.search(text):  # the one thing UTF-8, and so sentencepiece, cannot hold
            if unknown == "error":
                unknown_symbols(self, self.unknown(text))
            if unknown == "unk":
                raise no_unk(self.tokenizer)
            text = SURROGATE.sub("", text)
        # Cut at every newline and literal SPACE, encode the pieces as one batch (on
        # sentencepiece's threads), and put the cuts back: the same ids as one call on
        # the whole text, since "\n" is a piece of its own and SPACE is spelled in bytes
        # here, so no piece spans a cut; and several times faster on a long text.
        parts = SEGMENT.split(text)  # [text, cut, text, cut, ..., text]
        parts[0::2] = self.sp.encode(parts[0::2])
        parts[1::2] = [self._cut_ids[cut] for cut in parts[1::2]]
        return np.fromiter(itertools.chain.from_iterable(parts), dtype=np.int32)

    def decode(self, ids) -> str:
        ids = [i for i in np.asarray(ids).tolist() if i != self.eos_id]
        return self.sp.decode(ids)

    def token_text(self, i: int) -> str:
        if i == self.eos_id or self.sp.is_byte(i):
            return self.sp.id_to_piece(i)  # <eos>, <0xE2>
        return self.sp.decode([i])  # the piece's text, its spaces spelled as spaces

    def unknown(self, text: str) -> list[str]:
        return sorted(set(SURROGATE.findall(text)))

    def count_chars(self, ids) -> int:
        return sum_lengths(self._lengths, ids)

    def count_words(self, ids) -> int:
        return text_words(self._lines(part) for part, _ in slices(ids, self._continues))

    def _lines(self, ids: np.ndarray) -> str:
        """The text of `ids` with each <eos> read as "\n"."""
        documents = np.split(ids, np.flatnonzero(ids == self.eos_id))  # each after the first
        return "\n".join(self.sp.decode([d[d != self.eos_id].tolist() for d in documents]))

    def files(self) -> dict[str, bytes]:
        data = {"type": self.tokenizer, "specials": [EOS], "model": SENTENCEPIECE_FILE}
        return {
            TOKENIZER_FILE: json.dumps(data).encode("ascii"),
            SENTENCEPIECE_FILE: self.model,
        }


def sample_lines(lines: Iterable[str], most: int, seed: int = 0) -> list[str]:
    """All the lines, or past `most` of them a uniform sample of `most` (reservoir
    sampling, Algorithm R) drawn with a fixed seed: the same text always trains the same
    tokenizer. (sentencepiece's own sampling, input_sentence_size, draws a different
    sample in every process, whatever set_random_generator_seed says.)"""
    rng, kept = random.Random(seed), []
    for n, line in enumerate(lines):
        if n < most:
            kept.append(line)
        elif (j := rng.randrange(n + 1)) < most:
            kept[j] = line
    return kept
