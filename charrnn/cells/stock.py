"""PyTorch's own cells, `lstm`, `gru` and `rnn` (tanh), on its fused kernels (cuDNN on CUDA,
oneDNN on a CPU), behind the Cell interface.

Owns: the adapters. Each subclasses its nn module (one layer, batch_first), so the
state_dict keys stay weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0 and checkpoints of
charrnn 0.1 load. `step` without observe runs torch's one-token cell function (what
sampling uses: about 9x faster than a sequence kernel for one token on a CPU); with
observe it recomputes the step from the equations to report the gates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn.cells.base import Cell, State
from charrnn.cells.gates import Gating, lstm_gates

NO_PEEPHOLES = Gating(peepholes=False)


class LSTM(Cell, nn.LSTM):
    """PyTorch's LSTM (Greff et al.'s NP), gates i, f, g, o: gates.py with no peepholes.
    forget_bias B sets bias_ih_l0's f block to B and bias_hh_l0's to 0."""

    name = "lstm"
    state_names = ("h", "c")
    gate_names = ("i", "f", "g", "o")
    sigmoid_gates = ("i", "f", "o")
    gate_weights = 4

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None):
        nn.LSTM.__init__(self, input_size, hidden_size, batch_first=True)
        if forget_bias is not None:
            H = hidden_size
            with torch.no_grad():
                self.bias_ih_l0[H : 2 * H] = forget_bias
                self.bias_hh_l0[H : 2 * H] = 0.0

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = (s.unsqueeze(0) for s in state)  # [B, H] -> [1, B, H]
        ys, (h, c) = nn.LSTM.forward(self, x, (h, c))
        return ys, (h[0], c[0])

    def step(self, x: Tensor, state: State, observe: bool = False):
        weights = self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0
        if not observe:
            return torch.lstm_cell(x, state, *weights), None
        pre = F.linear(x, weights[0], weights[2]) + F.linear(state[0], weights[1], weights[3])
        h, c, z = lstm_gates(NO_PEEPHOLES, pre, state[1], None)
        return (h, c), z


class GRU(Cell, nn.GRU):
    """PyTorch's GRU: r = sigmoid(x_r + W_hr h + b_hr), z = sigmoid(x_z + W_hz h + b_hz),
    n = tanh(x_n + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h (x_* = W_i* x + b_i*).
    forget_bias is ignored (no forget gate)."""

    name = "gru"
    gate_names = ("r", "z", "n")
    sigmoid_gates = ("r", "z")
    gate_weights = 3

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None):
        nn.GRU.__init__(self, input_size, hidden_size, batch_first=True)

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        ys, h = nn.GRU.forward(self, x, state[0].unsqueeze(0))  # [B, H] -> [1, B, H]
        return ys, (h[0],)

    def step(self, x: Tensor, state: State, observe: bool = False):
        weights = self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0
        if not observe:
            return (torch.gru_cell(x, state[0], *weights),), None
        xr, xz, xn = F.linear(x, weights[0], weights[2]).chunk(3, 1)  # [B, 3H] -> 3 x [B, H]
        hr, hz, hn = F.linear(state[0], weights[1], weights[3]).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)  # the reset gate scales the state's share only
        return (torch.lerp(n, state[0], z),), {"r": r, "z": z, "n": n}


class RNN(Cell, nn.RNN):
    """PyTorch's tanh RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh). No gates."""

    name = "rnn"
    gate_weights = 1

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None):
        nn.RNN.__init__(self, input_size, hidden_size, batch_first=True)

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        ys, h = nn.RNN.forward(self, x, state[0].unsqueeze(0))  # [B, H] -> [1, B, H]
        return ys, (h[0],)

    def step(self, x: Tensor, state: State, observe: bool = False):
        weights = self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0
        h = torch.rnn_tanh_cell(x, state[0], *weights)
        return (h,), ({} if observe else None)
