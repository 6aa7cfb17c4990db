"""Features of a text: the numbers per character that neurons are compared with.

Owns: the built-in features (inside quotes, bracket depth, position in line,
indentation, start of word, inside a comment), a regex as a feature, and feature(), which
picks one by name or pattern and puts it on a trace's tokens. It does not own the
comparison itself (ranking.py) nor the tracing (tracing.py).

Each feature gives one number per character: its value AFTER reading that character,
which is what the state after that step can know.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from charrnn.errors import ConfigError


def _quotes(text: str) -> list[str | None]:
    """The open quote character after each character, or None."""
    quote, escaped, out = None, False, []
    for t, ch in enumerate(text):
        if quote is None:
            apostrophe = ch == "'" and t > 0 and text[t - 1].isalnum()  # don't, it's
            if ch in "\"'" and not apostrophe:
                quote = ch
        elif escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == quote:
            quote = None
        out.append(quote)
    return out


def inside_quotes(text: str) -> np.ndarray:
    """1 from an opening " or ' up to, not including, its closing one (\\" escapes)."""
    return np.array([q is not None for q in _quotes(text)], dtype=float)


def bracket_depth(text: str) -> np.ndarray:
    """How many ( [ { are open: +1 at an opening bracket, -1 at a closing one, never below 0."""
    depth, out = 0, []
    for ch in text:
        depth = depth + 1 if ch in "([{" else max(depth - 1, 0) if ch in ")]}" else depth
        out.append(depth)
    return np.array(out, dtype=float)


def position_in_line(text: str) -> np.ndarray:
    """Characters read since the last newline: 0 at a newline, 1 at a line's first character."""
    pos, out = 0, []
    for ch in text:
        pos = 0 if ch == "\n" else pos + 1
        out.append(pos)
    return np.array(out, dtype=float)


def indentation(text: str) -> np.ndarray:
    """Leading spaces and tabs of the current line, as far as they have been read."""
    indent, leading, out = 0, True, []
    for ch in text:
        if ch == "\n":
            indent, leading = 0, True
        elif leading and ch in " \t":
            indent += 1
        else:
            leading = False
        out.append(indent)
    return np.array(out, dtype=float)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def start_of_word(text: str) -> np.ndarray:
    """1 on a word's first character (a letter, digit or _ after anything else)."""
    return np.array(
        [_is_word(ch) and (t == 0 or not _is_word(text[t - 1])) for t, ch in enumerate(text)],
        dtype=float,
    )


def inside_comment(text: str) -> np.ndarray:
    """1 from a # outside quotes to the end of its line (the newline itself is 0)."""
    quotes, inside, out = _quotes(text), False, []
    for ch, quote in zip(text, quotes):
        if ch == "\n":
            inside = False
        elif ch == "#" and quote is None:
            inside = True
        out.append(inside)
    return np.array(out, dtype=float)


FEATURES: dict[str, Callable[[str], np.ndarray]] = {
    "inside quotes": inside_quotes,
    "bracket depth": bracket_depth,
    "position in line": position_in_line,
    "indentation": indentation,
    "start of word": start_of_word,
    "inside a comment": inside_comment,
}


def regex_feature(text: str, pattern: re.Pattern) -> np.ndarray:
    """1 on every character inside a match of `pattern` (multiline: ^ and $ match at lines)."""
    out = np.zeros(len(text))
    for m in pattern.finditer(text):
        out[m.start() : m.end()] = 1.0
    return out


def feature(spec: str, tokens: Sequence[str]) -> tuple[str, np.ndarray]:
    """(name, value per token [T]) of a built-in feature, or else of `spec` as a regex.

    Features are computed on the characters; a token of several characters takes the
    value after its last one.
    """
    text = "".join(tokens)
    key = re.sub(r"[-_\s]+", " ", spec.strip().lower())
    if key in FEATURES:
        name, per_char = key, FEATURES[key](text)
    else:
        try:
            pattern = re.compile(spec, re.MULTILINE)
        except re.error as e:
            names = ", ".join(FEATURES)
            raise ConfigError(
                f"--find {spec!r} is neither a built-in feature ({names}) nor a regex ({e})"
            ) from None
        name, per_char = f"regex /{spec}/", regex_feature(text, pattern)
    ends = np.cumsum([len(t) for t in tokens]) - 1  # each token's last character
    return name, per_char[ends]
