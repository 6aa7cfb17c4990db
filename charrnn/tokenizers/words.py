"""Word tokenizers: text <-> ids of words (and punctuation), in two formats.

- WordTokenizer (tokenizer.json "version": 3, or 2 for a split "punct"; what `--tokenizer
  word` fits): the text's atoms, per --word-split, are its tokens: "space" (the
  default) takes every run of characters between two blanks as a word ("end.", "don't",
  as `line.split()` does), "punct" words (\\w+) and single punctuation marks. Newlines
  and `<unk>` are tokens too, and the gap between two tokens costs no token when it is
  what the tokenizer expects there: one space, or none where punctuation or a newline
  "glues" to its neighbour. Every other gap is spelled by tokens: `<join>` where two
  tokens touch that the default would part, and the blanks themselves (" " where the
  default is none, "  ", "\\t", ...) otherwise. So split "punct" makes a line of
  WikiText, " = Robert = \\n", the 4 tokens `= Robert = \\n`, and "Citizen:\\n" the 3
  tokens `Citizen : \\n` (split "space": `Citizen: \\n`), yet every text whose tokens
  are in the vocabulary round-trips.
- LegacyWordTokenizer (no "version"; runs written before WordTokenizer): every run of
  whitespace is a token of its own. It loads, encodes and decodes as it always has.

Glue, learned by the fit: each punctuation mark and the newline may glue to the token
before it (`glue_left`: "," "." ":" in English) or to the one after it (`glue_right`: "(",
and "\\n" where lines start without a blank); two tokens are parted by a space unless one
of them glues to the other (split "space" has no marks: only the newline's glue). The fit
counts, for each pair of neighbours with punctuation or a newline on a side, how often
they touch and how often one space parts them, and picks the flags that leave the fewest
gap tokens. "\\r\\n" shares the flags of "\\n".

The start of a text, and the token after each `<eos>`, follow a boundary that acts as a
newline: a text is encoded as if it came after one, which it does when the corpus is
read in chunks that end at newlines, so encode(a) + encode(b) decodes to a + b there.
(Only a line too long for one chunk, 64 MB, is cut elsewhere; its cut may gain or lose a
space.)

Not here: the <eos>/<unk> conventions, slicing and word counting (tokenizers/base.py).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

from charrnn.tokenizers.base import (
    EOS,
    TOKENIZER_FILE,
    UNK,
    slices,
    sum_lengths,
    text_words,
    unknown_symbols,
)

# The format of WordTokenizer's tokenizer.json (1: LegacyWordTokenizer, no key): 2 splits
# punctuation off, 3 names its --word-split (a split "punct" is still written as 2).
VERSION = 3

JOIN = "<join>"  # id 2: the two tokens around it touch; decodes to nothing
SPACE, NEWLINE = " ", "\n"
EOS_ID, UNK_ID, JOIN_ID = 0, 1, 2
# The atoms of a text, per --word-split: "space", every run of characters between blanks
# ("end.", "don't"); "punct", words (\w+) and each punctuation mark apart. Every character
# falls in exactly one class, so the atoms join back into the text. A literal "<unk>"
# (WikiText writes its rare words so) is the <unk> token; "\r\n" is one newline, and
# blanks run up to a newline, so no gap holds one.
_BLANKS = r"\r?\n|(?:[^\S\r\n]|\r(?!\n))+"
ATOMS = {
    "space": re.compile(r"[^\s]+|" + _BLANKS),
    "punct": re.compile(r"<unk>|\w+|[^\w\s]|" + _BLANKS),
}
SPLITS = tuple(ATOMS)
WORD_START = re.compile(r"\w")


def _shift(ids: np.ndarray, first: int, by: int = 1) -> np.ndarray:
    """ids moved `by` places later, `first` in the places left: the token before each."""
    return np.concatenate([np.full(by, first, dtype=np.int64), ids[:-by]])[: ids.size]


def _is_newline(atom: str) -> bool:
    return atom in ("\n", "\r\n")


def _is_blank(atom: str) -> bool:
    return atom.isspace() and not _is_newline(atom)


def _is_word(atom: str, split: str) -> bool:
    """A word, not a punctuation mark (split "space": everything but blanks and newlines)."""
    if split == "space":
        return not atom.isspace()
    return atom == UNK or bool(WORD_START.match(atom))


class WordTokenizer:
    """Words, punctuation marks, newlines; a single space between two of them is free.

    Ids: 0 `<eos>`, 1 `<unk>`, 2 `<join>`, then the kept tokens (blanks among them),
    commonest first.
    """

    tokenizer = "word"
    eos_id, unk_id = EOS_ID, UNK_ID

    def __init__(self, tokens: list[str], glue_left: Iterable[str], glue_right: Iterable[str],
                 split: str = "punct"):  # fmt: skip
        if len(set(tokens)) != len(tokens) or {EOS, UNK, JOIN} & set(tokens) or "" in tokens:
            raise ValueError("a word vocabulary holds distinct, non-empty tokens and no specials")
        if split not in ATOMS:
            raise ValueError(f"unknown word split {split!r} (space or punct)")
        self.split, self._pattern = split, ATOMS[split]
        self.tokens = [EOS, UNK, JOIN, *tokens]
        self.glue_left, self.glue_right = sorted(glue_left), sorted(glue_right)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.vocab_size = len(self.tokens)
        self._space_id = self.index.get(SPACE, -1)
        # Per id: may a default gap come before it, and after it (after <eos> too: the
        # boundary); does it glue to the token before, and to the one after.
        visible = [not (_is_blank(t) or t in (EOS, JOIN)) for t in self.tokens]
        self._visible = np.array(visible)
        self._after = np.array([True, *visible[1:]])
        key = [NEWLINE if _is_newline(t) or t == EOS else t for t in self.tokens]
        left, right = set(self.glue_left), set(self.glue_right)
        self._left = np.array([k in left for k in key])
        self._right = np.array([k in right for k in key])  # <eos> glues as a newline does
        texts = ["", UNK, "", *tokens]  # <eos> and <join> decode to nothing
        self._texts = np.array(texts, dtype=object)
        self._lines = np.array(["\n", *texts[1:]], dtype=object)  # <eos> read as "\n"
        self._lengths = np.array([1, *map(len, texts[1:])], dtype=np.int64)  # <eos>: 1 char
        self._longest_blank = max((len(t) for t in tokens if _is_blank(t)), default=1)

    @classmethod
    def fit(cls, chunks: Iterable[str], vocab_size: int, min_count: int = 1,
            split: str = "punct") -> WordTokenizer:  # fmt: skip
        gaps = _Gaps.of(chunks, split)
        tokens = commonest(gaps.counts(), vocab_size - 3, min_count)
        left, right = _solve_glue(gaps.pairs())
        kept = {*tokens, NEWLINE}  # the newline's flags are the boundary's too
        return cls(tokens, left & kept, right & kept, split)

    def grown(self, chunks: Iterable[str], most: int, min_count: int = 1) -> WordTokenizer:
        """This vocabulary, its ids kept, and after it the commonest tokens of `chunks` it
        lacks (seen at least `min_count` times), at most `most` of them. The glue is the
        new text's: from this tokenizer's, each flag flips where that saves gap tokens on
        `chunks` (a mark the new text does not use keeps its glue). A base fitted on
        spaced punctuation (WikiText's "word , word") would otherwise spell every comma
        of a text that glues it ("word, word") with a <join>."""
        gaps = _Gaps.of(chunks, self.split)
        lacked = {t: n for t, n in gaps.counts().items() if t not in self.index}
        new = commonest(lacked, most, min_count)
        tokens = self.tokens[3:] + new
        left, right = _solve_glue(gaps.pairs(), self.glue_left, self.glue_right)
        kept = {*tokens, NEWLINE}
        return WordTokenizer(tokens, left & kept, right & kept, self.split)

    def _atoms(self, text: str) -> tuple[list[str], np.ndarray]:
        """The text's atoms and their ids (-1: not in the vocabulary). A run of blanks the
        vocabulary lacks is spelled by the runs it has (_blank_pieces)."""
        atoms = self._pattern.findall(text)
        ids = np.fromiter(map(self.index.get, atoms, itertools.repeat(-1)), np.int64, len(atoms))
        missing = np.flatnonzero(ids < 0).tolist()
        if any(len(atoms[i]) > 1 and atoms[i].isspace() for i in missing):
            atoms = [piece for a in atoms for piece in (
                self._blank_pieces(a) if a.isspace() and a not in self.index else [a])]  # fmt: skip
            ids = np.fromiter(map(self.index.get, atoms, itertools.repeat(-1)), np.int64)
        return atoms, ids

    def _blank_pieces(self, blanks: str) -> list[str]:
        """A run of blanks the vocabulary lacks, spelled from the left by the longest runs
        it has: 70 spaces where the longest known run is 33 are 3 tokens, not 70 (a text
        indented unlike its training split pays for each). A blank the vocabulary lacks
        altogether is a piece of its own, unknown."""
        pieces, start = [], 0
        while start < len(blanks):
            end = min(len(blanks), start + self._longest_blank)
            while end > start + 1 and blanks[start:end] not in self.index:
                end -= 1
            pieces.append(blanks[start:end])
            start = end
        return pieces

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Ids of the text. unknown="skip" encodes the text with the unknown atoms cut
        out; "unk" with each written as <unk>."""
        atoms, ids = self._atoms(text)
        missing = ids < 0
        if missing.any():
            if unknown == "error":
                unknown_symbols(self, self.unknown(text))
            ids = ids[~missing] if unknown == "skip" else np.where(missing, UNK_ID, ids)
        return self._glue(ids)

    def _default_space(self, before: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Where decoding puts a space between `before` and `ids` (pairwise) unasked."""
        glued = self._right[before] | self._left[ids]
        return self._visible[ids] & self._after[before] & ~glued

    def _glue(self, ids: np.ndarray) -> np.ndarray:
        """Atom ids -> token ids: a single space where decoding puts one anyway is
        dropped, and <join> goes where two atoms touch that decoding would part."""
        before, two_before = _shift(ids, EOS_ID), _shift(ids, EOS_ID, 2)  # after a boundary
        join = self._default_space(before, ids)  # only where `before` is not a blank
        free = (before == self._space_id) & self._default_space(two_before, ids)
        keep = np.ones(ids.size, dtype=bool)
        keep[np.flatnonzero(free) - 1] = False  # the space before, never a first atom
        out = np.stack([np.where(join, JOIN_ID, -1), np.where(keep, ids, -1)], axis=1)
        out = out.ravel()  # [n, 2] -> [2n]: each atom after its <join>, if it has one
        return out[out >= 0].astype(np.int32)

    def _text(self, ids: np.ndarray, prev: int, texts: np.ndarray) -> str:
        """The text of `ids` that come after token `prev` (<eos>: a boundary)."""
        out = np.empty(2 * ids.size, dtype=object)
        out[0::2] = np.where(self._default_space(_shift(ids, prev), ids), SPACE, "")
        out[1::2] = texts[ids]
        return "".join(out.tolist())

    def decode(self, ids) -> str:
        return self._text(np.asarray(ids, dtype=np.int64).ravel(), EOS_ID, self._texts)

    def token_text(self, i: int) -> str:
        return self.tokens[i]  # the specials by their names, blanks as themselves

    def unknown(self, text: str) -> list[str]:
        atoms, ids = self._atoms(text)
        return sorted({a for a, i in zip(atoms, ids.tolist()) if i < 0})

    def count_chars(self, ids) -> int:
        total = 0
        for part, prev in slices(ids):
            spaces = self._default_space(_shift(part, prev), part)
            total += int(self._lengths[part].sum() + spaces.sum())
        return total

    def count_words(self, ids) -> int:
        return text_words(self._text(part, prev, self._lines) for part, prev in slices(ids))

    def files(self) -> dict[str, bytes]:
        data = {
            "type": self.tokenizer, "version": 2, "specials": [EOS, UNK, JOIN],
            "tokens": self.tokens[3:], "glue_left": self.glue_left,
            "glue_right": self.glue_right,
        }  # fmt: skip
        if self.split != "punct":  # a format 2 file stays readable by a charrnn before 3
            data = {**data, "version": VERSION, "split": self.split}
        return {TOKENIZER_FILE: json.dumps(data, ensure_ascii=True).encode("ascii")}


class _Gaps:
    """The atoms of the text counted, and, for each pair of neighbours with punctuation or
    a newline on a side (a word is counted as None), how often the two touch and how often
    one space parts them. Two words are always parted, so their pairs are not kept."""

    @classmethod
    def of(cls, chunks: Iterable[str], split: str) -> _Gaps:
        gaps, pattern = cls(split), ATOMS[split]
        for chunk in [chunks] if isinstance(chunks, str) else chunks:
            gaps.add(pattern.findall(chunk))
        return gaps

    def __init__(self, split: str):
        self.split = split
        self.index = {NEWLINE: 0, SPACE: 1}  # atom -> id in this fit; 0 is the boundary too
        self.key = np.array([0, 1])  # id -> the id whose flags it shares ("\r\n" -> "\n")
        self.kind = np.array([1, 2], dtype=np.int8)  # id -> 0 word, 1 glues, 2 blank
        self.total = np.zeros(2, dtype=np.int64)
        self.counted: Counter[tuple[int, int, bool]] = Counter()

    def add(self, atoms: list[str]) -> None:
        index, seen = self.index, len(self.index)
        ids = np.array([index.setdefault(a, len(index)) for a in atoms], dtype=np.int64)
        new = list(itertools.islice(index, seen, None))
        keys = np.array([0 if _is_newline(a) else index[a] for a in new], dtype=np.int64)
        self.key = np.concatenate([self.key, keys])
        kinds = [0 if _is_word(a, self.split) else 2 if _is_blank(a) else 1 for a in new]
        self.kind = np.concatenate([self.kind, np.array(kinds, dtype=np.int8)])
        self.total = np.concatenate([self.total, np.zeros(len(new), dtype=np.int64)])
        self.total += np.bincount(ids, minlength=len(index))
        self._pairs(ids)

    def _pairs(self, ids: np.ndarray) -> None:
        blank = self.kind == 2
        before, two_before = _shift(ids, 0), _shift(ids, 0, 2)  # 0: the newline before
        visible = ~blank[ids]
        touch = visible & ~blank[before]
        spaced = visible & (before == 1) & ~blank[two_before]
        pair = touch | spaced
        p = self.key[np.where(touch, before, two_before)[pair]]
        q, s = self.key[ids[pair]], spaced[pair]
        p_word, q_word = self.kind[p] == 0, self.kind[q] == 0
        kept = ~(p_word & q_word)
        p, q = np.where(p_word, -1, p)[kept], np.where(q_word, -1, q)[kept]
        width = len(self.index) + 1
        codes, n = np.unique(((p + 1) * width + q + 1) * 2 + s[kept], return_counts=True)
        for code, count in zip(codes.tolist(), n.tolist()):
            pq, s_ = divmod(code, 2)
            self.counted[(pq // width - 1, pq % width - 1, bool(s_))] += count

    def counts(self) -> dict[str, int]:
        return {a: n for a, n in zip(self.index, self.total.tolist()) if n}

    def pairs(self) -> Counter[tuple[str | None, str | None, bool]]:
        atoms = [*self.index, None]  # [-1] is a word
        return Counter({(atoms[p], atoms[q], s): n for (p, q, s), n in self.counted.items()})


def _solve_glue(
    pairs: Counter, left: Iterable[str] = (), right: Iterable[str] = ()
) -> tuple[set[str], set[str]]:
    """(glue_left, glue_right) that leave few gap tokens on the counted pairs: from the
    glue given (none), flip one flag of one token while that saves tokens (each flip saves
    some, so it ends), in a fixed order."""
    left, right = set(left), set(right)
    as_after, as_before = defaultdict(list), defaultdict(list)
    for key in pairs:
        p, q, _ = key
        as_before[p].append(key)  # p's glue_right decides these pairs with q's glue_left
        as_after[q].append(key)

    def cost(keys) -> int:  # a gap token where the glue says touch but a space parts them
        return sum(pairs[k] for k in keys if (k[0] in right or k[1] in left) == k[2])

    tokens = sorted(t for t in {*as_after, *as_before} if t is not None)
    changed = True
    while changed:
        changed = False
        for t in tokens:
            for flags, keys in ((left, as_after[t]), (right, as_before[t])):
                was = cost(keys)
                flags ^= {t}
                if cost(keys) < was:
                    changed = True
                else:
                    flags ^= {t}
    return left, right


class LegacyWordTokenizer:
    """Words (\\w+), single punctuation marks, newlines and runs of other whitespace, each
    a token: the word tokenizer of runs written before WordTokenizer.

    Ids: 0 `<eos>`, 1 `<unk>`, then the kept tokens, commonest first. Lossless for text
    whose tokens are all in the vocabulary: newlines and indentation survive.
    """

    tokenizer = "word"
    eos_id, unk_id = EOS_ID, UNK_ID
    PATTERN = re.compile(r"<unk>|\w+|[^\w\s]|\n|[^\S\n]+")

    def __init__(self, tokens: list[str]):
        if len(set(tokens)) != len(tokens) or EOS in tokens or UNK in tokens:
            raise ValueError("a word vocabulary holds distinct tokens and no specials")
        self.tokens = [EOS, UNK, *tokens]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.vocab_size = len(self.tokens)
        # <eos> counts as one character; <unk> as the five of its spelling.
        self._lengths = np.array([1, len(UNK), *map(len, tokens)], dtype=np.int64)
        self._lines = ["\n", *self.tokens[1:]]  # <eos> read as "\n"

    @classmethod
    def fit(cls, chunks: Iterable[str], vocab_size: int, min_count: int = 1) -> LegacyWordTokenizer:
        return cls(commonest(cls._counts(chunks), vocab_size - 2, min_count))

    def grown(self, chunks: Iterable[str], most: int, min_count: int = 1) -> LegacyWordTokenizer:
        """This vocabulary, its ids kept, and after it the commonest tokens of `chunks` it
        lacks (seen at least `min_count` times), at most `most` of them."""
        lacked = {t: n for t, n in self._counts(chunks).items() if t not in self.index}
        return LegacyWordTokenizer(self.tokens[2:] + commonest(lacked, most, min_count))

    @classmethod
    def _counts(cls, chunks: Iterable[str]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for chunk in [chunks] if isinstance(chunks, str) else chunks:
            counts.update(cls.PATTERN.findall(chunk))
        return counts

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        tokens = self.PATTERN.findall(text)
        ids = np.fromiter((self.index.get(t, -1) for t in tokens), np.int32, len(tokens))
        missing = ids < 0
        if missing.any():
            if unknown == "error":
                unknown_symbols(self, self.unknown(text))
            ids = ids[~missing] if unknown == "skip" else np.where(missing, self.unk_id, ids)
        return ids.astype(np.int32, copy=False)

    def decode(self, ids) -> str:
        return "".join(self.tokens[i] for i in np.asarray(ids).tolist() if i != self.eos_id)

    def token_text(self, i: int) -> str:
        return self.tokens[i]

    def unknown(self, text: str) -> list[str]:
        return sorted({t for t in self.PATTERN.findall(text) if t not in self.index})

    def count_chars(self, ids) -> int:
        return sum_lengths(self._lengths, ids)

    def count_words(self, ids) -> int:
        lines = self._lines.__getitem__
        return text_words("".join(map(lines, part.tolist())) for part, _ in slices(ids))

    def files(self) -> dict[str, bytes]:
        data = {"type": self.tokenizer, "specials": [EOS, UNK], "tokens": self.tokens[2:]}
        return {TOKENIZER_FILE: json.dumps(data, ensure_ascii=True).encode("ascii")}


def commonest(counts: dict[str, int], most: int, min_count: int) -> list[str]:
    """The `most` commonest tokens of `counts` (ties in code-point order) seen at least
    `min_count` times; a literal `<unk>` is the <unk> token, never a kept one."""
    ranked = sorted(((t, n) for t, n in counts.items() if t != UNK), key=lambda kv: (-kv[1], kv[0]))
    return [t for t, n in ranked[: max(most, 0)] if n >= min_count]


def from_data(data: dict) -> WordTokenizer | LegacyWordTokenizer:
    """The word tokenizer a tokenizer.json holds, in either format."""
    version = data.get("version", 1)
    if version in (2, VERSION) and data["specials"] == [EOS, UNK, JOIN]:
        split = data["split"] if version == VERSION else "punct"
        return WordTokenizer(data["tokens"], data["glue_left"], data["glue_right"], split)
    if version == 1 and data["specials"] == [EOS, UNK]:
        return LegacyWordTokenizer(data["tokens"])
    raise ValueError(f"unknown word tokenizer version {version!r} (this charrnn reads 1 to 3)")
