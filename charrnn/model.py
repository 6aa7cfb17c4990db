"""ModelConfig + RNNLanguageModel: embedding -> stacked recurrent cells -> dropout -> decoder,
with the regularisers of the LSTM language-model literature (Merity et al. 2017, "Regularizing
and Optimizing LSTM Language Models"; Gal & Ghahramani 2016), each a setting, each off at 0:

    --embedding-dropout p   whole rows of the embedding (word types) dropped for a window
    --input-dropout p       the embedded inputs, one mask per stream for the whole window
    --dropout p             between layers and before the decoder: one mask per stream for
                            the whole window (variational), or a new one at every step
                            (--no-variational)
    --weight-drop p         DropConnect on the recurrent matrices (each cell's own
                            recurrent_weights), one mask for the whole window

All act in training only; an evaluation, a sample or a trace sees the whole model.

The decoder is one softmax over the vocabulary, or with --shortlist K (a word model's
default on a CPU) two: the K commonest tokens (the lowest ids: tokenizers number them
commonest first) and one class for all the rest share the first, and a token of the rest
gets p(rest) times its share of a softmax over the rest (the class-based softmax of Goodman
2001 and Mikolov et al. 2011, with one frequency class; the head of Grave et al. 2017's
adaptive softmax). Both read the decoder's matrix (a word model's is its embedding), one
row a token, and the class has a row of its own. The probabilities are exact; what it
saves is work: with targets the second softmax is computed only where the target is one
of the rest (17% of WikiText-2's tokens at K = 2,000), so the decoder of a word model's
training step and evaluation costs about a third of one softmax's.

The model knows nothing of files, tokenizers or training loops. Its two interfaces:

    forward(ids [B, T], state=None) -> (logits [B, T, V], state)      a window
    forward(ids [B, T], state, targets [B, T]) -> (nats [B, T], state)   training, evaluation
    step(ids [B], state, observe=None, clamp=None) -> (logits [B, V], state)   one token

where the logits of a model with a shortlist are its log-probabilities (a softmax of
them gives the same distribution, so samplers, beams and exports read them as logits).

with the recurrent state explicit: a tuple of [L, B, H] tensors named by `state_names`
(`(h,)` for rnn and gru, `(h, c)` for lstm), carried from call to call by the caller. `step`
is what sampling, clamping, neuron tracing and the gradient views share: it can hand each
layer's states and gates to an observer, and hold chosen units of h at set values. Each
layer is its own cell (cells.py), so every layer's states can be read and set from outside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from charrnn import settings
from charrnn.cells import CELLS, Cell, make_cell
from charrnn.errors import ConfigError
from charrnn.ngram import max_order
from charrnn.settings import at_least, setting, within

State = tuple[Tensor, ...]
Clamp = dict[tuple[int, int], float]  # (layer, neuron) -> the value its h is held at
Observer = Callable[[int, dict[str, Tensor]], None]  # (layer, {state or gate: [B, H]})


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = setting(  # V: number of token ids, <eos> included
        1, "Token ids, <eos> included (the tokenizer's).", check=at_least(1), cli=False
    )
    cell: str = setting("lstm", "The recurrent cell.", choices=tuple(CELLS), announce=True)
    layers: int = setting(1, "Stacked recurrent layers.", by={"cuda": 2}, check=at_least(1))
    # A word model's decoder (H x 10,000) is most of its work: on a CPU a small tied one
    # gets the most updates in minutes (bench/words.py; see bench/RESULTS.md).
    hidden: int = setting(
        512, "Units per layer.", by={"cuda": 1024, "word": 256, "cuda word": 1024},
        check=at_least(1),
    )  # fmt: skip
    embedding: int = setting(
        64, "Token embedding size.", by={"cuda": 128, "word": 256, "cuda word": 1024},
        check=at_least(1),
    )  # fmt: skip
    dropout: float = setting(
        0.0, "Dropout between layers and before the decoder.",
        check=within(0, 1, high_open=True), fitted="fitted to the epochs the run makes",
    )  # fmt: skip
    variational: bool = setting(True, "One --dropout mask per stream for the whole window.")
    input_dropout: float = setting(
        0.0, "Dropout of the embedded inputs, one mask per stream and window.",
        check=within(0, 1, high_open=True),
    )  # fmt: skip
    embedding_dropout: float = setting(
        0.0, "Drops whole tokens' embedding rows for a window.",
        check=within(0, 1, high_open=True),
    )  # fmt: skip
    weight_drop: float = setting(
        0.0, "DropConnect on the recurrent matrices, one mask per window.",
        check=within(0, 1, high_open=True),
    )  # fmt: skip
    tie_weights: bool = setting(
        False, "Share the embedding and the decoder (E must equal H).", by={"word": True}
    )
    forget_bias: float | None = setting(
        None, "The forget gate's bias at initialisation, for the LSTM family (default: "
        "PyTorch's initialisation)."
    )  # fmt: skip
    # A word model's decoder (H x 10,000) is most of its step; a shortlist of the commonest
    # 2,000 made a 1x256 word model's training 1.6x to 2.4x as fast on WikiText-2 (RESULTS).
    # Not on CUDA: picking the targets among the rest waits for the device (nonzero), and
    # no GPU has measured whether it pays there.
    shortlist: int = setting(
        0, "The commonest tokens, with a softmax of their own; the rest share one class, "
        "scored only where a target is among them (0: one softmax; ignored unless smaller "
        "than the vocabulary).", by={"word": 2000, "cuda word": 0}, check=at_least(0),
    )  # fmt: skip

    # A model's predictions mixed with a Kneser-Ney n-gram of its training text (ngram.py):
    # a word trigram gave 3% to 13% lower test perplexity per word on the zoo's word rows
    # and WikiText-2 (orders 4 and 5 no better), one of 7 characters a test loss 4% to 23%
    # lower on all 12 of the zoo's char rows (bench/RESULTS.md). Subwords: not measured.
    # fitting.py turns it off for a text too long to count and shortens it for a
    # vocabulary too large to key.
    ngram: int = setting(
        0, "Mix in an n-gram of the training text (0: off).",
        by={"char": 7, "word": 3}, check=at_least(0), fitted="char 7, word 3, else 0",
    )  # fmt: skip

    def __post_init__(self):
        settings.validate(self)
        if self.ngram > max_order(self.vocab_size):
            raise ConfigError(
                f"--ngram {self.ngram} is too long for a vocabulary of {self.vocab_size:,} "
                f"tokens (at most {max_order(self.vocab_size)})"
            )
        if self.tie_weights and self.embedding != self.hidden:
            raise ConfigError(
                f"--tie-weights needs --embedding equal to --hidden, not {self.embedding} "
                f"and {self.hidden}"
            )

    @property
    def state_names(self) -> tuple[str, ...]:
        return CELLS[self.cell].state_names

    def to_dict(self) -> dict:
        return settings.to_json(self)


class RNNLanguageModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        E, H = config.embedding, config.hidden
        self.embed = nn.Embedding(config.vocab_size, E)
        self.layers = nn.ModuleList(
            make_cell(config.cell, E if i == 0 else H, H, config.forget_bias)
            for i in range(config.layers)
        )
        self.drop = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(H, config.vocab_size)
        if config.tie_weights:
            self.decoder.weight = self.embed.weight  # [V, H] == [V, E]
            # The shared matrix is the decoder too: PyTorch's N(0, 1) for an embedding
            # would start the logits far from uniform. U(-0.1, 0.1) and a zero bias, as
            # pytorch/examples and AWD-LSTM start theirs (a word model of WikiText-2 then
            # reached 168 ppl/word where it reached 220: bench/RESULTS.md).
            nn.init.uniform_(self.embed.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
        # the shortlist's size K, where the decoder has one (0: one softmax), and the logit
        # of the class of the rest, beside the shortlist's own [K]
        self.head = config.shortlist if 0 < config.shortlist < config.vocab_size else 0
        if self.head:
            self.rest = nn.Linear(H, 1)
            nn.init.zeros_(self.rest.weight)
            nn.init.zeros_(self.rest.bias)
        # --ngram: the n-gram's share of the mixture (fitted at each evaluation, saved with
        # the weights it was fitted for), and its tables, which the run attaches (ngram.py)
        self.ngram = None
        if config.ngram:
            self.register_buffer("ngram_weight", torch.zeros(1))

    def initial_state(self, batch_size: int, device=None) -> State:
        """All-zero state, one [L, B, H] tensor per name in config.state_names."""
        L, H = self.config.layers, self.config.hidden
        weight = self.decoder.weight
        return tuple(
            torch.zeros(L, batch_size, H, device=device or weight.device, dtype=weight.dtype)
            for _ in self.config.state_names
        )

    def forward(
        self, ids: Tensor, state: State | None = None, targets: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """A window: (logits [B, T, V], state), or with `targets` [B, T] (the next ids)
        their nats [B, T] in fp32, without the logits of the whole vocabulary."""
        c = self.config
        x = self._embed_window(ids)  # [B, T] -> [B, T, E]
        x = self._drop_window(x, c.input_dropout, locked=True)
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        finals = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self._drop_window(x, c.dropout, c.variational)
            x, final = self._layer_window(layer, x, tuple(s[i] for s in state))  # [B, T, H]
            finals.append(final)
        x = self._drop_window(x, c.dropout, c.variational)  # [B, T, H]
        # Layers' finals, each [B, H] -> one [L, B, H] per state tensor.
        final = tuple(torch.stack(parts) for parts in zip(*finals))
        if targets is None:
            return self.decode(x), final
        return self.nats(x.flatten(0, 1), targets.flatten()).view(targets.shape), final

    def decode(self, x: Tensor) -> Tensor:
        """The logits [..., V] of outputs x [..., H]: with a shortlist, log-probabilities."""
        logits = self.decoder(x)
        if not self.head:
            return logits
        K = self.head
        first = torch.cat([logits[..., :K], self.rest(x)], -1).float().log_softmax(-1)
        rest = logits[..., K:].float().log_softmax(-1) + first[..., K:]  # log p(rest) p(w|rest)
        return torch.cat([first[..., :K], rest], -1).to(logits.dtype)

    def nats(self, x: Tensor, targets: Tensor) -> Tensor:
        """-log p(target) [N] in fp32 of outputs x [N, H] and targets [N]; with a
        shortlist the softmax of the rest only for the targets among them."""
        if not self.head:
            return F.cross_entropy(self.decoder(x).float(), targets, reduction="none")
        K, weight, bias = self.head, self.decoder.weight, self.decoder.bias
        first = torch.cat([F.linear(x, weight[:K], bias[:K]), self.rest(x)], -1)
        nats = F.cross_entropy(first.float(), targets.clamp(max=K), reduction="none")
        rows = (targets >= K).nonzero()[:, 0]  # [R]
        rest = F.linear(x[rows], weight[K:], bias[K:]).float()  # [R, V - K]
        return nats.index_add(0, rows, F.cross_entropy(rest, targets[rows] - K, reduction="none"))

    def _embed_window(self, ids: Tensor) -> Tensor:
        """The embedding of a window, with --embedding-dropout in training: a dropped token
        is zero wherever it occurs in the window (the rows kept are scaled up)."""
        p = self.config.embedding_dropout
        if not (self.training and p > 0):
            return self.embed(ids)
        weight = self.embed.weight  # [V, E]
        keep = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
        return F.embedding(ids, weight * keep)

    def _drop_window(self, x: Tensor, p: float, locked: bool) -> Tensor:
        """Dropout of x [B, T, F] in training: one mask per stream for the whole window when
        `locked` (the same units dropped at every step), else a new one per element."""
        if not (self.training and p > 0):
            return x
        if not locked:
            return F.dropout(x, p, training=True)
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)  # [B, 1, F]
        return x * mask

    def _layer_window(self, layer: Cell, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One layer over a window, with --weight-drop in training: its recurrent matrices
        replaced, for this window, by a dropped copy (the gradient reaches the weights)."""
        p = self.config.weight_drop
        if not (self.training and p > 0):
            return layer(x, state)
        dropped = {n: F.dropout(w, p, training=True) for n, w in layer.named_parameters()
                   if n in layer.recurrent_weights()}  # fmt: skip
        return functional_call(layer, dropped, (x, state), strict=False)

    def step(
        self,
        ids: Tensor,
        state: State,
        observe: Observer | None = None,
        clamp: list[tuple[Tensor, Tensor] | None] | None = None,
        out: State | None = None,
    ) -> tuple[Tensor, State]:
        """One token per sample, ids [B] -> (logits [B, V], state).

        `observe(layer, values)` is called with each layer's new states and gates (each
        [B, H]). `clamp` (from clamp_units) holds chosen units of h at set values, in the
        state carried on and in the input of the layer above (c, if any, runs free).
        `out`: write the new state into these tensors (a sampler's static buffers) instead of
        new ones; it may be `state` itself.
        """
        x = self.embed(ids)  # [B, E]
        new = []
        for i, layer in enumerate(self.layers):
            if i > 0 and self.training:  # in eval dropout is the identity: skip the call
                x = self.drop(x)
            layer_state, gates = layer.step(x, tuple(s[i] for s in state), observe is not None)
            if clamp is not None and clamp[i] is not None:
                units, values = clamp[i]
                h = layer_state[0].index_copy(-1, units, values.expand(len(ids), -1))
                layer_state = (h, *layer_state[1:])
            if observe is not None:
                observe(i, {**dict(zip(layer.state_names, layer_state)), **gates})
            if out is not None:
                for buffer, s in zip(out, layer_state):
                    buffer[i].copy_(s)
            new.append(layer_state)
            x = layer_state[0]  # h: the layer's output
        state = out if out is not None else tuple(torch.stack(parts) for parts in zip(*new))
        return self.decode(self.drop(x) if self.training else x), state


def clamp_units(model: RNNLanguageModel, clamp: Clamp) -> list[tuple[Tensor, Tensor] | None]:
    """{(layer, neuron): value} -> per layer (unit indices [K], values [K]) or None, for
    step(); ConfigError naming the first (layer, neuron) that the model does not have."""
    c, device = model.config, model.decoder.weight.device
    for layer, neuron in clamp:
        if not 0 <= layer < c.layers:
            last = c.layers - 1
            raise ConfigError(
                f"--clamp {layer}:{neuron}: no layer {layer}; the model has layers 0..{last}"
            )
        if not 0 <= neuron < c.hidden:
            raise ConfigError(
                f"--clamp {layer}:{neuron}: no neuron {neuron}; each layer has neurons "
                f"0..{c.hidden - 1}"
            )
    out: list[tuple[Tensor, Tensor] | None] = []
    for i in range(c.layers):
        held = sorted((n, v) for (layer, n), v in clamp.items() if layer == i)
        if not held:
            out.append(None)
            continue
        units = torch.tensor([n for n, _ in held], device=device)
        values = torch.tensor([v for _, v in held], device=device, dtype=model.decoder.weight.dtype)
        out.append((units, values))
    return out


def detach(state: State) -> State:
    """Cut the graph at a window boundary: the values carry on, the gradients do not."""
    return tuple(s.detach() for s in state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied matrix is counted once
