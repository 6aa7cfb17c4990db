"""A generated corpus of nested brackets, one expression per line: `(a (b c) [d {ef}])`.

    python corpora/brackets.py                  # writes corpora/brackets.txt (300,000 chars)
    python corpora/brackets.py --chars 50000 --seed 1 --out /tmp/held-out.txt

Three kinds of bracket nest up to depth 6 around short lowercase words. To close the
right bracket at the right time, and to end a line only when every bracket is closed, a
model has to keep count of how deep it is: Karpathy, Johnson & Fei-Fei (2015) found LSTM
cells that do. bench/brackets.py trains on this corpus and looks for that cell.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

PAIRS = ("()", "[]", "{}")
MAX_DEPTH = 6
MAX_LINE = 100  # longer draws are redrawn, so lines fit a terminal-ish width


def word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 3)))


def expression(rng: random.Random, depth: int) -> str:
    """A bracketed group at `depth` (>= 1) of 1-4 items: words or deeper groups."""
    opening, closing = rng.choice(PAIRS)
    items = []
    for _ in range(rng.randint(1, 4)):
        nest = depth < MAX_DEPTH and rng.random() < 0.45 - 0.04 * depth
        items.append(expression(rng, depth + 1) if nest else word(rng))
    return opening + " ".join(items) + closing


def line(rng: random.Random) -> str:
    while True:
        text = expression(rng, 1)
        if len(text) <= MAX_LINE:
            return text


def generate(chars: int = 300_000, seed: int = 0) -> str:
    """Lines of nested brackets, at least `chars` characters in all, newline-terminated."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < chars:
        lines.append(line(rng) + "\n")
        size += len(lines[-1])
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".txt"))
    args = parser.parse_args()
    text = generate(args.chars, args.seed)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(text):,} chars, {text.count(chr(10)):,} lines")


if __name__ == "__main__":
    main()
