"""Every recurrent cell charrnn trains, each written once from its equations, gates named.

Owns: the registry `CELLS` (name -> class) and `make_cell`. The interface is `Cell`
(base.py): `forward(x [B, T, I], state) -> (h [B, T, H], state)` over a window, `step(x
[B, I], state, observe=False) -> (state, gates | None)` over one token, states as tuples of
[B, H] named by `state_names` (h first), `flops_per_token()`. It knows nothing of
embeddings, stacking, dropout or decoders (model.py owns those).

    lstm gru rnn                     PyTorch's fused kernels (stock.py)
    peephole nig nfg nog niaf noaf   Greff et al. 2015's vanilla LSTM and its variants
    cifg fgr                         (greff.py; the arithmetic in gates.py)
    mlstm                            Krause et al. 2016 (mlstm.py)
    mingru                           Feng et al. 2024, parallel scan (mingru.py)

The hand-written cells' matmuls are matmul.py's (oneDNN on a CPU).
"""

from __future__ import annotations

from charrnn.cells.base import Cell, State
from charrnn.cells.greff import CIFG, FGR, NFG, NIAF, NIG, NOAF, NOG, Peephole
from charrnn.cells.mingru import MinGRU
from charrnn.cells.mlstm import MLSTM
from charrnn.cells.stock import GRU, LSTM, RNN

CELLS: dict[str, type[Cell]] = {
    cls.name: cls
    for cls in (LSTM, GRU, RNN, Peephole, NIG, NFG, NOG, NIAF, NOAF, CIFG, FGR, MLSTM, MinGRU)
}


def make_cell(
    name: str, input_size: int, hidden_size: int, forget_bias: float | None = None
) -> Cell:
    """A cell by name; ValueError naming the choices for an unknown one."""
    if name not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {name!r}")
    return CELLS[name](input_size, hidden_size, forget_bias)


__all__ = ["CELLS", "Cell", "State", "make_cell"]
