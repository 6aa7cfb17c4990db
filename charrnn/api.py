"""The Python API: what `import charrnn` offers, and what the commands are built on.

    run = charrnn.load("checkpoints/first", device="cpu")
    run.sample("ROMEO:", length=200, temperature=0.8, seed=1)   -> list[str]
    run.stream(...)                                             -> text as it is made
    run.score(text)                                             -> Metrics
    charrnn.train("input.txt", run_dir="checkpoints/x", steps=300, on_report=print) -> Run

Errors a user can cause are CharrnnError, with the one-line messages the commands print.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from charrnn import beam as beams
from charrnn import checkpoint, corpus, memory, neurons, runner, tokenizers, tokens
from charrnn import sample as sampling
from charrnn.errors import CharrnnError, ConfigError
from charrnn.metrics import Metrics, evaluate
from charrnn.model import Clamp, RNNLanguageModel, clamp_units, count_parameters
from charrnn.runconfig import RunConfig, read_config
from charrnn.tokenizers import Tokenizer
from charrnn.tokenizers.base import unknown_symbols
from charrnn.training.reports import Report


@dataclass
class Run:
    """A trained run, loaded: its best model, tokenizer and config; what `charrnn.load`
    returns, and what the commands sample, score and inspect."""

    dir: Path
    config: RunConfig
    model: RNNLanguageModel
    tokenizer: Tokenizer

    @property
    def device(self) -> torch.device:
        return self.model.decoder.weight.device

    def stream(
        self, prime: str = "", *, seed: int | None = None, on_unknown: str | None = None,
        allow_unk: bool = False, clamp: Clamp | None = None, **options,
    ) -> Iterator[str]:  # fmt: skip
        """Text as it is made (the prime not included): one sample piece by piece, or
        several (num_samples) each whole, in order. `options` are SampleConfig's settings
        by name (length, temperature, top_k, top_p, num_samples, beam); those not given
        take its defaults. `seed` None draws a new one; `clamp` {(layer, neuron): value}
        holds units of h; `on_unknown` (error, skip, unk; default: unk for a word model,
        else error) is for prime symbols the model never saw; a word model makes `<unk>`
        only with `allow_unk`. With `beam`, the num_samples likeliest texts by beam
        search, best first (no seed: deterministic)."""
        documents = self.config.corpus.documents
        config = sampling.sample_config(self.tokenizer, documents, allow_unk, **options)
        prime_ids = sampling.prime_ids(self.tokenizer, prime, on_unknown)
        samples = config.beam or config.num_samples  # made together, as one batch
        memory.check_sampling(self.model.config, samples, 1 if config.beam else len(prime_ids),
                              config.length, self.device)  # fmt: skip
        if clamp:
            clamp_units(self.model, clamp)  # its checks, before any text is made
            if config.beam:
                raise ConfigError("--clamp is for sampling; --beam searches the model as it is")
        if config.beam:
            found = beams.search(self.model, prime_ids, config.beam, config.length,
                                self.tokenizer.eos_id, config.banned_ids)  # fmt: skip
            return iter(beams.texts(found, self.tokenizer, prime_ids, config.num_samples))
        generator = torch.Generator(self.device)
        generator.manual_seed(seed) if seed is not None else generator.seed()
        # A model of documents starts each sample where it ended one itself (run_to_eos).
        burn_in = config.length if documents != "none" and not prime else 0
        return sampling.texts(
            self.model, self.tokenizer, prime_ids, config, generator, clamp, burn_in
        )

    def sample(self, prime: str = "", **options) -> list[str]:
        """The whole text of each sample, the prime not included (options: stream's)."""
        if (options.get("num_samples") or 1) > 1:
            return list(self.stream(prime, **options))
        return ["".join(self.stream(prime, **options))]

    def score(self, text: str, *, on_unknown: str | None = None, seq_len: int = 256) -> Metrics:
        """Loss, bits per character and perplexity of the model on `text`, read as the
        run's training text was (with its --documents). `on_unknown`: error (the default
        for models without <unk>), skip, or unk (word models' default)."""
        on_unknown = tokenizers.on_unknown_or_default(self.tokenizer, on_unknown)
        ids, _ = tokens.ids_of_text(self.tokenizer, text, self.config.corpus.documents,
                                    on_unknown)  # fmt: skip
        return score_ids(self, ids, seq_len)

    def score_files(
        self, sources: list[str], glob: str = "*", encoding_errors: str = "strict",
        on_unknown: str | None = None, seq_len: int = 256,
    ) -> tuple[Metrics, int, int]:  # fmt: skip
        """(metrics, <unk> tokens, characters skipped) of the model on files or folders,
        read as a corpus is (streamed, cached as token ids)."""
        on_unknown = tokenizers.on_unknown_or_default(self.tokenizer, on_unknown)
        text = corpus.read(sources, glob, encoding_errors)
        documents = self.config.corpus.documents
        if on_unknown == "error":
            unknown = sorted({s for chunk in text.chunks() for s in self.tokenizer.unknown(chunk)})
            if unknown:
                unknown_symbols(self.tokenizer, unknown)
        encoded = tokens.token_ids(text, self.tokenizer, documents, on_unknown)
        metrics = score_ids(self, encoded.ids, seq_len)
        skipped = text.chars - metrics.chars if on_unknown == "skip" and documents == "none" else 0
        return metrics, encoded.unknown, skipped

    def trace(self, text: str, *, on_unknown: str = "error") -> neurons.Trace:
        """Every layer's states and gates, and the model's guesses, at each token of
        `text`, read as training reads a text (after <eos>, from a zero state): what
        inspect-neurons shows. `on_unknown`: error, skip, or unk (word models)."""
        return neurons.trace_text(self.model, self.tokenizer, text, on_unknown)


def score_ids(run: Run, ids, seq_len: int) -> Metrics:
    if len(ids) < 2:
        raise ConfigError("the text is too short to score: it needs at least one token")
    if seq_len < 1:
        raise ConfigError(f"--seq-len must be at least 1, not {seq_len}")
    memory.check_scoring(run.model.config, len(ids), seq_len, run.device)
    return evaluate(run.model, ids, seq_len, run.tokenizer, run.device)


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """The best model of a run directory, with its tokenizer and config, on `device` (a run
    trained on a GPU loads on a CPU as it is: safetensors has no devices)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    tok = checkpoint.load_tokenizer(run_dir, config.model.vocab_size)
    model = checkpoint.load_best(run_dir, config.model, device).eval()
    return Run(run_dir, config, model, tok)


GRADIENT_KEYS = ("grad_norm_mean", "grad_norm_max", "clipped_frac")  # of metrics.jsonl


def describe(run: Run) -> dict:
    """What `charrnn info` shows: the settings, size, progress and versions of a run."""
    c, metrics = run.config, checkpoint.read_metrics(run.dir)
    best = next((m for m in metrics if m.get("step") == c.best_step), {})
    return {
        "run_dir": str(run.dir),
        "parameters": count_parameters(run.model),
        "step": c.step,
        "ended": c.ended,
        "best_val_loss": c.best_val_loss,
        "best_step": c.best_step,
        "best_val_bpc": best.get("val_bpc"),
        "best_val_word_perplexity": best.get("val_word_perplexity"),
        "best_averaged": bool(best.get("averaged")),  # model.safetensors holds an average
        "gradient": {k: metrics[-1][k] for k in GRADIENT_KEYS if metrics and k in metrics[-1]},
        "evaluations": len(metrics),
        "vocab_size": run.tokenizer.vocab_size,
        "world_size": c.world_size,
        **{
            name: part.to_dict()
            for name, part in (("model", c.model), ("train", c.train), ("tokenizer", c.tokenizer))
        },  # fmt: skip
        "corpus": {
            **c.corpus.to_dict(),
            "sources": list(c.sources),
            "files": c.files,
            "chars": c.chars,
        },  # fmt: skip
        "versions": c.versions,
        "init_from": asdict(c.init_from) if c.init_from else None,
    }


def train(
    corpus: str | Path | list[str | Path] | None = None,
    run_dir: str | Path | None = None,
    *,
    device: str = "auto",
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    on_report: Callable[[Report], None] | None = None,
    **settings,
) -> Run:
    """Train a new model on `corpus` (files, folders, or a built-in name; None: python),
    as `charrnn train` does, and return the trained run; or, with `resume`, carry that run
    on; with `init_from`, fine-tune that run's best model on `corpus` (its vocabulary
    grown: docs/finetune.md). `settings` are train's flags by their names (hidden=256,
    steps=500, tokenizer="word", ...); those left out take the defaults of the device. `on_report
    (report)` is called after every step and every evaluation (report.kind "step", "eval",
    ..., "done"; report.val after an evaluation). CharrnnError for a bad setting or corpus,
    or if training diverged or was stopped."""
    sources = [corpus] if isinstance(corpus, (str, Path)) else list(corpus or [])
    request = runner.Request(
        [str(s) for s in sources], settings, Path(run_dir) if run_dir else None,
        Path(resume) if resume else None, device,
        init_from=Path(init_from) if init_from else None,
    )  # fmt: skip
    with runner.Session(request) as session:
        for report in session.reports():
            if on_report is not None:
                on_report(report)
        last, out = session.last, session.run_dir
    if last.kind == "stopped":  # last/ is saved: a Python caller gets the signal's exception
        if last.signal == signal.SIGINT:
            raise KeyboardInterrupt(f"training stopped; last/ saved; resume={str(out)!r}")
        raise SystemExit(128 + last.signal)
    if last.kind != "done":
        raise CharrnnError(last.message or f"training {last.kind}")
    return load(out, session.device)
