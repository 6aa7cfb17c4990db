"""Gradient flow through time, and the spectra of the recurrent matrices.

Owns: `measure()` (the mean norm of d loss_t / d h_{t-k}, and of d loss_t / d c_{t-k} for a
cell with a cell state, for every lag k = 1 .. K and every layer), the windows of token ids
it reads (cut from a text, sampled from the model, or random), `spectra()` (per layer the
largest singular value of each recurrent matrix and the spectral radius of each of its
[H, H] blocks), the lags a table shows, and `draw()`, which puts the curves on a matplotlib
Axes the caller made. It does not own reading text, tokenizers, printing or matplotlib
itself (cli/gradients.py and bench/gradients.py make the figures).

How the gradients are measured: B windows of K + 1 tokens, each after up to WARMUP tokens
read without gradients (so the state is one the text leads to), run as one batch through
model.step, whose observer keeps every step's h (and c) of every layer. The loss is the
cross-entropy at the LAST position of each window only (loss_t, t = K), summed over the
windows; the windows are independent, so one backward gives each window's d loss_t / d h_s
for every earlier step s, and lag k = t - s. The norm of each window's gradient (over the H
units) is averaged over the windows. The derivative is the total one: for a layer below the
top it includes the path up through the layers above at the same step. Everything runs on
a float64 copy of the model in eval mode (no dropout), so that 0.25^200 and 4^200 are still
numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn import settings
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.sample import SampleConfig, generate_ids
from charrnn.tokenizers import CharTokenizer, on_unknown_or_default, unknown_note
from charrnn.tokens import ids_of_text

WARMUP = 100  # tokens read without gradients before each window, where the text has them
TRACKED = ("h", "c")  # the states whose gradients are measured, those a cell has


@dataclass(frozen=True, eq=False)
class Flow:
    """How the gradient of one layer's state falls or grows with the lag."""

    layer: int
    state: str  # h or c
    norms: np.ndarray  # [K]: norms[k - 1] = mean over windows of ||d loss_t / d state_{t-k}||

    @property
    def ratio(self) -> float:
        """The norm at the largest lag over the norm at lag 1."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return float(self.norms[-1] / self.norms[0])

    @property
    def per_lag(self) -> float:
        """The factor the norm changes by per lag, on average (geometric) from lag 1 on."""
        steps = len(self.norms) - 1
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return float(np.exp(np.log(self.ratio) / steps)) if steps else 1.0


@dataclass(frozen=True)
class Matrix:
    """A recurrent matrix R of one layer, [G*H, H]: what multiplies h_{t-1}."""

    name: str  # the parameter's name
    shape: tuple[int, int]
    sigma_max: float  # the largest singular value of the whole matrix
    blocks: tuple[tuple[str, float], ...]  # (block, spectral radius of its [H, H]) each


@dataclass(frozen=True)
class Spectrum:
    layer: int
    matrices: tuple[Matrix, ...]
    note: str | None = None  # why there is no matrix, when there is none


@dataclass(frozen=True, eq=False)
class Gradients:
    """Everything inspect-gradients shows."""

    cell: str
    flows: tuple[Flow, ...]  # per layer: h, then c where the cell has it
    spectra: tuple[Spectrum, ...]
    windows: int  # B: the windows averaged over
    warmup: int  # tokens read before each window, without gradients

    @property
    def max_lag(self) -> int:
        return len(self.flows[0].norms)

    def to_json(self) -> dict:
        """Every number, every lag; a norm that is inf or nan is null."""
        return {
            "cell": self.cell,
            "max_lag": self.max_lag,
            "windows": self.windows,
            "warmup": self.warmup,
            "flows": [
                {
                    "layer": f.layer,
                    "state": f.state,
                    "ratio": _finite(f.ratio),
                    "per_lag": _finite(f.per_lag),
                    "norms": [_finite(n) for n in f.norms],
                }
                for f in self.flows
            ],  # fmt: skip
            "spectra": [
                {
                    "layer": s.layer,
                    "note": s.note,
                    "matrices": [
                        {
                            "name": m.name,
                            "shape": list(m.shape),
                            "sigma_max": m.sigma_max,
                            "blocks": [{"block": b, "spectral_radius": r} for b, r in m.blocks],
                        }
                        for m in s.matrices
                    ],
                }
                for s in self.spectra
            ],  # fmt: skip
        }


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


# Measuring ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Windows:
    """B windows of token ids, [B, C + K + 2]: C tokens read without gradients (`warmup`),
    K + 1 read with them, and the target of the loss after the last of those."""

    ids: Tensor
    warmup: int = 0

    @property
    def max_lag(self) -> int:
        return self.ids.shape[1] - self.warmup - 2


def measure(model: RNNLanguageModel, windows: Windows) -> Gradients:
    """The gradient flow of `model` over `windows`, lags 1 .. windows.max_lag, and the
    spectra of its recurrent matrices. The model itself is left as it was."""
    assert windows.max_lag >= 1, "a window needs at least 2 tokens read with gradients"
    double = copy.deepcopy(model).double().eval()
    double.requires_grad_(False)  # only the states' gradients are wanted
    ids = windows.ids.to(double.decoder.weight.device)
    norms = _norms(double, ids, windows.warmup, windows.max_lag)
    flows = tuple(Flow(layer, name, norm) for (layer, name), norm in norms.items())
    return Gradients(model.config.cell, flows, spectra(model), len(ids), windows.warmup)


def _norms(model: RNNLanguageModel, ids: Tensor, warmup: int, max_lag: int) -> dict:
    """{(layer, state): [K] mean norms}, lag 1 first; ids [B, C + K + 2]."""
    B, device = ids.shape[0], ids.device
    with torch.no_grad():
        state = model.initial_state(B, device)
        for t in range(warmup):
            _, state = model.step(ids[:, t], state)
    names = [n for n in TRACKED if n in model.config.state_names]
    kept: dict[tuple[int, str], list[Tensor]] = {
        (i, n): [] for i in range(model.config.layers) for n in names
    }

    def observe(layer: int, values: dict[str, Tensor]) -> None:
        for n in names:
            kept[layer, n].append(values[n])  # [B, H] after this step

    state = tuple(s.detach().requires_grad_() for s in state)  # so the steps make a graph
    with torch.enable_grad():
        for t in range(warmup, warmup + max_lag + 1):
            logits, state = model.step(ids[:, t], state, observe)
        loss = F.cross_entropy(logits, ids[:, -1], reduction="sum")  # each window's loss_t
        # Steps 0 .. K-1 of the window are lags K .. 1 from its last step t = K.
        earlier = [s for steps in kept.values() for s in steps[:-1]]
        grads = torch.autograd.grad(loss, earlier)
    out, per_key = {}, max_lag
    for j, key in enumerate(kept):
        g = torch.stack(grads[j * per_key : (j + 1) * per_key])  # [K, B, H], lag K first
        out[key] = g.norm(dim=-1).mean(-1).flip(0).cpu().numpy()  # [K], lag 1 first
    return out


def windows_of(ids: Sequence[int] | np.ndarray, count: int, max_lag: int,
               warmup: int = WARMUP) -> Windows:  # fmt: skip
    """Up to `count` windows [B, C + K + 2] spread evenly over one sequence of ids (a text
    as the model reads it, <eos> first), each after C = min(warmup, what the text has)
    tokens of context; fewer when the text has fewer distinct places. ConfigError naming
    --max-lag when the text is too short for one window."""
    ids = np.asarray(ids, dtype=np.int64)
    need = max_lag + 2  # K + 1 tokens read, and the target of the last
    if len(ids) < need:
        raise ConfigError(
            f"--max-lag {max_lag} needs a text of at least {need - 1} tokens, and this one has "
            f"{len(ids) - 1}: give a longer text or a smaller --max-lag"
        )
    context = min(warmup, len(ids) - need)
    starts = np.unique(np.linspace(context, len(ids) - need, count).round().astype(int))
    rows = np.stack([ids[s - context : s + need] for s in starts])  # [B, C + K + 2]
    return Windows(torch.from_numpy(rows), context)


def sampled_windows(model: RNNLanguageModel, eos_id: int, count: int, max_lag: int,
                    seed: int, warmup: int = WARMUP) -> Windows:  # fmt: skip
    """`count` windows of the model's own text: each a sample begun after <eos>."""
    config = SampleConfig(length=warmup + max_lag + 1, num_samples=count, stop_at_eos=False)
    device = model.decoder.weight.device
    generator = torch.Generator(device).manual_seed(seed)
    made = generate_ids(model, [eos_id], config, eos_id, generator).cpu()  # [B, C + K + 1]
    eos = torch.full((count, 1), eos_id, dtype=made.dtype)
    return Windows(torch.cat([eos, made], 1), warmup)  # [B, C + K + 2]


def random_windows(vocab_size: int, count: int, max_lag: int, seed: int,
                   warmup: int = WARMUP) -> Windows:  # fmt: skip
    """`count` windows of random token ids (for an untrained model given no text)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(vocab_size, (count, warmup + max_lag + 2), generator=generator)
    return Windows(rows, warmup)


UNTRAINED_VOCAB = 96  # about a character model's vocabulary


def of_run(
    run, given: dict, vocab_size: int | None, text: str | None, on_unknown: str | None, count: int,
    max_lag: int, seed: int,
) -> tuple[RNNLanguageModel, str, Windows, str | None]:  # fmt: skip
    """(model, title, windows, a note) of a loaded run (api.Run), on `text` or else on
    samples of its own text."""
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"{flags}: a run has its own model; leave out RUN for an untrained one")
    if vocab_size is not None:
        raise ConfigError("--vocab-size is for an untrained model (--cell); a run has its own")
    model, tok = run.model, run.tokenizer
    if text is None:
        windows = sampled_windows(model, tok.eos_id, count, max_lag, seed)
        note = f"no --text or --file: reading {len(windows.ids)} samples of the model's own "
        return model, str(run.dir), windows, note + f"text (--seed {seed})"
    on_unknown = on_unknown_or_default(tok, on_unknown)
    note = unknown_note(tok, text, on_unknown)
    ids, _ = ids_of_text(tok, text, run.config.corpus.documents, on_unknown)
    return model, str(run.dir), windows_of(ids, count, max_lag), note


def of_untrained(
    given: dict, vocab_size: int | None, text: str | None, count: int, max_lag: int,
    seed: int, device: torch.device,
) -> tuple[RNNLanguageModel, str, Windows, None]:  # fmt: skip
    """(model, title, windows, no note) of a new model of --cell and the model flags, on
    `text` (its characters the vocabulary) or else on random token ids."""
    if "cell" not in given:
        raise ConfigError("give a RUN directory, or --cell CELL for an untrained model")
    if text is not None:
        if vocab_size is not None:
            raise ConfigError("--vocab-size: with a text, the vocabulary is its characters")
        tok = CharTokenizer.fit(text)
        vocab, windows = tok.vocab_size, windows_of(ids_of_text(tok, text)[0], count, max_lag)
    else:
        vocab = vocab_size or UNTRAINED_VOCAB
        windows = random_windows(vocab, count, max_lag, seed)
    config = settings.resolve(ModelConfig, given, (torch.device(device).type,), vocab_size=vocab)
    c = config
    title = f"untrained {c.cell} {c.layers}x{c.hidden} (--seed {seed})"
    return untrained(config, seed).to(device), title, windows, None


def untrained(config: ModelConfig, seed: int) -> RNNLanguageModel:
    """A new model with PyTorch's initialisation, the same for the same seed (the global
    random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RNNLanguageModel(config).eval()


# Spectra ------------------------------------------------------------------------------


def spectra(model: RNNLanguageModel) -> tuple[Spectrum, ...]:
    """Per layer, the largest singular value and the blocks' spectral radii of each matrix
    that multiplies h_{t-1}, or a note saying why a layer has none."""
    out = []
    for i, cell in enumerate(model.layers):
        found = recurrent_matrices(cell)
        matrices = tuple(_matrix(name, w, blocks) for name, w, blocks in found)
        out.append(Spectrum(i, matrices, None if matrices else _no_matrix(cell)))
    return tuple(out)


def recurrent_matrices(cell: nn.Module) -> list[tuple[str, Tensor, tuple[str, ...]]]:
    """(name, matrix [G*H, H], the names of its G blocks) of each recurrent matrix of a
    cell, as the cell declares them (Cell.recurrent_weights), with the blocks named by the
    cell where there are as many, else numbered."""
    named = dict(cell.named_parameters())
    declared = cell.recurrent_weights()
    out = []
    for name, blocks in declared.items():
        w = named[name].detach()
        G = w.shape[0] // w.shape[1]
        if len(blocks) != G:
            blocks = ("all",) if G == 1 else tuple(str(j) for j in range(G))
        out.append((name, w, tuple(blocks)))
    return out


def _matrix(name: str, w: Tensor, blocks: tuple[str, ...]) -> Matrix:
    w = w.double().cpu()
    H = w.shape[1]
    radii = tuple(
        (b, float(torch.linalg.eigvals(w[j * H : (j + 1) * H]).abs().max()))  # block j [H, H]
        for j, b in enumerate(blocks)
    )
    return Matrix(name, tuple(w.shape), float(torch.linalg.svdvals(w)[0]), radii)


def _no_matrix(cell: nn.Module) -> str:
    """Why no recurrent matrix was found: the gates do not see h (tried), or the cell
    declares none (Cell.recurrent_weights)."""
    if not _gates_see_h(cell):
        return "no recurrent matrix: its gates do not depend on h"
    return "no recurrent matrix declared (Cell.recurrent_weights)"


@torch.no_grad()
def _gates_see_h(cell: nn.Module) -> bool:
    """Whether any gate changes when h_{t-1} does, the input and the rest of the state kept."""
    p = next(cell.parameters())
    generator = torch.Generator(p.device).manual_seed(0)
    H = cell.hidden_size

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, device=p.device, dtype=p.dtype)

    x, state = randn(2, cell.input_size), tuple(randn(2, H) for _ in cell.state_names)
    _, before = cell.step(x, state, True)
    _, after = cell.step(x, (randn(2, H), *state[1:]), True)
    return any(not torch.equal(before[k], after[k]) for k in before)


# Showing ------------------------------------------------------------------------------


def shown_lags(max_lag: int) -> list[int]:
    """1, 2, 3, 5, 10, 20, 50, 100, 200, 500, ... up to max_lag, and max_lag itself."""
    lags, scale = [], 1
    while scale <= max_lag:
        lags += [k * scale for k in ((1, 2, 3, 5) if scale == 1 else (1, 2, 5))]
        scale *= 10
    return sorted({k for k in lags if k < max_lag} | {max_lag})


def draw(ax, result: Gradients, label: str = "", color=None) -> None:
    """The curves of `result` on a matplotlib Axes, log-scale y over the lag: one line per
    layer and state (c dashed), labelled `label` then the layer and state."""
    lags = np.arange(1, result.max_lag + 1)
    layers = len(result.spectra)
    for f in result.flows:
        name = f"{label} " if label else ""
        name += (f"layer {f.layer} " if layers > 1 else "") + f.state
        norms = np.where(np.isfinite(f.norms) & (f.norms > 0), f.norms, np.nan)
        ax.plot(lags, norms, "--" if f.state == "c" else "-", label=name, color=color)
    ax.set_yscale("log")
    ax.set_xlabel("lag k (tokens back)")
    ax.set_ylabel(r"mean $\Vert\partial\,\mathrm{loss}_t\,/\,\partial\,\mathrm{state}_{t-k}\Vert$")
    ax.grid(True, which="major", alpha=0.3)
