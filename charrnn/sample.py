"""Generation from a trained model: temperature, top-k, top-p, greedy, <eos>, streaming,
and clamping neurons (holding chosen units of h fixed to see what they do to the text).

Nothing here reads files or prints: generate() yields token ids one step at a time so
the caller can stream them out as they are made; generate_ids() makes a whole batch with
no read-back per step. Both run the Sampler: one step's work kept on the device (one-step
cell functions, sampling with no host check), replayed as a CUDA graph on CUDA.
reference_generate() is the plain loop they are tested against.
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


def sample_config(tokenizer, documents: str, allow_unk: bool = False, **options) -> SampleConfig:
    """How to sample from a run's model (options: SampleConfig's fields). It never makes
    `<unk>` unless allow_unk. A model of one long text (--documents none) never makes
    `<eos>` either: it never had to predict one (its only `<eos>` opens the text), so a
    sample runs to its length instead of ending on a guess an untrained model makes."""
    banned = [] if allow_unk or tokenizer.unk_id is None else [tokenizer.unk_id]
    if documents == "none":
        banned.append(tokenizer.eos_id)
    return SampleConfig(banned_ids=tuple(banned), **options)


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
def reference_generate(
    model: RNNLanguageModel,
    prime: list[int],
    config: SampleConfig,
    eos_id: int,
    generator: torch.Generator | None = None,
    clamp: Clamp | None = None,
    burn_in: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """generate(), written plainly: the model's forward() for every token and
    torch.multinomial. The fast path is tested against it; clamping uses it."""
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


CELL_STEPS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}


def cell_step(model: RNNLanguageModel, ids: Tensor, state: State) -> tuple[Tensor, State]:
    """forward() for one token per sample, ids [B] -> (logits [B, V], state), written
    with the one-step cell functions: the arithmetic of the native nn.LSTM/GRU/RNN
    kernels, without the set-up cost of the sequence kernels (oneDNN on a CPU: about
    9x slower than this for one token of a 2x256 LSTM; cuDNN on CUDA), which is most of
    a one-token step. `state` is updated in place; the returned one is the same tensors.
    """
    cell = CELL_STEPS[model.config.cell]
    x = model.embed(ids)  # [B, E]
    for i, layer in enumerate(model.layers):
        weights = (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
        if len(state) == 2:  # lstm: (h, c), each [L, B, H]
            h, c = cell(x, (state[0][i], state[1][i]), *weights)
            state[1][i].copy_(c)
        else:
            h = cell(x, state[0][i], *weights)
        state[0][i].copy_(h)
        x = h  # [B, H]: in eval mode dropout is the identity
    return model.decoder(x), state


def pick(logits: Tensor, config: SampleConfig, generator: torch.Generator | None) -> Tensor:
    """next_token() without torch.multinomial's checks (they read the probabilities back
    on a CPU, and cannot be captured in a CUDA graph). The draw is multinomial's own for
    one sample: argmax(p / q), q ~ Exp(1), one q per token, so the same generator gives
    the same tokens. [B, V] -> [B]."""
    if config.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / config.temperature, config.top_k, config.top_p)
    probs = logits.softmax(-1)
    q = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / q).argmax(-1)


GRAPH_WARMUP = 3  # eager steps before a step is captured as a CUDA graph
ONE_THREAD_UP_TO = 4  # samples made together on one CPU thread (see cpu_threads)


def cpu_threads(num_samples: int) -> int:
    """Threads to sample with on a CPU. A step of a few streams is a handful of small
    matrix-vector products, bound by reading the weights, not by arithmetic: on this
    project's 2 cores one thread was as fast as two for one stream of a 2x256 LSTM, and
    two threads collapse when another process shares the cores. Bigger batches keep
    torch's default. (Measured on shared cores: bench/speed_cpu.sh re-measures both.)"""
    return 1 if num_samples <= ONE_THREAD_UP_TO else torch.get_num_threads()


class Sampler:
    """B samples made together, one token per step, with every step kept on the device.

    Buffers made once and overwritten in place: logits [B, V] (what the model says comes
    next), state (each [L, B, H]), alive [B] and ids [B] (the tokens just made). Nothing
    in a step reads a value back to the host, so on CUDA one step is captured as a CUDA
    graph after GRAPH_WARMUP eager ones and then replayed. The graph-free path is the
    same Python run eagerly, and is what a CPU uses.
    """

    def __init__(self, model, config: SampleConfig, eos_id: int, generator=None, graph=None):
        self.model, self.config, self.eos_id, self.generator = model, config, eos_id, generator
        self.device = model.decoder.weight.device
        if graph and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {self.device}")
        self.use_graph = self.device.type == "cuda" if graph is None else graph
        self.graph, self.steps = None, 0

    def start(self, prime: list[int], burn_in: int = 0) -> None:
        """Read the prime (an empty one is <eos>, the token every text starts from);
        with `burn_in`, then run each sample to an <eos> of its own (run_to_eos)."""
        B, cfg = self.config.num_samples, self.config
        prime_ids = torch.tensor([prime or [self.eos_id]], device=self.device).expand(B, -1)
        self.model.eval()
        logits, state = self.model(prime_ids)  # [B, P, V]
        logits = logits[:, -1]  # [B, V]: what follows the prime
        if burn_in:
            logits, state = run_to_eos(
                self.model, logits, state, cfg, self.eos_id, self.generator, burn_in
            )
        self.logits = logits.contiguous()
        self.state = tuple(s.contiguous() for s in state)
        self.banned = None  # [V] True for the ids never to make
        if cfg.banned_ids:
            self.banned = torch.zeros(logits.shape[-1], dtype=torch.bool, device=self.device)
            self.banned[list(cfg.banned_ids)] = True
        self.alive = torch.ones(B, dtype=torch.bool, device=self.device)
        self.ids = torch.full((B,), self.eos_id, dtype=torch.long, device=self.device)

    def _advance(self) -> None:
        """Pick the next tokens from the logits and run the model one step on them."""
        logits = self.logits
        if self.banned is not None:
            logits = logits.masked_fill(self.banned, -math.inf)
        ids = pick(logits, self.config, self.generator)  # [B]
        if self.config.stop_at_eos:  # an ended sample makes <eos> from now on
            ids = torch.where(self.alive, ids, self.eos_id)
            self.alive &= ids != self.eos_id
        self.ids.copy_(ids)
        logits, _ = cell_step(self.model, self.ids, self.state)
        self.logits.copy_(logits)

    def step(self) -> Tensor:
        """Make one token per sample -> ids [B], a buffer the next step overwrites."""
        if not self.use_graph:
            self._advance()
        elif self.graph is not None:
            self.graph.replay()
        elif self.steps < GRAPH_WARMUP:
            self._warm_up()
        else:
            self._capture()
            self.graph.replay()
        self.steps += 1
        return self.ids

    def _warm_up(self) -> None:
        """An eager step on a side stream, as CUDA graphs want before capture."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._advance()
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _capture(self) -> None:
        """Record one step; capture only records, so the buffers keep their values."""
        self.graph = torch.cuda.CUDAGraph()
        if self.generator is not None:  # the default generator is registered by itself
            self.graph.register_generator_state(self.generator)
        with torch.cuda.graph(self.graph):
            self._advance()


@torch.inference_mode()
def generate(
    model: RNNLanguageModel,
    prime: list[int],
    config: SampleConfig,
    eos_id: int,
    generator: torch.Generator | None = None,
    clamp: Clamp | None = None,
    graph: bool | None = None,
    burn_in: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (ids [B], alive [B]) per step: the next token of each of the B samples, and
    which samples were still running when it was made (a finished sample's tokens are
    padding: <eos>). An empty prime starts from <eos>, the token that begins every text.
    `clamp` holds chosen units of h fixed throughout, the prime included. `burn_in` > 0:
    first let each sample run (for at most that many tokens) until it says <eos>, and
    start from there (see run_to_eos).

    For streaming: the caller reads each step's tokens. generate_ids() makes a whole
    batch with no host sync per step. `graph`: replay a CUDA graph (default: on CUDA).
    """
    if clamp:
        yield from reference_generate(model, prime, config, eos_id, generator, clamp, burn_in)
        return
    sampler = Sampler(model, config, eos_id, generator, graph)
    sampler.start(prime, burn_in)
    for _ in range(config.length):
        alive = sampler.alive.clone()
        yield sampler.step().clone(), alive
        if config.stop_at_eos and not sampler.alive.any():
            return


EOS_CHECK_EVERY = 64  # generate_ids() reads `alive` back this often, to stop early


@torch.inference_mode()
def generate_ids(
    model: RNNLanguageModel,
    prime: list[int],
    config: SampleConfig,
    eos_id: int,
    generator: torch.Generator | None = None,
    graph: bool | None = None,
) -> Tensor:
    """All the tokens of the B samples -> [B, N] on the device, N <= length; after a
    sample's <eos> its row holds <eos>. The host reads nothing back but, every
    EOS_CHECK_EVERY steps, whether any sample is still running."""
    sampler = Sampler(model, config, eos_id, generator, graph)
    sampler.start(prime)
    out = torch.full((config.length, config.num_samples), eos_id, device=sampler.device)
    for t in range(config.length):
        out[t].copy_(sampler.step())  # [N, B]: each step writes one contiguous row
        if config.stop_at_eos and (t + 1) % EOS_CHECK_EVERY == 0 and not sampler.alive.any():
            return out[: t + 1].t()
    return out.t()


def sample_text(model, tokenizer, prime: str, config: SampleConfig, generator=None) -> list[str]:
    """The whole text of each sample (the prime not included)."""
    ids = generate_ids(model, tokenizer.encode(prime).tolist(), config, tokenizer.eos_id, generator)
    return [tokenizer.decode([i for i in row if i != tokenizer.eos_id]) for row in ids.tolist()]
