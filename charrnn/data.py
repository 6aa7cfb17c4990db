"""Token ids -> train/val split -> B parallel streams -> (x, y) windows for truncated BPTT.

Nothing here knows about models or tokenizers: it cuts a 1-D array of ids so that a
stateful RNN can read the text in order, B places at once, and carry its hidden state
from one window to the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


def split(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """The first (1 - val_frac) of the ids for training, the last val_frac for validation.

    Validation is the end of the text, contiguous, never a random sample: a model must
    not have seen the sentences around the ones it is scored on.
    """
    n_val = int(round(len(ids) * val_frac))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def batchify(ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """Cut ids into `batch_size` contiguous streams, one per row; the remainder is dropped.

    With the alphabet and batch_size 4 (two letters left over):

        a b c d e f g h i j k l m n o p q r s t u v w x y z
        ┌ a b c d e f ┐
        │ g h i j k l │   row b is the text from b*N to (b+1)*N, N = 26 // 4 = 6:
        │ m n o p q r │   the model reads every row in order, all rows at once
        └ s t u v w x ┘

    Returns a [B, N] tensor that shares memory with `ids` where it can.
    """
    n = len(ids) // batch_size
    if n == 0:
        raise ValueError(f"{len(ids)} tokens cannot fill {batch_size} streams")
    return torch.from_numpy(np.ascontiguousarray(ids[: n * batch_size])).view(batch_size, n)


@dataclass(frozen=True)
class Streams:
    """Inputs and targets as B streams: y is x shifted by one token, so that every token
    of the text but the first is a target exactly once per pass."""

    x: torch.Tensor  # [B, N]
    y: torch.Tensor  # [B, N]

    @classmethod
    def of(cls, ids: np.ndarray, batch_size: int) -> Streams:
        # Cut the pairs (ids[i], ids[i+1]) into streams, not the ids themselves: the last
        # input of row b is then followed by its true next token, row b+1's first.
        return cls(x=batchify(ids[:-1], batch_size), y=batchify(ids[1:], batch_size))

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def length(self) -> int:
        return self.x.shape[1]

    def shard(self, rank: int, ranks: int) -> Streams:
        """Rank `rank`'s share when `ranks` processes read these streams together.

        With 4 streams and 2 ranks, rank 0 reads rows 0-1 and rank 1 rows 2-3: together
        they read exactly what one process reads, each row once. Rows that do not divide
        evenly go to the later ranks (see shard_rows); one rank gets them all.
        """
        rows = shard_rows(self.batch_size, rank, ranks)
        return Streams(x=self.x[rows], y=self.y[rows])

    def num_windows(self, seq_len: int) -> int:
        return -(-self.length // seq_len)  # ceil: the last window may be shorter

    def window(self, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window i: columns [i*T, (i+1)*T) of x and y, each [B, T] (T shorter at the end)."""
        t0 = i * seq_len
        return self.x[:, t0 : t0 + seq_len], self.y[:, t0 : t0 + seq_len]

    def windows(self, seq_len: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Windows start, start+1, ... in time order: the state after one feeds the next."""
        for i in range(start, self.num_windows(seq_len)):
            yield self.window(i, seq_len)


def shard_rows(batch_size: int, rank: int, ranks: int) -> slice:
    """Rows [rank*B//ranks, (rank+1)*B//ranks) of B: contiguous, disjoint, covering all."""
    return slice(rank * batch_size // ranks, (rank + 1) * batch_size // ranks)


def max_batch_size(num_tokens: int, seq_len: int) -> int:
    """The most streams `num_tokens` can fill with at least one full window each."""
    return max(0, (num_tokens - 1) // seq_len)
