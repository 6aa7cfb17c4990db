"""The batching engine: every request for one model made in one batch, a step at a time.

One `Engine` per served model, and one worker thread per engine that owns the model's
batch; the event loop only hands it jobs and reads what it delivers, so it is never
blocked by the model. The batch is B rows, one per choice being made:

    logits [B, V]      what the model says comes next, per row
    state  each [L, B, H] (the cell's state_names: h, or h and c, ...)
    rows   [B] Row: its Choice (text, stop sequences, logprobs), sampling settings, and
           its own torch.Generator when the request gave a seed

A step picks one token per row (per-row temperature, top_k and top_p, the ids the model
never makes banned as `charrnn sample` bans them), hands each row's token to its Choice,
drops the rows that have ended or whose client has gone, and runs `model.step` once on
the rest. Between steps, new jobs join: a job's prompt is read in chunks of PREFILL_CHUNK
tokens, one chunk per step (so a long prompt does not stall the others), from a zero
state after <eos>, as `charrnn sample` reads a prime; its n rows then join the batch with
that state. A row with a seed draws from its own generator (choice j of a request from
seed + j), so its text is the same whatever else is in the batch, and choice 0 makes
the text `charrnn sample --seed` makes (up to the rounding of a matmul by batch size,
which could tip a draw that falls on a boundary).

What a step made is delivered with one call of `deliver([(job, deltas or an exception)])`,
which the app makes safe to call from this thread: a streamed job gets its deltas every
step, another one its whole choices once they have all ended.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from charrnn import ngram
from charrnn.api import Run
from charrnn.sample import Pieces, filter_logits, sample_config
from charrnn.serve.choices import Choice, Delta
from charrnn.serve.protocol import Sampling

PREFILL_CHUNK = 256  # prompt tokens read per step, per job being read
log = logging.getLogger("charrnn.serve")


@dataclass(eq=False)
class Job:
    """One prompt of a request: its choices, made as rows of the batch."""

    prime: list[int]  # <eos> then the prompt's ids
    choices: list[Choice]
    sampling: Sampling
    cancelled: bool = False  # set by the app when the client has gone
    done: bool = False  # every choice has ended (or the job failed)
    read: int = 0  # prompt tokens read so far
    state: tuple[Tensor, ...] | None = None
    logits: Tensor | None = None  # [1, V] after the last token read
    history: Tensor | None = None  # [1, N-1]: with an n-gram (--ngram), its last tokens
    echo: list = field(default_factory=list)  # the prompt's logprobs entries, if asked for
    inbox: Any = None  # the app's: where its deliveries go


@dataclass(eq=False)
class Row:
    job: Job
    choice: Choice
    generator: torch.Generator | None


Delivery = list[tuple[Job, "list[Delta] | BaseException"]]


class Engine:
    """The worker of one model. `submit(job)`, `cancel(job)`, `close()` are called from
    the event loop; everything else runs in the worker thread."""

    def __init__(self, run: Run, deliver: Callable[[Delivery], None]):
        self.run, self.model, self.tokenizer = run, run.model, run.tokenizer
        self.deliver = deliver
        config = sample_config(run.tokenizer, run.config.corpus.documents)
        V, device = run.config.model.vocab_size, run.device
        self.banned = torch.zeros(V, dtype=torch.bool, device=device)
        self.banned[list(config.banned_ids)] = True
        self.generator = torch.Generator(device)
        self.generator.seed()
        self.rows: list[Row] = []
        self.logits: Tensor | None = None
        self.state: tuple[Tensor, ...] | None = None
        self.history: Tensor | None = None  # with an n-gram: each row's last tokens [B, N-1]
        self.pending: list[Job] = []
        self.reading: list[Job] = []
        self.wake = threading.Condition()
        self.closed = False
        self.steps = self.tokens = 0  # model steps taken, tokens made: their ratio is the batch
        self.thread = threading.Thread(target=self._loop, name=f"charrnn-{run.dir.name}",
                                       daemon=True)  # fmt: skip
        self.thread.start()

    # Called from the event loop --------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self.wake:
            self.pending.append(job)
            self.wake.notify()

    def cancel(self, job: Job) -> None:
        job.cancelled = True  # read by the worker at the next step boundary

    def close(self, timeout: float = 10.0) -> None:
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join(timeout)

    @property
    def busy(self) -> int:
        """Rows in the batch now."""
        return len(self.rows)

    # The worker ----------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self.wake:
                    while not (self.pending or self.reading or self.rows or self.closed):
                        self.wake.wait()
                    if self.closed:
                        break
                    self.reading += self.pending
                    self.pending = []
                try:
                    self._read_prompts()
                    if self.rows:
                        self._step()
                except Exception as error:  # a bug: its jobs fail, the server serves on
                    log.exception("the engine of %s failed", self.run.dir.name)
                    self._fail(error)
        self._fail(RuntimeError("the server is shutting down"))

    def _fail(self, error: BaseException) -> None:
        jobs = {id(r.job): r.job for r in self.rows} | {id(j): j for j in self.reading}
        with self.wake:
            jobs |= {id(j): j for j in self.pending}
            self.pending = []
        self.rows, self.reading, self.logits, self.state = [], [], None, None
        self.history = None
        for job in jobs.values():
            job.done = True
        if jobs:
            self.deliver([(job, error) for job in jobs.values()])

    def _read_prompts(self) -> None:
        """One chunk of each prompt being read; a prompt read whole joins the batch."""
        still: list[Job] = []
        for job in self.reading:
            if job.cancelled:
                continue
            chunk = torch.tensor([job.prime[job.read : job.read + PREFILL_CHUNK]],
                                 device=self.run.device)  # [1, T]  # fmt: skip
            logits, job.state = self.model(chunk, job.state)  # [1, T, V]
            if job.sampling.echo and job.sampling.logprobs is not None:
                self._echo_logprobs(job, logits[0])
            job.read += chunk.shape[1]
            if job.read < len(job.prime):
                still.append(job)
            else:  # what follows the whole prompt (with an n-gram: the mixture, after it)
                job.history = ngram.histories(self.model, job.prime, [job.read], self.run.device)
                job.logits = ngram.next_log_probs(self.model, logits[:, -1], job.history)
                self._join(job)
        self.reading = still

    def _echo_logprobs(self, job: Job, logits: Tensor) -> None:
        """The logprobs of the prompt's tokens that a chunk's logits [T, V] predict:
        logits[t] predicts prime[read + t + 1] (prime[0], <eos>, is no text)."""
        targets = job.prime[job.read + 1 : job.read + 1 + logits.shape[0]]
        ends = range(job.read + 1, job.read + 1 + len(targets))  # with an n-gram: its history
        history = ngram.histories(self.model, job.prime, ends, self.run.device)
        logits = ngram.next_log_probs(self.model, logits[: len(targets)], history)
        logp = logits.float().log_softmax(-1)  # [T or T - 1, V]
        chosen = logp.gather(1, torch.tensor(targets, device=logp.device)[:, None])[:, 0]
        top = self._top(logp, job.sampling.logprobs)
        job.echo += list(zip(targets, chosen.tolist(), top))

    def _top(self, logp: Tensor, k: int) -> list[dict[str, float] | None]:
        if k == 0:
            return [None] * len(logp)
        values, ids = logp.topk(k, -1)
        return [{self.tokenizer.token_text(i): v for i, v in zip(row_ids, row_values)}
                for row_ids, row_values in zip(ids.tolist(), values.tolist())]  # fmt: skip

    def _join(self, job: Job) -> None:
        """A job's rows into the batch, each with the state after its prompt."""
        entries = self._echo_entries(job) if job.echo else []
        rows = []
        for j, choice in enumerate(job.choices):
            choice.echo_logprobs(entries)
            generator = None
            if job.sampling.seed is not None:
                generator = torch.Generator(self.run.device)
                generator.manual_seed((job.sampling.seed + j) % 2**63)
            rows.append(Row(job, choice, generator))
        n = len(rows)
        logits, state = job.logits.expand(n, -1), tuple(s.expand(-1, n, -1) for s in job.state)
        history = job.history.expand(n, -1) if job.history is not None else None
        job.logits = job.state = job.history = None
        if self.rows:
            logits = torch.cat([self.logits, logits])  # [B + n, V]
            state = tuple(torch.cat([a, b], 1) for a, b in zip(self.state, state))
            history = torch.cat([self.history, history]) if history is not None else None
        self.logits, self.state = logits.contiguous(), tuple(s.contiguous() for s in state)
        self.history = history
        self.rows += rows
        self._settings()
        if all(c.finish for c in job.choices):  # max_tokens 0: nothing to make
            self._after([])

    def _echo_entries(self, job: Job) -> list[tuple[str, float, dict | None, int]]:
        """(token, logprob, top, text_offset) of each prompt token."""
        pieces, offset, out = Pieces(self.tokenizer, job.prime[:1]), 0, []
        for token, logprob, top in job.echo:
            out.append((self.tokenizer.token_text(token), logprob, top, offset))
            offset += len(pieces.add(token))
        return out

    def _settings(self) -> None:
        """The rows' sampling settings as tensors [B], after rows joined or left."""
        device, rows = self.run.device, self.rows
        sampling = [r.job.sampling for r in rows]
        self.temperature = torch.tensor([s.temperature for s in sampling], device=device)
        self.greedy = self.temperature == 0
        self.all_greedy = bool(self.greedy.all())
        self.top_k = [(r, s.top_k) for r, s in enumerate(sampling) if s.top_k is not None]
        self.top_p_rows = torch.tensor([r for r, s in enumerate(sampling) if s.top_p < 1.0],
                                       dtype=torch.long, device=device)  # fmt: skip
        self.top_p = torch.tensor([s.top_p for s in sampling], device=device)
        self.seeded = [(r, row.generator) for r, row in enumerate(rows) if row.generator]
        self.logprobs = max((s.logprobs for s in sampling if s.logprobs is not None), default=None)

    def _pick(self, logits: Tensor) -> Tensor:
        """One token per row of logits [B, V] -> [B]: sample.pick's draw, argmax(p / q)
        with q ~ Exp(1), row by row settings; a seeded row's q from its own generator."""
        logits = logits.masked_fill(self.banned, -math.inf)
        best = logits.argmax(-1)
        if self.all_greedy:
            return best
        scaled = logits.float() / torch.where(self.greedy, 1.0, self.temperature)[:, None]
        for r, k in self.top_k:  # few rows ask for top_k: each its own k
            scaled[r] = filter_logits(scaled[r : r + 1], k, None)[0]
        if len(self.top_p_rows):
            rows = self.top_p_rows
            scaled[rows] = filter_logits(scaled[rows], None, self.top_p[rows, None])
        probs = scaled.softmax(-1)
        q = torch.empty_like(probs).exponential_(generator=self.generator)
        for r, generator in self.seeded:
            q[r].exponential_(generator=generator)
        return torch.where(self.greedy, best, (probs / q).argmax(-1))

    def _step(self) -> None:
        """Pick a token per row, hand it to its choice, drop the rows that have ended,
        and run the model one step on the rest."""
        ids = self._pick(self.logits)  # [B]
        tokens, eos = ids.tolist(), self.tokenizer.eos_id
        self.steps, self.tokens = self.steps + 1, self.tokens + len(tokens)
        chosen = top = None
        if self.logprobs is not None:  # the model's own distribution, as OpenAI reports it
            logp = self.logits.float().log_softmax(-1)
            chosen = logp.gather(1, ids[:, None])[:, 0].tolist()
            top = self._top(logp, self.logprobs)
        for r, (row, token) in enumerate(zip(self.rows, tokens)):
            if row.choice.finish is None and not row.job.cancelled:
                k = row.job.sampling.logprobs
                best = None if top is None or not k else dict(list(top[r].items())[:k])
                lp = chosen[r] if chosen is not None and k is not None else None
                row.choice.add(token, token == eos, lp, best)
        self.history = ngram.push(self.history, ids)
        kept = self._after(tokens)
        if kept:
            ids = ids[kept] if len(kept) < len(tokens) else ids
            logits, self.state = self.model.step(ids, self.state)
            self.logits = ngram.next_log_probs(self.model, logits, self.history)

    def _after(self, tokens: list[int]) -> list[int] | None:
        """Deliver what the step made; keep the rows still going (their indices)."""
        delivery: Delivery = []
        jobs = {id(r.job): r.job for r in self.rows}
        for job in jobs.values():
            if job.cancelled:
                job.done = True
                continue
            job.done = all(c.finish for c in job.choices)
            if job.sampling.stream:
                deltas = [d for c in job.choices if (d := c.take()) is not None]
            else:
                deltas = [c.result() for c in job.choices] if job.done else []
            if deltas:
                delivery.append((job, deltas))
        kept = [r for r, row in enumerate(self.rows)
                if not row.job.done and row.choice.finish is None]  # fmt: skip
        if len(kept) < len(self.rows):
            index = torch.tensor(kept, dtype=torch.long, device=self.run.device)
            self.rows = [self.rows[r] for r in kept]
            self.logits = self.logits[index]
            self.state = tuple(s[:, index].contiguous() for s in self.state)
            self.history = self.history[index] if self.history is not None else None
            self._settings()
        if delivery:
            self.deliver(delivery)
        return kept
