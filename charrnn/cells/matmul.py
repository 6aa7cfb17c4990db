"""The matmuls of the hand-written cells: oneDNN's on a CPU, torch's elsewhere.

Owns: `linear` (one step's matmul), `pack` (a window's recurrent weight, reordered once)
and `project` (a window's input projection, forward and backward). Why: on this project's
AMD EPYC CPU torch.mm (MKL, which takes its AVX2 path on AMD) runs the thin matmuls of a
recurrent step at about half the FLOP/s of oneDNN (AVX-512), which nn.LSTM uses; the
recurrent matmul is most of a cell's time. oneDNN's ops are torch's private ones (its
inductor CPU backend calls them), hence the fallback to torch.mm wherever they are missing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# [16, 512] x [512, 2048]: 240-260 GFLOP/s in oneDNN with a dense weight, about 350 with a
# packed one, 100-115 in torch.mm, on this project's CPU.
_ONEDNN = _REORDER = None
if torch.backends.mkldnn.is_available():
    _ONEDNN = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    _REORDER = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)


def onednn_available() -> bool:
    """Whether oneDNN's linear is there to call (torch's private op)."""
    return _ONEDNN is not None


def linear(x: Tensor, weight: Tensor, add: Tensor | None = None) -> Tensor:
    """x [N, K] @ weight.T [K, M] (+ add [N, M]) -> [N, M].

    oneDNN on a CPU in float32 when autograd is not recording (inside the cells' hand-written
    window functions, and when sampling), and always for a weight from `pack`; torch.mm /
    addmm everywhere else (CUDA, float64, autograd), so that the same step code is
    differentiable where it has to be.
    """
    if weight.is_mkldnn or _onednn_applies(x, weight, add):
        if add is None:
            return _ONEDNN(x, weight, None, "none", [], "")
        return _ONEDNN.binary(x, add, weight, None, "add")
    return x @ weight.t() if add is None else torch.addmm(add, x, weight.t())


def pack(weight: Tensor, batch_size: int) -> Tensor:
    """weight [M, K] reordered once into oneDNN's blocked layout for `linear` by batch_size
    rows, where oneDNN applies; else weight itself. For a window's recurrent weights: a
    dense weight is reordered at every call, and 128 steps of [16, 512] x [512, 2048] took
    12.3 ms packed against 25.5 ms dense on this project's CPU."""
    if _REORDER is not None and _onednn_applies(weight, weight, None, recording=False):
        return _REORDER(weight.detach(), batch_size)
    return weight


def project(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """The input projection of a whole window, x [N, I] @ weight.T [I, M] + bias -> [N, M],
    on oneDNN forward and backward where it applies (F.linear's backward ran MKL's thin
    matmuls, 10.5 ms against 7.0 for [2048, 64] x [64, 2048] on this project's CPU)."""
    if _onednn_applies(x, weight, bias, recording=False):
        return _Project.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return _ONEDNN(x, weight, bias, "none", [], "")

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dx = linear(dy, weight.t().contiguous()) if ctx.needs_input_grad[0] else None
        return dx, dy.t() @ x, dy.sum(0)  # MKL takes the transposed view without a copy


def _onednn_applies(x: Tensor, weight: Tensor, add: Tensor | None, recording=True) -> bool:
    """Whether oneDNN can do it: a CPU, float32, and (unless the caller wraps it in its own
    autograd Function, recording=False) autograd not recording."""
    tensors = (x, weight) if add is None else (x, weight, add)
    if _ONEDNN is None or not torch.backends.mkldnn.enabled or x.device.type != "cpu":
        return False
    if any(t.dtype != torch.float32 for t in tensors):
        return False
    if not recording:
        return True
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
