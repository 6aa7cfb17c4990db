"""The peephole LSTM of Greff et al. 2015 ("LSTM: A Search Space Odyssey") and its variants
`nig nfg nog niaf noaf cifg fgr` (their NP is PyTorch's `lstm`).

Owns: the cells (parameters, forget-gate bias, forward, step) and the window function,
a torch.autograd.Function with a hand-written backward: per step only the recurrent matmul
and the pointwise work, and each recurrent weight's gradient as one matmul over the window
at the end (as torch-rnn's LSTM.lua does). The arithmetic of a step is gates.py's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from charrnn.cells.base import Cell, State, init_uniform
from charrnn.cells.gates import Gating, lstm_gates, lstm_gates_backward
from charrnn.cells.matmul import linear, pack, project


def greff_step(
    v: Gating, xp: Tensor, state: State, w_hh: Tensor, peephole: Tensor, w_gates: Tensor | None
) -> tuple[State, dict[str, Tensor]]:
    """One step from the input's projection xp [B, G*H] (W x + b): -> (new state, gates).
    What Cell.step and the window's forward both run."""
    h, c = state[0], state[1]
    pre = linear(h, w_hh, xp)  # [B, G*H]
    if w_gates is not None:  # FGR: the previous step's i, f, o feed a_i, a_f, a_o
        H = h.shape[1]
        r = linear(torch.cat(state[2:], 1), w_gates)  # [B, 3H] -> [B, 3H]
        pre[:, : 2 * H] += r[:, : 2 * H]
        pre[:, 3 * H :] += r[:, 2 * H :]
    h, c, z = lstm_gates(v, pre, c, peephole)
    new = (h, c, z["i"], z["f"], z["o"]) if w_gates is not None else (h, c)
    return new, z


class _Window(torch.autograd.Function):
    """A window of greff_step, xp [T, B, G*H] -> (h at every step [B, T, H], *final state).

    xp is time-major so that each step's slice, and the gradient handed back, is contiguous."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, v, xp, w_hh, peephole, w_gates, *state):
        B = xp.shape[1]
        r_hh, r_gates = pack(w_hh, B), (pack(w_gates, B) if w_gates is not None else None)
        states, zs = [state], []
        for xp_t in xp:
            new, z = greff_step(v, xp_t, states[-1], r_hh, peephole, r_gates)
            states.append(new)
            zs.append(z)
        ys = torch.stack([s[0] for s in states[1:]], 1)  # T x [B, H] -> [B, T, H]
        ctx.v, ctx.zs = v, zs
        ctx.hs = [s[0] for s in states[1:-1]]  # h_1 .. h_{T-1}
        ctx.cs = [s[1] for s in states[1:]]  # c_1 .. c_T
        ctx.save_for_backward(w_hh, peephole, w_gates, *state)
        # Clones: ctx must not hold an output (a reference cycle autograd never frees).
        return ys, *(s.clone() for s in states[-1])

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dys, *dfinal):
        v, zs = ctx.v, ctx.zs
        w_hh, peephole, w_gates, *state = ctx.saved_tensors
        hs, cs = torch.stack([state[0], *ctx.hs]), torch.stack([state[1], *ctx.cs])  # [T(+1), B, H]
        ys = torch.tanh(cs[1:]) if v.output_activation else cs[1:]
        dh, dc, dz = dfinal[0], dfinal[1], dict(zip("ifo", dfinal[2:]))
        B, T, H = dys.shape
        r_hh = pack(w_hh.t().contiguous(), B)  # transposed and packed once for all steps
        r_gates = pack(w_gates.t().contiguous(), B) if w_gates is not None else None
        dpre = dys.new_empty(T, B, len(v.blocks) * H)  # dL/dpre at every step
        for t in reversed(range(T)):
            _, dc = lstm_gates_backward(
                v, zs[t], cs[t], cs[t + 1], ys[t], dh + dys[:, t], dc, dz, peephole, dpre[t]
            )
            dh = linear(dpre[t], r_hh)  # [B, G*H] @ [G*H, H]: on to h_{t-1}
            if r_gates is not None:  # and on to FGR's gates of step t-1
                dz = dict(zip("ifo", linear(_ifo(dpre[t]), r_gates).chunk(3, 1)))
        # Each weight's gradient over the whole window in one matmul: [G*H, T*B] @ [T*B, H].
        dw_hh = linear(dpre.flatten(0, 1).t(), hs.flatten(0, 1).t())
        dpeephole = _peephole_grad(v, dpre, cs)
        dw_gates = None
        if w_gates is not None:
            prev = torch.stack([torch.cat(state[2:], 1)] + [_cat_ifo(z) for z in zs[:-1]])
            dw_gates = linear(_ifo(dpre).flatten(0, 1).t(), prev.flatten(0, 1).t())  # [3H, 3H]
        return None, dpre, dw_hh, dpeephole, dw_gates, dh, dc, *dz.values()


def _ifo(pre: Tensor) -> Tensor:
    """The i, f, o blocks of [..., 4H] in PyTorch's order i, f, g, o -> [..., 3H]."""
    H = pre.shape[-1] // 4
    return torch.cat([pre[..., : 2 * H], pre[..., 3 * H :]], -1)


def _cat_ifo(z: dict[str, Tensor]) -> Tensor:
    return torch.cat([z["i"], z["f"], z["o"]], -1)


def _peephole_grad(v: Gating, dpre: Tensor, cs: Tensor) -> Tensor:
    """dL/dp_k = sum over the window and batch of dL/da_k * the cell state gate k peeps at
    (c_{t-1} for i and f, c_t for o). dpre [T, B, G*H], cs [T+1, B, H] -> [P, H]."""
    da = dpre.unflatten(-1, (len(v.blocks), -1))  # [T, B, G, H]
    rows = []
    for k in v.peephole_gates:
        cell = cs[1:] if k == "o" else cs[:-1]
        rows.append((da[:, :, v.blocks.index(k)] * cell).sum((0, 1)))
    return torch.stack(rows)


class GreffCell(Cell):
    """Greff et al.'s vanilla LSTM, with peepholes p_i, p_f on c_{t-1} and p_o on c_t
    (equations in gates.py), or the variant its subclass's `gating` names. Parameters:
    weight_ih [G*H, I], weight_hh [G*H, H], bias [G*H] (blocks in PyTorch's order i, f, g,
    o, those the variant has), peephole [P, H] (rows i, f, o, those it has). forget_bias B
    sets f's bias to B at initialisation."""

    gating: Gating
    state_names = ("h", "c")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)  # the names follow from the gating
        cls.gate_names = cls.gating.gates
        cls.sigmoid_gates = tuple(k for k in cls.gate_names if k != "g")
        cls.gate_weights = len(cls.gating.blocks)

    @property
    def recurrent_weights(self) -> dict[str, tuple[str, ...]]:
        """The recurrent matrices, by parameter, and the names of their [H, H] blocks (for
        inspect-gradients' spectra): weight_hh's blocks are the variant's own."""
        return {"weight_hh": self.gating.blocks}

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None):
        super().__init__()
        G, H, P = self.gate_weights, hidden_size, len(self.gating.peephole_gates)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G * H, H))
        self.bias = nn.Parameter(torch.empty(G * H))
        self.peephole = nn.Parameter(torch.empty(P, H))
        self._more_parameters(H)
        init_uniform(self, H)
        if forget_bias is not None:
            self._set_forget_bias(forget_bias)

    def _more_parameters(self, H: int) -> None:
        self.register_parameter("weight_gates", None)

    def _set_forget_bias(self, value: float) -> None:
        if "f" in self.gating.blocks:
            self._bias_block("f").fill_(value)

    def _bias_block(self, gate: str) -> Tensor:
        H, j = self.hidden_size, self.gating.blocks.index(gate)
        return self.bias.data[j * H : (j + 1) * H]

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        # The window's inputs in one matmul, time-major: [B, T, I] -> [T*B, I] -> [T, B, G*H].
        B, T, _ = x.shape
        xp = project(x.transpose(0, 1).reshape(T * B, -1), self.weight_ih, self.bias)
        xp = xp.view(T, B, -1)
        weights = (self.weight_hh, self.peephole, self.weight_gates)
        ys, *final = _Window.apply(self.gating, xp, *weights, *state)
        return ys, tuple(final)

    def step(self, x: Tensor, state: State, observe: bool = False):
        xp = F.linear(x, self.weight_ih, self.bias)  # [B, I] -> [B, G*H]
        new, z = greff_step(
            self.gating, xp, state, self.weight_hh, self.peephole, self.weight_gates
        )
        return new, (z if observe else None)


class Peephole(GreffCell):
    """The vanilla LSTM of Greff et al., all of it."""

    name, gating = "peephole", Gating()


class NIG(GreffCell):
    """No input gate: i = 1."""

    name, gating = "nig", Gating(input_gate=False)


class NFG(GreffCell):
    """No forget gate: f = 1 (forget_bias has nothing to set and is ignored)."""

    name, gating = "nfg", Gating(forget_gate="none")


class NOG(GreffCell):
    """No output gate: o = 1."""

    name, gating = "nog", Gating(output_gate=False)


class NIAF(GreffCell):
    """No input activation function: g = a_g, not tanh(a_g)."""

    name, gating = "niaf", Gating(input_activation=False)


class NOAF(GreffCell):
    """No output activation function: h = o * c, not o * tanh(c)."""

    name, gating = "noaf", Gating(output_activation=False)


class CIFG(GreffCell):
    """Coupled input and forget gate: f = 1 - i, so no forget-gate weights or peephole.

    forget_bias B sets the input gate's bias to -B: then f = 1 - sigmoid(a_i) = sigmoid(-a_i)
    starts exactly as an own forget gate with bias B would (and i correspondingly small)."""

    name, gating = "cifg", Gating(forget_gate="coupled")

    def _set_forget_bias(self, value: float) -> None:
        self._bias_block("i").fill_(-value)


class FGR(GreffCell):
    """Full gate recurrence: a_i, a_f, a_o also get the previous step's i, f, o through
    nine recurrent matrices, weight_gates [3H, 3H] (rows to a_i, a_f, a_o; columns from
    i, f, o). The state carries those gates: (h, c, i, f, o)."""

    name, gating = "fgr", Gating()
    state_names = ("h", "c", "i", "f", "o")

    def _more_parameters(self, H: int) -> None:
        self.weight_gates = nn.Parameter(torch.empty(3 * H, 3 * H))
