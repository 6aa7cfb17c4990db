"""Text <-> token ids. Nothing here knows about tensors or models.

A tokenizer is fitted on a corpus, saved into the run directory beside the model that
uses it (the model owns its vocabulary), and loaded back from there. Ids come out as
NumPy arrays so a corpus of millions of characters is encoded without Python lists.

CharTokenizer is exact: one token per Unicode code point, no normalisation, so
decode(encode(s)) == s for any text made of known characters. Id 0 is `<eos>`, the
end-of-sequence token that separates documents and ends a sample.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

EOS = "<eos>"
TOKENIZER_FILE = "tokenizer.json"


class Tokenizer(Protocol):
    """What the rest of charrnn needs from a tokenizer."""

    kind: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> np.ndarray: ...  # [N] int32
    def decode(self, ids) -> str: ...
    def unknown(self, text: str) -> list[str]: ...  # symbols of `text` not in the vocabulary
    def count_chars(self, ids) -> int: ...  # characters the ids decode to (for bits/char)
    def files(self) -> dict[str, bytes]: ...  # file name -> content, saved in the run directory


def _code_points(text: str) -> np.ndarray:
    # UTF-32 is one 4-byte unit per code point; surrogatepass keeps lone surrogates
    # (legal in a Python str) as themselves instead of failing.
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")


class CharTokenizer:
    """One token per Unicode code point; id 0 is `<eos>`, then the symbols in code-point order."""

    kind = "char"

    def __init__(self, symbols: list[str]):
        if any(len(s) != 1 for s in symbols) or len(set(symbols)) != len(symbols):
            raise ValueError("a char vocabulary holds distinct single characters")
        self.symbols = sorted(symbols)
        self._points = _code_points("".join(self.symbols))  # sorted, for searchsorted
        self.eos_id = 0
        self.vocab_size = len(self.symbols) + 1

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        points = np.unique(_code_points(text))
        return cls(_from_points(points))

    def encode(self, text: str) -> np.ndarray:
        points = _code_points(text)
        index = np.searchsorted(self._points, points)
        index = np.minimum(index, len(self._points) - 1)
        if not np.array_equal(self._points[index], points):
            raise ValueError(f"text has symbols not in the vocabulary: {self.unknown(text)}")
        return (index + 1).astype(np.int32)

    def decode(self, ids) -> str:
        # <eos> decodes to nothing: it marks a boundary, it is not text.
        return "".join(self.symbols[i - 1] for i in np.asarray(ids).tolist() if i != self.eos_id)

    def unknown(self, text: str) -> list[str]:
        points = np.unique(_code_points(text))
        return _from_points(points[~np.isin(points, self._points)])

    def count_chars(self, ids) -> int:
        # Every token is one character; <eos> stands where the text had a boundary
        # (a newline, a file break), so it counts as one too.
        return int(np.asarray(ids).size)

    def files(self) -> dict[str, bytes]:
        data = {"type": self.kind, "specials": [EOS], "symbols": self.symbols}
        return {TOKENIZER_FILE: json.dumps(data, ensure_ascii=True).encode("ascii")}


def _from_points(points: np.ndarray) -> list[str]:
    return list(points.astype("<u4").tobytes().decode("utf-32-le", errors="surrogatepass"))


def fit(kind: str, text: str) -> Tokenizer:
    """A new tokenizer of `kind` fitted on `text`."""
    if kind == "char":
        return CharTokenizer.fit(text)
    raise ValueError(f"unknown tokenizer {kind!r}; choose char")


def load(run_dir: Path) -> Tokenizer:
    """The tokenizer saved in a run directory. Raises ValueError naming the file if it is bad."""
    path = Path(run_dir) / TOKENIZER_FILE
    try:
        data = json.loads(path.read_text(encoding="ascii"))
        if data["type"] == "char" and data["specials"] == [EOS]:
            return CharTokenizer(data["symbols"])
        raise ValueError(f"unknown tokenizer type {data.get('type')!r}")
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; this run directory has no tokenizer") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid tokenizer file ({e})") from None
