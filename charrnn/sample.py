"""Generation from a trained model: temperature, top-k, top-p, greedy, <eos>, streaming,
and clamping neurons (holding chosen units of h fixed to see what they do to the text).

Nothing here reads files or prints: generate() yields token ids one step at a time so
the caller can stream them out as they are made.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from charrnn.model import ModelConfig, RNNLanguageModel, State

Clamp = dict[tuple[int, int], float]  # (layer, neuron) -> the value its h is held at


@dataclass(frozen=True)
class SampleConfig:
    length: int = 500  # tokens to generate per sample (fewer if <eos> comes first)
    temperature: float = 1.0  # divides the logits; 0 = always the most likely token
    top_k: int | None = None  # sample among the k most likely tokens only
    top_p: float | None = None  # sample among the fewest tokens whose probability sums to p
    num_samples: int = 1  # samples generated together, as one batch
    stop_at_eos: bool = True  # a sample ends when it emits <eos>
    banned_ids: tuple[int, ...] = ()  # never generated (a word model's <unk>, by default)

    def __post_init__(self):
        if self.length < 0:
            raise ValueError(f"length cannot be negative, not {self.length}")
        if not self.temperature >= 0:  # NaN too
            raise ValueError(f"temperature cannot be negative, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, not {self.num_samples}")


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Set to -inf every logit outside the top k and outside the top-p nucleus. [B, V]."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens before it already reach p; the first always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: Tensor, config: SampleConfig, generator: torch.Generator | None) -> Tensor:
    """Pick one token per row of logits [B, V] -> [B]."""
    if config.banned_ids:
        logits = logits.index_fill(
            -1, torch.tensor(config.banned_ids, device=logits.device), -math.inf
        )
    if config.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / config.temperature, config.top_k, config.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def check_clamp(config: ModelConfig, clamp: Clamp) -> None:
    """ValueError naming the first (layer, neuron) that the model does not have."""
    for layer, neuron in clamp:
        if not 0 <= layer < config.layers:
            raise ValueError(
                f"--clamp {layer}:{neuron}: no layer {layer}; the model has layers "
                f"0..{config.layers - 1}"
            )
        if not 0 <= neuron < config.hidden:
            raise ValueError(
                f"--clamp {layer}:{neuron}: no neuron {neuron}; each layer has neurons "
                f"0..{config.hidden - 1}"
            )


def clamped_forward(
    model: RNNLanguageModel, clamp: Clamp, ids: Tensor, state: State | None = None
) -> tuple[Tensor, State]:
    """forward(), one step and one layer at a time, with every clamped unit of h held at
    its value after each step: in the state carried to the next step and in the output
    fed to the layer above (for lstm c runs free; only h is held). ids [B, T]."""
    B, T = ids.shape
    x = model.embed(ids)  # [B, T, E]
    state = state if state is not None else model.initial_state(B, ids.device)
    L = model.config.layers
    held = [[(n, v) for (i, n), v in clamp.items() if i == layer] for layer in range(L)]
    outputs = []
    for t in range(T):
        out = x[:, t : t + 1]  # [B, 1, E]
        finals = []
        for i, layer in enumerate(model.layers):
            layer_state = tuple(s[i : i + 1] for s in state)  # each [1, B, H]
            inp = model.drop(out) if i > 0 else out
            _, new = layer(inp, layer_state if len(layer_state) == 2 else layer_state[0])
            new = new if isinstance(new, tuple) else (new,)
            h = new[0].clone()  # [1, B, H]
            for n, v in held[i]:
                h[..., n] = v
            finals.append((h, *new[1:]))
            out = h.transpose(0, 1)  # [1, B, H] -> [B, 1, H]: one step's output is its h
        state = tuple(torch.cat(parts, dim=0) for parts in zip(*finals))  # each [L, B, H]
        outputs.append(out)
    logits = model.decoder(model.drop(torch.cat(outputs, dim=1)))  # [B, T, H] -> [B, T, V]
    return logits, state


@torch.inference_mode()
def generate(
    model: RNNLanguageModel,
    prime: list[int],
    config: SampleConfig,
    eos_id: int,
    generator: torch.Generator | None = None,
    clamp: Clamp | None = None,
    burn_in: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (ids [B], alive [B]) per step: the next token of each of the B samples, and
    which samples were still running when it was made (a finished sample's tokens are
    padding). An empty prime starts from <eos>, the token that begins every text.
    `clamp` holds chosen units of h fixed throughout, the prime included. `burn_in` > 0:
    first let each sample run (for at most that many tokens) until it says <eos>, and
    start from there (see run_to_eos).
    """
    model.eval()
    if clamp:
        check_clamp(model.config, clamp)
    forward = partial(clamped_forward, model, clamp) if clamp else model
    device = model.decoder.weight.device
    B = config.num_samples
    prime_ids = torch.tensor([prime or [eos_id]], device=device).expand(B, -1)  # [B, P]
    logits, state = forward(prime_ids)
    logits = logits[:, -1]  # [B, V]: what follows the prime
    if burn_in:
        logits, state = run_to_eos(forward, logits, state, config, eos_id, generator, burn_in)
    alive = torch.ones(B, dtype=torch.bool, device=device)
    for _ in range(config.length):
        ids = next_token(logits, config, generator)  # [B]
        yield ids, alive
        if config.stop_at_eos:
            alive = alive & (ids != eos_id)
            if not alive.any():
                return
        logits, state = forward(ids[:, None], state)
        logits = logits[:, -1]


def run_to_eos(forward, logits, state, config, eos_id, generator, most: int):
    """Let each of the B streams generate freely until it says <eos>, and return the
    (logits [B, V], state) of each right after its <eos>: the start of a document.

    A model trained on documents with its state carried across them has met a document
    start almost only after an <eos>, never from the zero state; starting each sample
    after one it made itself gives whole documents, not the middle of one.
    """
    waiting = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    for _ in range(most):
        ids = next_token(logits, config, generator)  # [B]
        new_logits, new_state = forward(ids[:, None], state)
        logits = torch.where(waiting[:, None], new_logits[:, -1], logits)
        state = tuple(torch.where(waiting[None, :, None], n, s) for n, s in zip(new_state, state))
        waiting = waiting & (ids != eos_id)
        if not waiting.any():
            break
    return logits, state


def sample_text(model, tokenizer, prime: str, config: SampleConfig, generator=None) -> list[str]:
    """The whole text of each sample (the prime not included)."""
    tokens: list[list[int]] = [[] for _ in range(config.num_samples)]
    for ids, alive in generate(
        model, tokenizer.encode(prime).tolist(), config, tokenizer.eos_id, generator
    ):
        for b, (i, a) in enumerate(zip(ids.tolist(), alive.tolist())):
            if a and i != tokenizer.eos_id:
                tokens[b].append(i)
    return [tokenizer.decode(t) for t in tokens]
