"""The pointwise arithmetic of the whole LSTM family, written once: Greff et al. 2015's
vanilla LSTM (peepholes), its variants, and mLSTM's gates, forward and derivative.

Owns: `Gating` (which parts of the vanilla LSTM a variant keeps), `lstm_gates` (one step
from the pre-activations to h, c and the gates) and `lstm_gates_backward` (its derivative,
by hand, for the window functions). It owns no parameters and no matmul: the cells hand
in the pre-activations W x + R h + b, and the peepholes.

The vanilla LSTM of Greff et al. ("LSTM: A Search Space Odyssey", 2015), PyTorch's letters
(g is their block input z), pre-activations a_* = W_* x_t + R_* h_{t-1} + b_*:

    i = sigmoid(a_i + p_i * c_{t-1})       f = sigmoid(a_f + p_f * c_{t-1})
    g = tanh(a_g)                          c = f * c_{t-1} + i * g
    o = sigmoid(a_o + p_o * c)             h = o * tanh(c)

NIG: i = 1. NFG: f = 1. NOG: o = 1. NIAF: g = a_g. NOAF: h = o * c. CIFG: f = 1 - i.
NP: no peepholes (= PyTorch's LSTM, and mLSTM's gates). FGR adds the previous step's
i, f, o to a_i, a_f, a_o (the cells do that; the arithmetic here is the vanilla one).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

_sigmoid_backward = torch.ops.aten.sigmoid_backward  # (dL/dy, y) -> dL/dy * y * (1 - y)
_tanh_backward = torch.ops.aten.tanh_backward  # (dL/dy, y) -> dL/dy * (1 - y^2)


@dataclass(frozen=True)
class Gating:
    """Which parts of the vanilla LSTM a variant keeps (the defaults: all of them)."""

    input_gate: bool = True  # False: NIG, i = 1
    forget_gate: str = "own"  # "none": NFG, f = 1; "coupled": CIFG, f = 1 - i
    output_gate: bool = True  # False: NOG, o = 1
    input_activation: bool = True  # False: NIAF, g = a_g instead of tanh(a_g)
    output_activation: bool = True  # False: NOAF, h = o * c instead of o * tanh(c)
    peepholes: bool = True  # False: NP

    @cached_property  # these three are read at every step
    def blocks(self) -> tuple[str, ...]:
        """The pre-activation blocks, each [B, H] of [B, G*H], in PyTorch's order i, f, g, o:
        the gates with weights of their own, and the block input g."""
        own = {"i": self.input_gate, "f": self.forget_gate == "own", "g": True}
        own["o"] = self.output_gate
        return tuple(k for k, kept in own.items() if kept)

    @cached_property
    def gates(self) -> tuple[str, ...]:
        """The gates a step reports: its blocks, and CIFG's f (= 1 - i) too."""
        coupled = self.forget_gate == "coupled"
        return tuple(k for k in "ifgo" if k in self.blocks or (k == "f" and coupled))

    @cached_property
    def peephole_gates(self) -> tuple[str, ...]:
        """The gates with a peephole: rows of the cell's `peephole` [P, H], in this order."""
        return tuple(k for k in self.blocks if k != "g") if self.peepholes else ()


def lstm_gates(
    v: Gating, pre: Tensor, c_prev: Tensor, peephole: Tensor | None
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One step: pre [B, G*H] and c_{t-1} [B, H] -> h [B, H], c [B, H], {gate: [B, H]}.

    Plain autograd ops: Cell.step differentiates through this, and the window functions
    call it (with autograd off) and differentiate it with lstm_gates_backward."""
    a = dict(zip(v.blocks, pre.chunk(len(v.blocks), 1)))
    p = dict(zip(v.peephole_gates, peephole)) if peephole is not None else {}

    def sigmoid(k: str, cell: Tensor) -> Tensor:
        return torch.sigmoid(torch.addcmul(a[k], p[k], cell) if k in p else a[k])

    z = {}
    if v.input_gate:
        z["i"] = sigmoid("i", c_prev)
    if v.forget_gate == "own":
        z["f"] = sigmoid("f", c_prev)
    elif v.forget_gate == "coupled":
        z["f"] = 1 - z["i"]
    z["g"] = torch.tanh(a["g"]) if v.input_activation else a["g"]
    kept = c_prev * z["f"] if "f" in z else c_prev
    c = torch.addcmul(kept, z["i"], z["g"]) if "i" in z else kept + z["g"]
    if v.output_gate:
        z["o"] = sigmoid("o", c)
    y = torch.tanh(c) if v.output_activation else c
    h = z["o"] * y if "o" in z else y
    return h, c, {k: z[k] for k in v.gates}


def lstm_gates_backward(
    v: Gating,
    z: dict[str, Tensor],
    c_prev: Tensor,
    c: Tensor,
    y: Tensor,
    dh: Tensor,
    dc: Tensor,
    dz: dict[str, Tensor],
    peephole: Tensor | None,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The derivative of lstm_gates at one step, written out by hand.

    z, c_prev, c: what the step computed; y: tanh(c) (c itself for NOAF). dh, dc: dL/dh_t
    and dL/dc_t from the layer above and the later steps; dz: dL/d gate from elsewhere
    (FGR's gates feed the next step), {} if none. Returns dL/dpre [B, G*H] (written into
    out if given), dL/dc_{t-1}."""
    p = dict(zip(v.peephole_gates, peephole)) if peephole is not None else {}
    dz = dict(dz)
    da = {}  # dL/d pre-activation, per block
    dy = dh * z["o"] if "o" in z else dh
    dc = dc + (_tanh_backward(dy, y) if v.output_activation else dy)
    if "o" in z:
        do = dh * y if "o" not in dz else torch.addcmul(dz["o"], dh, y)
        da["o"] = _sigmoid_backward(do, z["o"])
        if "o" in p:
            dc = torch.addcmul(dc, da["o"], p["o"])  # o peeps at c_t
    dg = dc * z["i"] if "i" in z else dc
    da["g"] = _tanh_backward(dg, z["g"]) if v.input_activation else dg
    dc_prev = dc * z["f"] if "f" in z else dc
    for k, grad in (("i", dc * z["g"]), ("f", dc * c_prev)):
        if k in z:
            dz[k] = dz[k] + grad if k in dz else grad
    if v.forget_gate == "coupled":
        dz["i"] = dz["i"] - dz.pop("f")  # f = 1 - i
    for k in ("i", "f"):
        if k in v.blocks:
            da[k] = _sigmoid_backward(dz[k], z[k])
            if k in p:
                dc_prev = torch.addcmul(dc_prev, da[k], p[k])  # i and f peep at c_{t-1}
    return torch.cat([da[k] for k in v.blocks], 1, out=out), dc_prev
