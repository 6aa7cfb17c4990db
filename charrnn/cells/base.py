"""The interface every recurrent cell implements, and the matmul the hand-written cells share.

Owns: `Cell` (names of the state and gates, `forward` over a window, `step` over one token,
FLOPs per token), `linear` (oneDNN's matmul on a CPU) and the PyTorch-like initialisation.
It knows no particular cell.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]

# oneDNN's matmul, which nn.LSTM uses on a CPU. On this project's AMD EPYC (AVX-512) it ran
# [16, 512] x [512, 2048] at 240-260 GFLOP/s where torch.mm (MKL, which takes its AVX2 path
# on AMD) ran 100-115: the recurrent matmul is most of a cell's time, so this is most of
# the speed. A private op of torch (inductor's CPU backend calls it), hence the fallback.
_ONEDNN = None
if torch.backends.mkldnn.is_available():
    _ONEDNN = getattr(torch.ops.mkldnn, "_linear_pointwise", None)


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


def linear(x: Tensor, weight: Tensor, add: Tensor | None = None) -> Tensor:
    """x [N, K] @ weight.T [K, M] (+ add [N, M]) -> [N, M].

    oneDNN on a CPU in float32 when autograd is not recording (inside the cells' hand-written
    window functions, and when sampling); torch.mm / addmm everywhere else (CUDA, float64,
    autograd), so that the same step code is differentiable where it has to be.
    """
    if _onednn_applies(x, weight, add):
        if add is None:
            return _ONEDNN(x, weight, None, "none", [], "")
        return _ONEDNN.binary(x, add, weight, None, "add")
    return x @ weight.t() if add is None else torch.addmm(add, x, weight.t())


def _onednn_applies(x: Tensor, weight: Tensor, add: Tensor | None) -> bool:
    tensors = (x, weight) if add is None else (x, weight, add)
    if _ONEDNN is None or not torch.backends.mkldnn.enabled or x.device.type != "cpu":
        return False
    if any(t.dtype != torch.float32 for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def init_uniform(module: nn.Module, hidden_size: int) -> None:
    """Every parameter uniform in +-1/sqrt(H), as PyTorch initialises nn.LSTM/GRU/RNN."""
    bound = hidden_size**-0.5
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-bound, bound)
