"""The oracles of tests/test_cells.py: every cell as a plain loop over time, written from
its paper's equations with each weight block named, sharing no code with charrnn.cells.

Each reference takes the cell's parameters by name (a dict, as from named_parameters()),
x [B, T, I] and a state tuple of [B, H], and returns (h at every step [B, T, H], final
state, the gates of every step: a list of {name: [B, H]}).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

sigmoid, tanh = torch.sigmoid, torch.tanh


def blocks(w: Tensor, names: str) -> dict[str, Tensor]:
    """Split a [G*H, ...] weight or a [G*H] bias into its blocks, one per letter of names."""
    return dict(zip(names, w.chunk(len(names), 0)))


def lstm(p, x, state):
    """PyTorch's LSTM (Hochreiter & Schmidhuber 1997 with Gers et al.'s forget gate)."""
    W, R = blocks(p["weight_ih_l0"], "ifgo"), blocks(p["weight_hh_l0"], "ifgo")
    bi, bh = blocks(p["bias_ih_l0"], "ifgo"), blocks(p["bias_hh_l0"], "ifgo")
    h, c = state
    hs, gates = [], []
    for t in range(x.shape[1]):
        a = {k: x[:, t] @ W[k].T + bi[k] + h @ R[k].T + bh[k] for k in "ifgo"}
        i, f, g, o = sigmoid(a["i"]), sigmoid(a["f"]), tanh(a["g"]), sigmoid(a["o"])
        c = f * c + i * g
        h = o * tanh(c)
        hs.append(h)
        gates.append({"i": i, "f": f, "g": g, "o": o})
    return torch.stack(hs, 1), (h, c), gates


def gru(p, x, state):
    """PyTorch's GRU (Cho et al. 2014): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""
    W, R = blocks(p["weight_ih_l0"], "rzn"), blocks(p["weight_hh_l0"], "rzn")
    bi, bh = blocks(p["bias_ih_l0"], "rzn"), blocks(p["bias_hh_l0"], "rzn")
    (h,) = state
    hs, gates = [], []
    for t in range(x.shape[1]):
        xt = x[:, t]
        r = sigmoid(xt @ W["r"].T + bi["r"] + h @ R["r"].T + bh["r"])
        z = sigmoid(xt @ W["z"].T + bi["z"] + h @ R["z"].T + bh["z"])
        n = tanh(xt @ W["n"].T + bi["n"] + r * (h @ R["n"].T + bh["n"]))
        h = (1 - z) * n + z * h
        hs.append(h)
        gates.append({"r": r, "z": z, "n": n})
    return torch.stack(hs, 1), (h,), gates


def rnn(p, x, state):
    """Elman's RNN with tanh."""
    (h,) = state
    hs = []
    for t in range(x.shape[1]):
        a = x[:, t] @ p["weight_ih_l0"].T + p["bias_ih_l0"]
        h = tanh(a + h @ p["weight_hh_l0"].T + p["bias_hh_l0"])
        hs.append(h)
    return torch.stack(hs, 1), (h,), [{} for _ in hs]


# Greff et al. 2015's variants: the blocks with weights of their own, in PyTorch's order.
GREFF = {
    "peephole": "ifgo",
    "nig": "fgo",
    "nfg": "igo",
    "nog": "ifg",
    "niaf": "ifgo",
    "noaf": "ifgo",
    "cifg": "igo",
    "fgr": "ifgo",
}


def greff(variant, p, x, state):
    """Greff et al. 2015 ("LSTM: A Search Space Odyssey"), section II (vanilla LSTM with
    peepholes; z is PyTorch's g) and section III's variants. FGR: each gate also gets
    R_*i i_{t-1} + R_*f f_{t-1} + R_*o o_{t-1}."""
    own = GREFF[variant]
    W, R, b = (blocks(p[n], own) for n in ("weight_ih", "weight_hh", "bias"))
    P = dict(zip(own.replace("g", ""), p["peephole"]))  # p_i, p_f, p_o
    h, c = state[:2]
    prev = dict(zip("ifo", state[2:]))
    if variant == "fgr":  # [3H, 3H]: rows to gate k, columns from gate j
        Rg = {(k, j): m for k, row in blocks(p["weight_gates"], "ifo").items()
              for j, m in zip("ifo", row.chunk(3, 1))}  # fmt: skip
    one = torch.ones_like(c)
    hs, gates = [], []
    for t in range(x.shape[1]):
        a = {k: x[:, t] @ W[k].T + h @ R[k].T + b[k] for k in own}
        if variant == "fgr":
            for k in "ifo":
                a[k] = a[k] + sum(prev[j] @ Rg[k, j].T for j in "ifo")
        z = a["g"] if variant == "niaf" else tanh(a["g"])
        i = sigmoid(a["i"] + P["i"] * c) if "i" in own else one
        f = sigmoid(a["f"] + P["f"] * c) if "f" in own else (1 - i if variant == "cifg" else one)
        c = z * i + c * f
        o = sigmoid(a["o"] + P["o"] * c) if "o" in own else one  # peeps at the new c
        h = o * (c if variant == "noaf" else tanh(c))
        hs.append(h)
        step = {"i": i, "f": f, "g": z, "o": o}
        dropped = {"nig": "i", "nfg": "f", "nog": "o"}.get(variant, "")
        gates.append({k: v for k, v in step.items() if k != dropped})
        prev = {"i": i, "f": f, "o": o}
    final = (h, c, i, f, o) if variant == "fgr" else (h, c)
    return torch.stack(hs, 1), final, gates


def mlstm(p, x, state):
    """Krause et al. 2016, equations 18-24 (g is their h-hat), with biases on the gates."""
    Wx, Wm, b = (blocks(p[n], "ifgo") for n in ("weight_gx", "weight_gm", "bias"))
    h, c = state
    hs, gates = [], []
    for t in range(x.shape[1]):
        m = (x[:, t] @ p["weight_mx"].T) * (h @ p["weight_mh"].T)
        a = {k: x[:, t] @ Wx[k].T + m @ Wm[k].T + b[k] for k in "ifgo"}
        i, f, o, h_hat = sigmoid(a["i"]), sigmoid(a["f"]), sigmoid(a["o"]), tanh(a["g"])
        c = f * c + i * h_hat
        h = tanh(c) * o
        hs.append(h)
        gates.append({"i": i, "f": f, "g": h_hat, "o": o, "m": m})
    return torch.stack(hs, 1), (h, c), gates


def mingru(p, x, state):
    """Feng et al. 2024, algorithm "minGRU" with g of the log-space version (appendix B)."""
    Wz, Wh = p["weight_ih"].chunk(2)
    bz, bh = p["bias"].chunk(2)
    (h,) = state
    hs, gates = [], []
    for t in range(x.shape[1]):
        z = sigmoid(x[:, t] @ Wz.T + bz)
        a = x[:, t] @ Wh.T + bh
        h_tilde = torch.where(a >= 0, a + 0.5, sigmoid(a))
        h = (1 - z) * h + z * h_tilde
        hs.append(h)
        gates.append({"z": z, "h_tilde": h_tilde})
    return torch.stack(hs, 1), (h,), gates


REFERENCES = {"lstm": lstm, "gru": gru, "rnn": rnn, "mlstm": mlstm, "mingru": mingru}
REFERENCES.update({name: partial(greff, name) for name in GREFF})
