"""`charrnn bench`: how fast training and sampling run, against the hardware's limit and
against a plain PyTorch reference timed in the same process.

Owns: the FLOP count of a model, what is timed (with charrnn.timing's loops, matmul
peak and peak memory), and the plain reference loops (nn.Embedding + nn.LSTM/GRU/RNN + nn.Linear +
AdamW in fp32 with a `.item()` per step; sampling one token at a time with
torch.multinomial and the tokens read back at every step). It times the real training
step (train.Trainer.step) and the real sampler (sample.generate_ids) as they are, and
knows nothing of how they work inside. It prints nothing: the cli package renders the records.

Model FLOP utilisation (MFU) = counted model FLOPs per second / the peak FLOP/s of a
large matmul timed on the same device in the same dtype in the same run: the share of
what the device can do that goes into the model's own arithmetic.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charrnn import corpus, tokens
from charrnn.data import Streams
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.sample import SampleConfig, generate_ids
from charrnn.settings import at_least, not_negative, option
from charrnn.timing import (
    Measure,
    PeakMemory,
    device_name,
    measure,
    peak_around,
    sync,
    time_steps,
    versions,
)
from charrnn.tokenizers import TokenizerConfig
from charrnn.training.config import PRECISIONS, TrainConfig
from charrnn.training.trainer import Job, Trainer

REFERENCE = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # the plain loop's; others nn.LSTM
TRAIN_FLOPS_FACTOR = 3  # forward + backward (about twice the forward's matmuls)


@dataclass(frozen=True)
class BenchConfig:
    """What one measure runs: a model, its batch and window, and how many steps."""

    model: ModelConfig  # its vocab_size: of the random token ids, or of the corpus
    batch_size: int = 32  # B: streams trained, or samples made, together
    seq_len: int = 128  # T: tokens per training window (training only)
    steps: int = 20  # timed steps: optimizer steps, or tokens per sample
    untimed_steps: int = 3  # run first, not timed
    precision: str = "fp32"  # fp32 | fp16 | bf16 (CUDA only), for training


STEPS = option("steps", int, 20, "Timed steps: optimizer steps, or tokens per sample.",
               by={"bench-sample": 500}, check=at_least(1))  # fmt: skip
UNTIMED_STEPS = option("untimed_steps", int, 3, "Steps run first, not timed.",
                       by={"bench-sample": 20}, check=not_negative)  # fmt: skip
VOCAB_SIZE = option("vocab_size", int, 96, "Vocabulary of the random token ids.",
                    check=at_least(1))  # fmt: skip


def forward_flops_per_token(config: ModelConfig) -> int:
    """Matmul FLOPs of one token's forward pass: each layer's own count (its cell's
    flops_per_token: 2 * G*H * (I + H) for lstm, gru and rnn, G = 4, 3, 1 weight blocks;
    I = E for the first layer, H above it), plus 2 * H * V for the decoder. The embedding
    lookup, gate nonlinearities and softmax are not counted (a few per cent here)."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = RNNLanguageModel(config)
    cells = sum(layer.flops_per_token() for layer in model.layers)
    return cells + 2 * config.hidden * config.vocab_size


@dataclass
class BenchResult:
    kind: str  # "train" | "sample"
    config: BenchConfig
    data: str  # what was read: random ids, or which corpus
    device: str
    device_name: str
    threads: int  # torch's CPU threads
    versions: dict
    date: str
    flops_per_token: int  # charrnn's model, per token of this kind (training: 3x the forward)
    reference_flops_per_token: int  # the reference's (nn.LSTM for a variant cell)
    peak_flops: float  # FLOP/s of the timed matmul
    peak_how: str
    memory_how: str
    ours: Measure
    reference: Measure

    @property
    def ratio(self) -> float:
        """How many times the reference's tokens/s charrnn makes."""
        return self.ours.tokens_per_sec / self.reference.tokens_per_sec

    def mfu(self, m: Measure) -> float:
        """Model FLOP utilisation: the model's own FLOP/s over the matmul peak."""
        flops = self.flops_per_token if m is self.ours else self.reference_flops_per_token
        return m.tokens_per_sec * flops / self.peak_flops

    def to_dict(self) -> dict:
        record = {**asdict(self), "ratio": self.ratio}
        for name in ("ours", "reference"):
            record[name]["mfu"] = self.mfu(getattr(self, name))
        return record


def random_ids(vocab_size: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, n).astype(np.int32)


class _Chars:
    """Trainer wants a tokenizer only to count characters: here one per token."""

    count_chars = staticmethod(len)
    count_words = staticmethod(len)  # (random ids have no words: the count is not shown)


# Training ------------------------------------------------------------------------------


def ours_train(config: BenchConfig, ids: np.ndarray, device: torch.device) -> Measure:
    """charrnn's own training step: Trainer.step, as fit() runs it, the loss read back
    only at the end (fit reads it every LOG_EVERY steps)."""
    torch.manual_seed(0)
    model = RNNLanguageModel(config.model).to(device).train()
    train = TrainConfig(  # a constant learning rate, as the reference's
        seq_len=config.seq_len, batch_size=config.batch_size, steps=config.steps,
        warmup_steps=0, min_lr_frac=1.0, precision=config.precision,
    )  # fmt: skip
    trainer = Trainer(Job(model, _Chars(), ids, ids[:2], train, device, Path("unused")))

    def step():
        trainer.since_eval.add(*trainer.step())

    seconds, memory, (nats, tokens) = time_steps(
        step, config.untimed_steps, config.steps, device, trainer.since_eval.take
    )
    n = config.steps * config.batch_size * config.seq_len
    return measure(n, seconds, config.steps, memory, nats / max(tokens, 1))


class ReferenceLM(nn.Module):
    """The plain model: nn.Embedding -> one multi-layer nn.LSTM/GRU/RNN -> nn.Linear."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.embedding)
        rnn = REFERENCE.get(config.cell, nn.LSTM)  # a variant cell's reference: nn.LSTM
        self.rnn = rnn(config.embedding, config.hidden, config.layers, batch_first=True)
        self.decoder = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, ids, state=None):
        out, state = self.rnn(self.embed(ids), state)  # [B, T, H]
        return self.decoder(out), state


def reference_train(config: BenchConfig, ids: np.ndarray, device: torch.device) -> Measure:
    """The plain loop: fp32, PyTorch's default AdamW, windows copied from the host each
    step, gradient clipping, and loss.item() every step."""
    torch.manual_seed(0)
    model = ReferenceLM(config.model).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=TrainConfig.lr, betas=(0.9, 0.99))
    streams = Streams.of(ids, config.batch_size)
    windows = streams.num_windows(config.seq_len)
    at = {"step": 0, "state": None, "losses": []}

    def step():
        i = at["step"] % windows
        at["step"] += 1
        x, y = streams.window(i, config.seq_len)  # each [B, T]
        x, y = x.to(device, torch.long), y.to(device, torch.long)
        logits, state = model(x, at["state"] if i else None)  # a new pass: a zero state
        if isinstance(state, tuple):  # nn.LSTM's (h, c); nn.GRU's and nn.RNN's a tensor
            at["state"] = tuple(s.detach() for s in state)
        else:
            at["state"] = state.detach()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        at["losses"].append(loss.item())

    seconds, memory, _ = time_steps(step, config.untimed_steps, config.steps, device)
    n = config.steps * config.batch_size * config.seq_len
    loss = float(np.mean(at["losses"][config.untimed_steps :]))
    return measure(n, seconds, config.steps, memory, loss)


def bench_train(config: BenchConfig, device, ids: np.ndarray | None = None, data: str = ""):
    """Time charrnn's training step and the plain reference on the same data: `ids`
    (of a corpus, described by `data`; config.vocab_size must be its vocabulary's), or
    else random token ids."""
    device = torch.device(device)
    need = config.batch_size * (config.seq_len + 1) + 2
    if ids is None:
        V = config.model.vocab_size
        ids = random_ids(V, max(need, config.batch_size * config.seq_len * 8))
        data = f"random token ids (V {V}, seed 0)"
    if len(ids) < need:
        raise ValueError(
            f"{data} has {len(ids):,} tokens; --batch-size {config.batch_size} "
            f"--seq-len {config.seq_len} needs at least {need:,}"
        )
    assert int(ids.max()) < config.model.vocab_size, "the model's vocab_size must cover the ids"
    flops = [TRAIN_FLOPS_FACTOR * forward_flops_per_token(m) for m in models(config)]
    dtype = PRECISIONS[config.precision] or torch.float32

    def both():
        return ours_train(config, ids, device), reference_train(config, ids, device)

    peak, peak_how, (ours, ref) = peak_around(device, dtype, both)
    return result("train", config, data, device, *flops, peak, peak_how, ours, ref)


# Sampling ------------------------------------------------------------------------------


def ours_sample(config: BenchConfig, device: torch.device) -> Measure:
    """charrnn's sampler: generate_ids (B samples at once, on the device, a CUDA graph
    on CUDA), temperature 1, no <eos> stop."""
    torch.manual_seed(0)
    model = RNNLanguageModel(config.model).to(device).eval()
    generator = torch.Generator(device).manual_seed(0)

    def run(length: int):
        sample = SampleConfig(length, num_samples=config.batch_size, stop_at_eos=False)
        return generate_ids(model, [0], sample, 0, generator)

    if config.untimed_steps:
        run(config.untimed_steps)
    sync(device)
    with PeakMemory(device) as memory:
        t0 = time.perf_counter()
        run(config.steps).cpu()  # the tokens come back to the host, once
        seconds = time.perf_counter() - t0
    return measure(config.steps * config.batch_size, seconds, config.steps, memory)


@torch.no_grad()
def reference_sample(config: BenchConfig, device: torch.device) -> Measure:
    """The plain loop: the whole model called on one token at a time, softmax,
    torch.multinomial, and the tokens read back to the host at every step."""
    torch.manual_seed(0)
    model = ReferenceLM(config.model).to(device).eval()
    generator = torch.Generator(device).manual_seed(0)
    at = {"x": torch.zeros(config.batch_size, 1, dtype=torch.long, device=device)}
    at["state"], at["tokens"] = None, []

    def step():
        logits, at["state"] = model(at["x"], at["state"])  # [B, 1, V]
        probs = logits[:, -1].softmax(-1)
        at["x"] = torch.multinomial(probs, 1, generator=generator)  # [B, 1]
        at["tokens"].append(at["x"].flatten().tolist())

    seconds, memory, _ = time_steps(step, config.untimed_steps, config.steps, device)
    return measure(config.steps * config.batch_size, seconds, config.steps, memory)


def bench_sample(config: BenchConfig, device):
    """Time charrnn's sampler and the plain reference loop, both fp32, random weights."""
    device = torch.device(device)
    flops = [forward_flops_per_token(m) for m in models(config)]

    def both():
        return ours_sample(config, device), reference_sample(config, device)

    peak, peak_how, (ours, ref) = peak_around(device, torch.float32, both)
    data = "an untrained model's own samples (random weights, seed 0)"
    return result("sample", config, data, device, *flops, peak, peak_how, ours, ref)


# Reporting -----------------------------------------------------------------------------


def models(config: BenchConfig) -> tuple[ModelConfig, ModelConfig]:
    """(charrnn's model, the reference's): the same shape, the reference's cell PyTorch's."""
    cell = config.model.cell if config.model.cell in REFERENCE else "lstm"
    return config.model, replace(config.model, cell=cell)


def result(kind, config, data, device, flops, ref_flops, peak, how, ours, ref) -> BenchResult:
    return BenchResult(
        kind, config, data, str(device), device_name(device), torch.get_num_threads(),
        versions(), date.today().isoformat(), flops, ref_flops, peak, how,
        PeakMemory.how(device), ours, ref,
    )  # fmt: skip


def corpus_ids(path: str) -> tuple[np.ndarray, int]:
    """(char token ids, vocabulary size) of a text file, for timing on real text."""
    text = corpus.read([path])
    tok, ids, _ = tokens.encode(text, TokenizerConfig("char"), "none")
    return ids, tok.vocab_size
