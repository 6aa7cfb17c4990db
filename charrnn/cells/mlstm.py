"""mLSTM, the multiplicative LSTM of Krause et al. 2016 ("Multiplicative LSTM for sequence
modelling"): an LSTM whose gates and block input see m = (W_mx x) * (W_mh h_{t-1}), an
input-dependent transition, in place of h_{t-1}.

    m = (W_mx x_t) * (W_mh h_{t-1})
    i, f, o = sigmoid(W_*x x_t + W_*m m + b_*)      g = tanh(W_gx x_t + W_gm m + b_g)
    c = f * c_{t-1} + i * g                          h = o * tanh(c)

(g is the paper's h-hat; the gates' arithmetic is gates.py's, without peepholes.)
Owns: the cell and its window function, whose backward is written by hand as greff.py's is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from charrnn.cells.base import Cell, State, init_uniform
from charrnn.cells.gates import Gating, lstm_gates, lstm_gates_backward
from charrnn.cells.matmul import linear, pack, project

GATING = Gating(peepholes=False)


def mlstm_step(
    xp: Tensor, xm: Tensor, state: State, w_mh: Tensor, w_gm: Tensor
) -> tuple[State, dict[str, Tensor], Tensor]:
    """One step from the input's projections xp [B, 4H] (W_gx x + b) and xm [B, H] (W_mx x):
    -> (new state, gates and m, W_mh h_{t-1}). What Cell.step and the window both run."""
    h, c = state
    u = linear(h, w_mh)  # [B, H]
    m = xm * u
    h, c, z = lstm_gates(GATING, linear(m, w_gm, xp), c, None)
    return (h, c), {**z, "m": m}, u


class _Window(torch.autograd.Function):
    """A window of mlstm_step: xp [T, B, 4H], xm [T, B, H] -> (h [B, T, H], h_T, c_T),
    time-major as greff.py's window is."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, xp, xm, w_mh, w_gm, h0, c0):
        state, hs, cs, zs, us = (h0, c0), [h0], [c0], [], []
        r_mh, r_gm = pack(w_mh, xp.shape[1]), pack(w_gm, xp.shape[1])  # once for all steps
        for xp_t, xm_t in zip(xp, xm):
            state, z, u = mlstm_step(xp_t, xm_t, state, r_mh, r_gm)
            hs.append(state[0])
            cs.append(state[1])
            zs.append(z)
            us.append(u)
        ctx.hs, ctx.cs, ctx.zs, ctx.us = hs[1:-1], cs[1:], zs, us  # intermediates only
        ctx.save_for_backward(xm, w_mh, w_gm, h0, c0)
        return torch.stack(hs[1:], 1), state[0].clone(), state[1].clone()

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dys, dh, dc):
        xm, w_mh, w_gm, h0, c0 = ctx.saved_tensors
        zs, us = ctx.zs, ctx.us
        cs = torch.stack([c0, *ctx.cs])  # [T+1, B, H]
        ys = torch.tanh(cs[1:])
        B = h0.shape[0]  # transposed and packed once for all steps
        r_mh, r_gm = pack(w_mh.t().contiguous(), B), pack(w_gm.t().contiguous(), B)
        T = len(zs)
        dpre, du, dxm = [None] * T, [None] * T, [None] * T
        for t in reversed(range(T)):
            dpre[t], dc = lstm_gates_backward(
                GATING, zs[t], cs[t], cs[t + 1], ys[t], dh + dys[:, t], dc, {}, None
            )
            dm = linear(dpre[t], r_gm)  # [B, 4H] @ [4H, H]
            du[t], dxm[t] = dm * xm[t], dm * us[t]
            dh = linear(du[t], r_mh)  # on to h_{t-1}
        dpre, du = torch.stack(dpre), torch.stack(du)  # [T, B, 4H], [T, B, H]
        ms = torch.stack([z["m"] for z in zs])
        hs = torch.stack([h0, *ctx.hs])
        # Each weight's gradient over the whole window in one matmul.
        dw_gm = linear(dpre.flatten(0, 1).t(), ms.flatten(0, 1).t())  # [4H, T*B] @ [T*B, H]
        dw_mh = linear(du.flatten(0, 1).t(), hs.flatten(0, 1).t())  # [H, T*B] @ [T*B, H]
        return dpre, torch.stack(dxm), dw_mh, dw_gm, dh, dc


class MLSTM(Cell):
    """Parameters: weight_gx [4H, I] and weight_gm [4H, H] (gates and block input from x
    and from m, blocks i, f, g, o), bias [4H], weight_mx [H, I], weight_mh [H, H] (m has
    no bias, as in the paper). forget_bias B sets f's bias to B at initialisation."""

    name = "mlstm"
    state_names = ("h", "c")
    gate_names = ("i", "f", "g", "o", "m")  # m is no gate, but what the cell multiplies by
    sigmoid_gates = ("i", "f", "o")
    gate_weights = 4

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None):
        super().__init__()
        H = hidden_size
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_gx = nn.Parameter(torch.empty(4 * H, input_size))
        self.weight_gm = nn.Parameter(torch.empty(4 * H, H))
        self.bias = nn.Parameter(torch.empty(4 * H))
        self.weight_mx = nn.Parameter(torch.empty(H, input_size))
        self.weight_mh = nn.Parameter(torch.empty(H, H))
        init_uniform(self, H)
        if forget_bias is not None:
            self.bias.data[H : 2 * H] = forget_bias

    def recurrent_weights(self) -> dict[str, tuple[str, ...]]:
        # h reaches the gates only through m = (W_mx x) * (W_mh h): W_mh is the recurrent
        # matrix proper (its gain is scaled by the input, step by step).
        return {"weight_mh": ("m",)}

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, I] -> W_gx x + b [N, 4H] and W_mx x [N, H], in one matmul."""
        weight = torch.cat([self.weight_gx, self.weight_mx])  # [5H, I]
        bias = F.pad(self.bias, (0, self.hidden_size))
        return project(x, weight, bias).split([4 * self.hidden_size, self.hidden_size], -1)

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        # The window's inputs in one matmul, time-major: [B, T, I] -> [T*B, I] -> [T, B, 5H].
        B, T, _ = x.shape
        xp, xm = (p.view(T, B, -1) for p in self._project(x.transpose(0, 1).reshape(T * B, -1)))
        ys, h, c = _Window.apply(xp, xm, self.weight_mh, self.weight_gm, *state)
        return ys, (h, c)

    def step(self, x: Tensor, state: State, observe: bool = False):
        xp, xm = self._project(x)
        new, z, _ = mlstm_step(xp, xm, state, self.weight_mh, self.weight_gm)
        return new, (z if observe else None)
