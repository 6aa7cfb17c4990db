"""The interface every recurrent cell implements.

Owns: `Cell` (names of the state and gates, `forward` over a window, `step` over one token,
FLOPs per token) and the PyTorch-like initialisation. It knows no particular cell, and no
matmul (matmul.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class Cell(nn.Module):
    """One recurrent layer: `forward` over a window, `step` over one token.

    Constructed as `Cell(input_size, hidden_size, forget_bias=None)`. States are tuples of
    [B, H] tensors named by `state_names`, h first (h is the layer's output).
    """

    name: str
    state_names: tuple[str, ...] = ("h",)
    gate_names: tuple[str, ...] = ()  # what step(observe=True) reports, in this order
    sigmoid_gates: tuple[str, ...] = ()  # the gates that live in [0, 1]
    gate_weights: int  # G: weight blocks per matrix (lstm 4, gru 3, rnn 1, ...)

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """A window: x [B, T, I], state each [B, H] -> (h at every step [B, T, H], final state)."""
        raise NotImplementedError

    def step(self, x: Tensor, state: State, observe: bool = False) -> tuple[State, dict | None]:
        """One token: x [B, I] -> (new state, h first; {gate: [B, H]} with observe, else None)."""
        raise NotImplementedError

    def flops_per_token(self) -> int:
        """Matmul FLOPs of one token's forward pass, 2 per multiply-add: every weight matrix
        multiplies once per token (peepholes and biases are elementwise, not counted)."""
        weights = (p for n, p in self.named_parameters() if n.startswith("weight"))
        return 2 * sum(p.numel() for p in weights)


def init_uniform(module: nn.Module, hidden_size: int) -> None:
    """Every parameter uniform in +-1/sqrt(H), as PyTorch initialises nn.LSTM/GRU/RNN."""
    bound = hidden_size**-0.5
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-bound, bound)
