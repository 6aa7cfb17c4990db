"""minGRU of Feng et al. 2024 ("Were RNNs All We Needed?"), the log-space version:

    z = sigmoid(W_z x_t + b_z)      h~ = g(W_h x_t + b_h)      h_t = (1 - z) * h_{t-1} + z * h~
    g(a) = a + 0.5 for a >= 0, sigmoid(a) otherwise  (so h~ > 0)

Neither z nor h~ sees h_{t-1}: a window is the linear recurrence h_t = A_t h_{t-1} + b_t,
A = 1 - z and b = z * h~ known at every step at once. `forward` solves it by a parallel scan
in log space (logcumsumexp; A, b > 0), CHUNK steps at a time, not a loop over steps; `step`
is its sequential form. Owns: the cell and its scan, a torch.autograd.Function whose
backward is the reverse recurrence dL/dh_{t-1} += A_t dL/dh_t, one fused op per step: on a
CPU autograd's derivative of logcumsumexp (two more of them) cost more than all the rest.
forget_bias is ignored: there is no forget gate (1 - z plays that part).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from charrnn.cells.base import Cell, State, init_uniform
from charrnn.cells.matmul import project

# Steps scanned at once. In float32 the scan loses about |log A*_t| * 6e-8 of relative
# accuracy (log A*_t + logcumsumexp(...) cancels), and log A*_t grows with t without bound:
# chunks of 64, each from the last one's final state, bound it at any T.
CHUNK = 64


def g(a: Tensor) -> Tensor:
    return torch.where(a >= 0, a + 0.5, torch.sigmoid(a))


def log_g(a: Tensor) -> Tensor:
    """log g(a), without forming g(a) (relu keeps the branch not taken finite)."""
    return torch.where(a >= 0, torch.log(F.relu(a) + 0.5), -F.softplus(-a))


def mingru_step(k: Tensor, a: Tensor, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """One step from the pre-activations k (of z) and a (of h~), each [B, H]."""
    z, h_tilde = torch.sigmoid(k), g(a)
    return torch.lerp(h, h_tilde, z), {"z": z, "h_tilde": h_tilde}  # h + z * (h~ - h)


def mingru_scan(k: Tensor, a: Tensor, h0: Tensor) -> Tensor:
    """Every step at once: k, a [B, T, H], h0 [B, H] -> h [B, T, H].

    h_t = A*_t h_0 + sum_{s<=t} (A*_t / A*_s) b_s with A*_t = prod_{s<=t} A_s: A* and the sum
    in log space (log A = logsigmoid(-k), log b = logsigmoid(k) + log g(a)), h_0 outside the
    logarithm, so that it may be any real (a clamp, or a state set by hand)."""
    log_A = torch.cumsum(F.logsigmoid(-k), 1)  # [B, T, H]
    log_b = F.logsigmoid(k) + log_g(a)
    lcse = torch.logcumsumexp(log_b - log_A, 1)
    return torch.exp(log_A) * h0.unsqueeze(1) + torch.exp(log_A + lcse)


class _Scan(torch.autograd.Function):
    """mingru_scan over the window in chunks: k, a [B, T, H], h0 [B, H] -> h [B, T, H]."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, k, a, h0):
        h, hs = h0, []
        for k_chunk, a_chunk in zip(k.split(CHUNK, 1), a.split(CHUNK, 1)):
            hs.append(mingru_scan(k_chunk, a_chunk, h))
            h = hs[-1][:, -1]
        hs = torch.cat(hs, 1)
        ctx.save_for_backward(k, a, h0, hs)
        return hs

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dhs):
        k, a, h0, hs = ctx.saved_tensors
        z = torch.sigmoid(k)
        A = 1 - z  # [B, T, H]
        # dL/dh_t, all of it: the window's own gradient plus what h_{t+1} passes back.
        grads = [dhs[:, -1]]
        for t in range(k.shape[1] - 2, -1, -1):
            grads.append(torch.addcmul(dhs[:, t], A[:, t + 1], grads[-1]))
        dh = torch.stack(grads[::-1], 1)  # [B, T, H]
        h_prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], 1)
        # h_t = A h_{t-1} + z h~ with A = 1 - z: dh_t/dk = z A (h~ - h_{t-1}), dh_t/da = z g'(a).
        dk = dh * z * A * (g(a) - h_prev)
        sig = torch.sigmoid(a)
        da = dh * z * torch.where(a >= 0, 1.0, sig * (1 - sig))
        return dk, da, A[:, 0] * dh[:, 0]


class MinGRU(Cell):
    """Parameters: weight_ih [2H, I] (blocks z, h~), bias [2H]; no recurrent weights."""

    name = "mingru"
    state_names = ("h",)
    gate_names = ("z", "h_tilde")
    sigmoid_gates = ("z",)
    gate_weights = 2

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(2 * hidden_size, input_size))
        self.bias = nn.Parameter(torch.empty(2 * hidden_size))
        init_uniform(self, hidden_size)

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        B, T, _ = x.shape
        ka = project(x.reshape(B * T, -1), self.weight_ih, self.bias)  # [B*T, I] -> [B*T, 2H]
        k, a = ka.view(B, T, -1).chunk(2, -1)  # -> 2 x [B, T, H]
        hs = _Scan.apply(k, a, state[0])
        return hs, (hs[:, -1],)

    def step(self, x: Tensor, state: State, observe: bool = False):
        k, a = F.linear(x, self.weight_ih, self.bias).chunk(2, -1)  # [B, 2H] -> 2 x [B, H]
        h, z = mingru_step(k, a, state[0])
        return (h,), (z if observe else None)
