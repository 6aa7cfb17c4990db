"""Generation from a trained model: temperature, top-k, top-p, greedy, <eos>, streaming,
and clamping neurons (holding chosen units of h fixed to see what they do to the text).

Nothing here reads files or prints: generate() yields token ids one step at a time so
the caller can stream them out as they are made; generate_ids() makes a whole batch with
no read-back per step. Both run the Sampler: one step's work kept on the device (one-step
cell functions, sampling with no host check), replayed as a CUDA graph on CUDA. They are
tested against a plain loop written in tests/reference_sample.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from charrnn import ngram, settings
from charrnn.errors import ConfigError
from charrnn.model import Clamp, RNNLanguageModel, State, clamp_units
from charrnn.settings import at_least, not_negative, setting, within
from charrnn.tokenizers import on_unknown_or_default, unknown_note


@dataclass(frozen=True)
class SampleConfig:
    length: int = setting(
        500, "Tokens to make per sample (fewer if <eos> comes).", check=at_least(0)
    )
    temperature: float = setting(
        1.0, "Divides the logits: 0 is greedy, higher is wilder.", check=not_negative
    )
    top_k: int | None = setting(None, "Sample among the k likeliest tokens.", check=at_least(1))
    top_p: float | None = setting(
        None, "Sample among the fewest tokens whose probability reaches p.",
        check=within(0, 1, low_open=True),
    )  # fmt: skip
    num_samples: int = setting(
        1, "Samples made together (with --beam: the best N).", check=at_least(1)
    )
    beam: int | None = setting(
        None, "Beam search with N beams: the likeliest texts, best first.", check=at_least(1)
    )
    stop_at_eos: bool = True  # a sample ends when it makes <eos>
    banned_ids: tuple[int, ...] = ()  # never made (a word model's <unk>, by default)

    def __post_init__(self):
        settings.validate(self)
        if self.beam is None:
            return
        if self.num_samples > self.beam:
            raise ConfigError(
                f"--num-samples {self.num_samples}: --beam {self.beam} finds at most {self.beam}"
            )
        if self.temperature != 1.0 or self.top_k is not None or self.top_p is not None:
            raise ConfigError(
                "--beam searches the model's own probabilities: leave out --temperature, "
                "--top-k and --top-p"
            )


def sample_config(tokenizer, documents: str, allow_unk: bool = False, **options) -> SampleConfig:
    """How to sample from a run's model (options: SampleConfig's settings; None or left out:
    the default). It never makes
    `<unk>` unless allow_unk. A model of one long text (--documents none) never makes
    `<eos>` either: it never had to predict one (its only `<eos>` opens the text), so a
    sample runs to its length instead of ending on a guess an untrained model makes."""
    banned = [] if allow_unk or tokenizer.unk_id is None else [tokenizer.unk_id]
    if documents == "none":
        banned.append(tokenizer.eos_id)
    (given,) = settings.split(options, SampleConfig)  # an unknown name: the closest one
    return settings.resolve(SampleConfig, given, banned_ids=tuple(banned))


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | Tensor | None) -> Tensor:
    """Set to -inf every logit outside the top k and outside the top-p nucleus. [B, V].
    `top_p` may be one p per row, [B, 1] (the server's rows each have their own)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and (isinstance(top_p, Tensor) or top_p < 1.0):
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


def run_to_eos(step, logits, state, config, eos_id, generator, most: int):
    """Let each of the B streams generate freely until it says <eos>, and return the
    (logits [B, V], state) of each right after its <eos>: the start of a document.
    `step(ids [B], state) -> (logits [B, V], state)` runs the model one token.

    A model trained on documents with its state carried across them has met a document
    start almost only after an <eos>, never from the zero state; starting each sample
    after one it made itself gives whole documents, not the middle of one.
    """
    waiting = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    for _ in range(most):
        ids = next_token(logits, config, generator)  # [B]
        new_logits, new_state = step(ids, state)
        logits = torch.where(waiting[:, None], new_logits, logits)
        state = tuple(torch.where(waiting[None, :, None], n, s) for n, s in zip(new_state, state))
        waiting = waiting & (ids != eos_id)
        if not waiting.any():
            break
    return logits, state


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

    def __init__(
        self, model, config: SampleConfig, eos_id: int, generator=None, graph=None,
        clamp: Clamp | None = None,
    ):  # fmt: skip
        self.model, self.config, self.eos_id, self.generator = model, config, eos_id, generator
        self.device = model.decoder.weight.device
        assert not graph or self.device.type == "cuda", "CUDA graphs need a CUDA device"
        assert not graph or model.ngram is None, "an n-gram's lookups cannot be captured"
        plain = self.device.type == "cuda" and model.ngram is None
        self.use_graph = plain if graph is None else graph
        self.history = None  # with an n-gram (--ngram): each sample's last tokens [B, N-1]
        self.clamp = clamp_units(model, clamp) if clamp else None
        self.graph, self.steps = None, 0

    def _step(self, ids: Tensor, state: State, out: State | None = None):
        """The model on one token per sample: ids [B] -> (logits [B, V], state); with an
        n-gram, the logits are the mixture's log-probabilities after each sample's tokens."""
        logits, state = self.model.step(ids, state, clamp=self.clamp, out=out)
        self.history = ngram.push(self.history, ids)
        return ngram.next_log_probs(self.model, logits, self.history), state

    def start(self, prime: list[int], burn_in: int = 0) -> None:
        """Read the prime (an empty one is <eos>, the token every text starts from);
        with `burn_in`, then run each sample to an <eos> of its own (run_to_eos)."""
        B, cfg = self.config.num_samples, self.config
        prime_ids = torch.tensor([prime or [self.eos_id]], device=self.device).expand(B, -1)
        self.model.eval()
        if self.clamp is None:  # the whole prime as one window
            logits, state = self.model(prime_ids)  # [B, P, V]
            self.history = ngram.start_history(self.model, prime or [self.eos_id], B, self.device)
            logits = ngram.next_log_probs(self.model, logits[:, -1], self.history)  # [B, V]
        else:  # token by token, with the clamped units held from the start
            state = self.model.initial_state(B)
            self.history = ngram.start_history(self.model, [], B, self.device)
            for t in range(prime_ids.shape[1]):
                logits, state = self._step(prime_ids[:, t], state)
        if burn_in:
            logits, state = run_to_eos(
                self._step, logits, state, cfg, self.eos_id, self.generator, burn_in
            )
            # each sample goes on from right after its <eos> (one that made none in
            # burn_in tokens, rare, too: its n-gram history restarts there)
            self.history = ngram.start_history(self.model, [self.eos_id], B, self.device)
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
        logits, _ = self._step(self.ids, self.state, out=self.state)
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
    `clamp` holds chosen units of h fixed throughout, the prime included (Model.step).
    `burn_in` > 0:
    first let each sample run (for at most that many tokens) until it says <eos>, and
    start from there (see run_to_eos).

    For streaming: the caller reads each step's tokens. generate_ids() makes a whole
    batch with no host sync per step. `graph`: replay a CUDA graph (default: on CUDA).
    """
    sampler = Sampler(model, config, eos_id, generator, graph, clamp)
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


def prime_ids(
    tokenizer, prime: str, on_unknown: str | None = None, where: str = "--prime"
) -> list[int]:
    """<eos> then the prime's ids: a sample starts where every document starts.
    UnknownSymbols (naming them, as `where`, and --on-unknown) for symbols the model
    never saw; `on_unknown` None: the model's default."""
    on_unknown = on_unknown_or_default(tokenizer, on_unknown)
    unknown_note(tokenizer, prime, on_unknown, where, empty_ok=True)
    return [tokenizer.eos_id, *tokenizer.encode(prime, on_unknown).tolist()]


CONTEXT = 8  # ids before a piece decoded with it: where a space goes depends on them


def continuation(tokenizer, before: list[int], ids: list[int]) -> str:
    """The text `ids` add after `before` (the spaces between them included: a word
    tokenizer spells a gap by the tokens on both sides). Decoding more ids only ever
    appends text, so this is the tail of decoding both."""
    before = before[-CONTEXT:]
    return tokenizer.decode(before + ids)[len(tokenizer.decode(before)) :]


def texts(
    model: RNNLanguageModel, tokenizer, prime: list[int], config: SampleConfig,
    generator: torch.Generator | None = None, clamp: Clamp | None = None, burn_in: int = 0,
) -> Iterator[str]:  # fmt: skip
    """The text of the samples as it is made (the prime not included, the space after it
    included). One sample: piece by piece, each piece as soon as it decodes whole (the
    UTF-8 bytes of one character from a byte-fallback BPE model come out together).
    Several: each whole sample, in order, as soon as it and those before it are done."""
    steps = generate(model, prime, config, tokenizer.eos_id, generator, clamp, burn_in=burn_in)
    if config.num_samples == 1:
        yield from _pieces(steps, tokenizer, prime)
        return
    made: list[list[int]] = [[] for _ in range(config.num_samples)]
    done, given = [False] * config.num_samples, 0
    for ids, alive in steps:
        for b, (token, live) in enumerate(zip(ids.tolist(), alive.tolist())):
            if live and token != tokenizer.eos_id:
                made[b].append(token)
            done[b] = not live or token == tokenizer.eos_id
        while given < len(made) and done[given]:
            yield continuation(tokenizer, prime, made[given])
            given += 1
    yield from (continuation(tokenizer, prime, m) for m in made[given:])


class Pieces:
    """The text of one sample as it is made, a token at a time: `add(id)` gives what the
    token adds to the text, once it decodes whole ("" while the bytes of one character
    from a byte-fallback BPE model are still coming; then the character). Each token is
    decoded after the CONTEXT ids before it, so a text of any length costs the same per
    token; `rest()` gives what is held back at the end (a half character, as U+FFFD)."""

    def __init__(self, tokenizer, prime: list[int]):
        self.tokenizer, self.before, self.held = tokenizer, list(prime[-CONTEXT:]), []

    def add(self, token: int) -> str:
        self.held.append(token)
        text = continuation(self.tokenizer, self.before, self.held)
        if text.endswith("\ufffd") and len(self.held) < 4:  # at most 4 UTF-8 bytes a character
            return ""
        self.before = (self.before + self.held)[-CONTEXT:]
        self.held = []
        return text

    def rest(self) -> str:
        text = continuation(self.tokenizer, self.before, self.held) if self.held else ""
        self.before, self.held = (self.before + self.held)[-CONTEXT:], []
        return text


def _pieces(steps, tokenizer, prime: list[int]) -> Iterator[str]:
    """One sample's text as it is made (Pieces), each piece once it decodes whole."""
    pieces = Pieces(tokenizer, prime)
    for step, _ in steps:  # one sample: generate() ends the moment it says <eos>
        if step[0].item() == tokenizer.eos_id:
            break
        piece = pieces.add(step[0].item())
        if piece:
            yield piece
    rest = pieces.rest()
    if rest:
        yield rest
