import string

import numpy as np
import pytest

from charrnn.data import Streams, batchify, split

ALPHABET = np.frombuffer(string.ascii_lowercase.encode(), dtype=np.uint8).astype(np.int32)


def letters(rows) -> list[str]:
    return ["".join(chr(c) for c in row) for row in rows.tolist()]


def test_batchify_gives_the_docstring_picture():
    assert letters(batchify(ALPHABET, 4)) == ["abcdef", "ghijkl", "mnopqr", "stuvwx"]


def test_split_holds_out_the_end_of_the_text():
    train, val = split(ALPHABET, 0.1)
    assert "".join(map(chr, train)) + "".join(map(chr, val)) == string.ascii_lowercase
    assert "".join(map(chr, val)) == "xyz"


def test_targets_are_inputs_shifted_by_one_across_stream_boundaries():
    s = Streams.of(ALPHABET, 4)  # pairs (a,b) (b,c) ... cut into 4 rows of 6
    assert letters(s.x) == ["abcdef", "ghijkl", "mnopqr", "stuvwx"]
    assert letters(s.y) == ["bcdefg", "hijklm", "nopqrs", "tuvwxy"]


@pytest.mark.parametrize("n, b, t", [(26, 4, 4), (1000, 7, 13), (50, 1, 64), (333, 5, 1)])
def test_every_token_but_the_first_is_a_target_once_per_pass(n, b, t):
    ids = np.arange(n, dtype=np.int32)
    s = Streams.of(ids, b)
    targets = np.concatenate([y.flatten().numpy() for _, y in s.windows(t)])
    assert len(targets) == len(set(targets.tolist())) == b * ((n - 1) // b)
    for x, y in s.windows(t):
        assert (y == x + 1).all()  # y is x shifted by one, window after window
    assert s.num_windows(t) == -(-((n - 1) // b) // t)


def test_windows_are_consecutive_in_time():
    s = Streams.of(ALPHABET, 2)
    xs = [letters(x) for x, _ in s.windows(5)]
    assert xs == [["abcde", "mnopq"], ["fghij", "rstuv"], ["kl", "wx"]]


def test_batchify_refuses_too_many_streams():
    with pytest.raises(ValueError, match="cannot fill"):
        batchify(ALPHABET[:3], 4)
