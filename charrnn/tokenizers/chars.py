"""CharTokenizer (`--tokenizer char`): one token per Unicode code point, no normalisation."""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from charrnn.tokenizers.base import (
    EOS,
    TOKENIZER_FILE,
    code_points,
    from_points,
    no_unk,
    slices,
    text_words,
    unknown_symbols,
)


class CharTokenizer:
    """One token per Unicode code point; id 0 is `<eos>`, then the symbols in the order given.

    A fitted vocabulary is in code-point order; a grown one (`grown`, for --init-from) keeps
    the ids it had and appends the new symbols after them, so ids are in the order of
    `symbols`, and a text is encoded by a search through a sorted index of them.
    """

    tokenizer = "char"
    unk_id = None

    def __init__(self, symbols: list[str]):
        if any(len(s) != 1 for s in symbols) or len(set(symbols)) != len(symbols):
            raise ValueError("a char vocabulary holds distinct single characters")
        self.symbols = list(symbols)
        points = code_points("".join(self.symbols))  # [V - 1], in id order
        order = np.argsort(points, kind="stable")
        self._sorted = points[order]  # for searchsorted
        self._ids = (order + 1).astype(np.int32)  # the id of each sorted point
        self._lines = np.concatenate([code_points("\n"), points])  # <eos> read as "\n"
        self.eos_id = 0
        self.vocab_size = len(self.symbols) + 1

    @classmethod
    def fit(cls, chunks: Iterable[str]) -> CharTokenizer:
        return cls(from_points(_points_of(chunks)))

    def grown(self, chunks: Iterable[str]) -> CharTokenizer:
        """This vocabulary, its ids kept, and the characters of `chunks` it lacks after
        them, in code-point order."""
        points = _points_of(chunks)
        return CharTokenizer([*self.symbols, *from_points(points[~np.isin(points, self._sorted)])])

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        points = code_points(text)
        index = np.searchsorted(self._sorted, points)
        index = np.minimum(index, len(self._sorted) - 1)
        known = self._sorted[index] == points
        if not known.all():
            if unknown == "error":
                unknown_symbols(self, self.unknown(text))
            if unknown == "unk":
                raise no_unk(self.tokenizer)
            index = index[known]
        return self._ids[index]

    def decode(self, ids) -> str:
        # <eos> decodes to nothing: it marks a boundary, it is not text.
        return "".join(self.symbols[i - 1] for i in np.asarray(ids).tolist() if i != self.eos_id)

    def token_text(self, i: int) -> str:
        return EOS if i == self.eos_id else self.symbols[i - 1]

    def unknown(self, text: str) -> list[str]:
        points = np.unique(code_points(text))
        return from_points(points[~np.isin(points, self._sorted)])

    def count_chars(self, ids) -> int:
        return int(np.asarray(ids).size)  # every token is one character, <eos> included

    def count_words(self, ids) -> int:
        points = (self._lines[part] for part, _ in slices(ids))
        return text_words(p.tobytes().decode("utf-32-le", errors="surrogatepass") for p in points)

    def files(self) -> dict[str, bytes]:
        data = {"type": self.tokenizer, "specials": [EOS], "symbols": self.symbols}
        return {TOKENIZER_FILE: json.dumps(data, ensure_ascii=True).encode("ascii")}


def _points_of(chunks: Iterable[str]) -> np.ndarray:
    """The distinct code points of the text of `chunks`, sorted."""
    points = np.zeros(0, dtype="<u4")
    for chunk in [chunks] if isinstance(chunks, str) else chunks:
        points = np.union1d(points, code_points(chunk))
    return points
