"""Recurrent cells: one layer each, written once, with the interface the model drives.

    forward(x [B, T, I], state) -> (h at every step [B, T, H], final state)   a window
    step(x [B, I], state, observe) -> (new state, gates or None)               one token

A state is a tuple of [B, H] tensors named by `state_names`, h first (h is the layer's
output). `step(..., observe=True)` also returns the cell's gates by name, each [B, H].

lstm, gru and rnn are PyTorch's own modules (cuDNN or oneDNN for a window; the one-step cell
functions for a token), so their parameters keep PyTorch's names (weight_ih_l0, ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class _Stock:
    """What lstm, gru and rnn share: PyTorch's single-layer module, batch first."""

    gate_names: tuple[str, ...] = ()
    sigmoid_gates: tuple[str, ...] = ()

    def _weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        packed = tuple(s.unsqueeze(0) for s in state)  # each [B, H] -> [1, B, H]
        out, final = super().forward(x, packed if len(packed) == 2 else packed[0])
        final = final if isinstance(final, tuple) else (final,)
        return out, tuple(s.squeeze(0) for s in final)

    def flops_per_token(self) -> int:
        return 2 * self.weight_ih_l0.shape[0] * (self.input_size + self.hidden_size)


class LSTM(_Stock, nn.LSTM):
    name, state_names = "lstm", ("h", "c")
    gate_names, sigmoid_gates = ("i", "f", "g", "o"), ("i", "f", "o")

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None):
        super().__init__(input_size, hidden_size, batch_first=True)
        if forget_bias is not None:  # the forget gate's total bias, b_ih + b_hh, is set
            H = hidden_size
            with torch.no_grad():
                self.bias_ih_l0[H : 2 * H] = forget_bias
                self.bias_hh_l0[H : 2 * H] = 0.0

    def step(self, x: Tensor, state: State, observe: bool = False):
        if not observe:
            h, c = torch.lstm_cell(x, state, *self._weights())
            return (h, c), None
        w_ih, w_hh, b_ih, b_hh = self._weights()
        i, f, g, o = (x @ w_ih.T + b_ih + state[0] @ w_hh.T + b_hh).chunk(4, dim=-1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = f * state[1] + i * g
        h = o * c.tanh()
        return (h, c), {"i": i, "f": f, "g": g, "o": o}


class GRU(_Stock, nn.GRU):
    name, state_names = "gru", ("h",)
    gate_names, sigmoid_gates = ("r", "z", "n"), ("r", "z")

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None):
        super().__init__(input_size, hidden_size, batch_first=True)

    def step(self, x: Tensor, state: State, observe: bool = False):
        if not observe:
            return (torch.gru_cell(x, state[0], *self._weights()),), None
        w_ih, w_hh, b_ih, b_hh = self._weights()
        xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
        hr, hz, hn = (state[0] @ w_hh.T + b_hh).chunk(3, dim=-1)
        r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
        n = (xn + r * hn).tanh()  # the reset gate scales the state's share only
        h = (1 - z) * n + z * state[0]
        return (h,), {"r": r, "z": z, "n": n}


class RNN(_Stock, nn.RNN):
    name, state_names = "rnn", ("h",)

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None):
        super().__init__(input_size, hidden_size, batch_first=True)

    def step(self, x: Tensor, state: State, observe: bool = False):
        h = torch.rnn_tanh_cell(x, state[0], *self._weights())
        return (h,), ({} if observe else None)


CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def make_cell(name: str, input_size: int, hidden_size: int, forget_bias: float | None = None):
    return CELLS[name](input_size, hidden_size, forget_bias)
