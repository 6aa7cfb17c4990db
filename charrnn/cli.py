"""The `charrnn` command: a thin Typer adapter over the library, and the only module that prints.

stdout carries only the product: sampled text, the report `info`, `eval` and
`inspect-neurons` exist to print, or JSON when asked; the progress and tables of
training go to stderr. A user's mistake ends in one line on stderr
and exit code 2, with nothing half-written.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from charrnn import __version__, checkpoint, corpus, data, distributed, neurons, tokens
from charrnn import sample as sampling
from charrnn import tokenizer as tokenizers
from charrnn.distributed import SINGLE, World
from charrnn.model import ModelConfig, RNNLanguageModel, count_parameters
from charrnn.train import TrainConfig, evaluate, fit, recipe, resolve_precision, set_deterministic

app = typer.Typer(
    help="Train recurrent language models on any text, sample from them, look inside them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""


@contextmanager
def user_errors():
    """Turn every error the user can cause into one line on stderr and exit code 2."""
    try:
        yield
    except (UsageError, corpus.CorpusError, checkpoint.CheckpointError, ValueError) as e:
        typer.echo(f"charrnn: error: {e}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def parse_duration(text: str) -> float:
    """'90' or '90s' -> 90.0, '3m' -> 180.0, '1h30m' -> 5400.0 seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "": 1}
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)\s*([hms]?)\s*)+", text or "")
    if not parts:
        raise typer.BadParameter(f"{text!r} is not a duration (examples: 90s, 3m, 1h30m)")
    seconds = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([hms]?)", text))
    if seconds <= 0:
        raise typer.BadParameter(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m or h else "") + f"{s}s"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise typer.BadParameter(f"{name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter(f"{name}: CUDA is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise typer.BadParameter(f"{name!r}: charrnn runs on cpu or cuda")
    return device


# Options shared by several commands, defined once.
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]
Glob = Annotated[str, typer.Option(help="Which files to read from folders.")]
EncodingErrors = Annotated[
    str, typer.Option(help="strict: stop at invalid UTF-8; replace: read it as U+FFFD.")
]
Run = Annotated[Path, typer.Argument(help="A run directory made by `charrnn train`.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")]
OnUnknown = Annotated[
    str, typer.Option(help="Unknown symbols in the prime: error | skip | unk (to <unk>).")
]
Precision = Annotated[
    Optional[str],
    typer.Option(help="auto | fp32 | fp16 | bf16 (autocast, CUDA only). auto: fp32 for now."),
]


def check_encoding_errors(value: str) -> str:
    if value not in ("strict", "replace"):
        raise typer.BadParameter(f"--encoding-errors must be strict or replace, not {value!r}")
    return value


# train ---------------------------------------------------------------------------------


class StopFlag:
    """Set by SIGINT/SIGTERM: training saves last/ at the next step and exits 130/143.
    A second signal stops at once."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def handle(self, signum, frame):
        if self.signum is not None:
            raise SystemExit(128 + signum)
        self.signum = signum

    @contextmanager
    def installed(self):
        old = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


MODEL_FLAGS = ("cell", "layers", "hidden", "embedding", "dropout", "tie_weights")


def model_and_train_configs(opts: dict, vocab_size: int, device: torch.device):
    """Fill options left unset from the device's recipe; return (model, train) configs."""
    defaults = recipe(device)
    given = {k: v for k, v in opts.items() if v is not None}
    if not any(k in given for k in ("steps", "epochs", "time_budget")):
        given["time_budget"] = defaults["time_budget"]
    merged = {**{k: v for k, v in defaults.items() if k != "time_budget"}, **given}
    model_fields = {k: merged.pop(k) for k in MODEL_FLAGS if k in merged}
    return ModelConfig(vocab_size=vocab_size, **model_fields), TrainConfig(**merged)


def describe(
    model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, world: World = SINGLE
) -> str:
    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    where, batch = f"{device}", f"--batch-size {train_cfg.batch_size}"
    if world.size > 1:
        where = f"{world.size} ranks x {device.type}"
        n, b = world.size, train_cfg.batch_size
        batch += f" per rank ({n} ranks x batch {b} = {n * b} streams)"
    duration = (
        f"--steps {train_cfg.steps}" if train_cfg.steps else
        f"--epochs {train_cfg.epochs:g}" if train_cfg.epochs else
        f"--time-budget {format_duration(train_cfg.time_budget)}"
    )  # fmt: skip
    return (
        f"charrnn {__version__} on {where}{threads}: --cell {model_cfg.cell} "
        f"--layers {model_cfg.layers} --hidden {model_cfg.hidden} "
        f"--embedding {model_cfg.embedding} "
        f"--dropout {model_cfg.dropout:g} {batch} "
        f"--seq-len {train_cfg.seq_len} --lr {train_cfg.lr:g} "
        f"--min-lr-frac {train_cfg.min_lr_frac:g} {duration} "
        f"(defaults for {device.type}; flags override)"
    )


def default_run_dir(sources: list[str], cell: str) -> Path:
    name = Path(sources[0]).stem if sources else "python"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("checkpoints") / f"{name or 'corpus'}-{cell}-{stamp}"


def fit_batch_size(
    train_cfg: TrainConfig, n_train: int, n_val: int, ranks: int = 1
) -> tuple[TrainConfig, str]:
    """Shrink the batch (per rank) for a small corpus, returning a note that says so;
    refuse a corpus too small to train on."""
    streams = data.max_batch_size(n_train, train_cfg.seq_len)
    if 1 <= streams < ranks:
        raise UsageError(
            f"the corpus fills only {streams} streams of --seq-len {train_cfg.seq_len}, fewer "
            f"than the {ranks} ranks; give more text, a shorter --seq-len or fewer ranks"
        )
    most = streams // ranks
    if most < 1 or n_val < 2:
        raise UsageError(
            f"the corpus is too small: {n_train} training and {n_val} validation tokens "
            f"cannot fill one window of --seq-len {train_cfg.seq_len}; give more text or a "
            "shorter --seq-len"
        )
    if most < train_cfg.batch_size:
        per_rank = f" ({most} per rank)" if ranks > 1 else ""
        note = (
            f"note: the corpus fills only {most * ranks} streams of --seq-len "
            f"{train_cfg.seq_len}{per_rank}; using --batch-size {most} instead of "
            f"{train_cfg.batch_size}"
        )
        return TrainConfig(**{**train_cfg.to_dict(), "batch_size": most}), note
    return train_cfg, ""


@app.command()
def train(
    sources: Annotated[
        Optional[list[str]],
        typer.Argument(metavar="[CORPUS]...", help="Files, folders, or `python` (the default)."),
    ] = None,
    glob: Glob = "*",
    encoding_errors: EncodingErrors = "strict",
    tokenizer: Annotated[
        Optional[str], typer.Option(help="char | word | bpe | unigram (default char).")
    ] = None,
    vocab_size: Annotated[
        Optional[int], typer.Option(help="Tokens kept: word 10000, bpe/unigram 2000.")
    ] = None,
    min_count: Annotated[
        Optional[int], typer.Option(help="word: rarer words become <unk> (default 1).")
    ] = None,
    documents: Annotated[
        Optional[str],
        typer.Option(help="none | lines | paragraphs | files: <eos> after each document."),
    ] = None,
    cell: Annotated[Optional[str], typer.Option(help="lstm | gru | rnn")] = None,
    layers: Annotated[Optional[int], typer.Option(help="Stacked recurrent layers.")] = None,
    hidden: Annotated[Optional[int], typer.Option(help="Units per layer.")] = None,
    embedding: Annotated[Optional[int], typer.Option(help="Token embedding size.")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout between layers.")] = None,
    tie_weights: Annotated[
        Optional[bool],
        typer.Option("--tie-weights/--no-tie-weights", help="Share embedding and decoder."),
    ] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Tokens per BPTT window.")] = None,
    batch_size: Annotated[
        Optional[int], typer.Option(help="Parallel streams of text (per rank with torchrun).")
    ] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Linear warmup steps.")] = None,
    min_lr_frac: Annotated[
        Optional[float], typer.Option(help="The schedule ends at lr * this.")
    ] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay.")] = None,
    grad_clip: Annotated[
        Optional[float], typer.Option(help="Clip the gradient norm (0: off).")
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Train for this many steps.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Train for this many passes.")] = None,
    time_budget: Annotated[
        Optional[str],
        typer.Option(help="Train for this long: 90s, 3m, 1h (evaluations not counted)."),
    ] = None,
    eval_every: Annotated[
        Optional[int], typer.Option(help="Evaluate and save every N steps.")
    ] = None,
    val_frac: Annotated[
        Optional[float], typer.Option(help="Last part of the text held out.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for everything random.")] = None,
    deterministic: Annotated[
        Optional[bool],
        typer.Option("--deterministic/--no-deterministic", help="PyTorch's deterministic mode."),
    ] = None,
    device: Device = "auto",
    precision: Precision = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Where to save the run.")] = None,
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue the run in this directory.")
    ] = None,
    collective_timeout: Annotated[
        str, typer.Option(help="With torchrun: how long a rank waits for the others, then fails.")
    ] = "10m",
):
    """Train a model on CORPUS and save it in a run directory (on several GPUs or nodes when
    started by torchrun)."""
    dev = resolve_device(device)
    check_encoding_errors(encoding_errors)
    budget = parse_duration(time_budget) if time_budget is not None else None
    tokens_given = dict(
        tokenizer=tokenizer, vocab_size=vocab_size, min_count=min_count, documents=documents
    )
    timeout = parse_duration(collective_timeout)
    with user_errors():
        world = distributed.from_env()
    if world.size > 1 and dev.type == "cuda" and device not in ("auto", "cuda"):
        raise typer.BadParameter(
            f"--device {device}: under torchrun each rank uses the GPU of its LOCAL_RANK; "
            "give --device cuda or auto"
        )
    if not world.is_main:
        err.quiet = True  # only rank 0 renders; every rank still prints its errors
    given = dict(
        cell=cell, layers=layers, hidden=hidden, embedding=embedding, dropout=dropout,
        tie_weights=tie_weights, seq_len=seq_len, batch_size=batch_size, lr=lr,
        warmup_steps=warmup_steps, min_lr_frac=min_lr_frac, weight_decay=weight_decay,
        grad_clip=grad_clip, steps=steps, epochs=epochs, time_budget=budget,
        eval_every=eval_every, val_frac=val_frac, seed=seed, deterministic=deterministic,
    )  # fmt: skip
    if sum(v is not None for v in (steps, epochs, budget)) > 1:
        raise typer.BadParameter("give one of --steps, --epochs, --time-budget")
    with user_errors():
        dev = distributed.rank_device(world, dev)
        if precision is not None or resume is None:  # a resumed run keeps its own
            given["precision"] = resolve_precision(precision or "auto", dev)
    with user_errors(), distributed.group(world, dev, timeout) as world:
        if resume is not None:
            if run_dir is not None and run_dir != resume:
                raise UsageError("--resume names the run directory; leave out --run-dir")
            given.update(tokens_given)
            setup = resume_run(resume, sources or [], glob, encoding_errors, given, dev, world)
        else:
            text = corpus.read(sources or [], glob, encoding_errors)
            setup = new_run(sources or [], text, tokens_given, given, dev, run_dir, world)
        model, tok, train_cfg, train_ids, val_ids, out, saved = setup
        if train_cfg.deterministic:
            set_deterministic()
        stop = StopFlag()
        with stop.installed(), collectives_failing(world, out):
            reports = fit(model, tok, train_ids, val_ids, train_cfg, dev, out, saved, stop, world)
            last = render_training(reports, train_cfg) if world.is_main else last_of(reports)
    if last is not None and last.kind == "diverged":
        raise typer.Exit(1)
    if last is not None and last.kind == "stopped":
        err.print(
            f"stopped by signal; last/ saved in {out}; continue with: charrnn train --resume {out}"
        )
        # on several ranks, one may stop because another was signalled
        raise typer.Exit(128 + (stop.signum or signal.SIGTERM))
    render_summary(out, last)


def last_of(reports):
    """Run fit() to the end without showing it (ranks other than 0)."""
    last = None
    for last in reports:  # noqa: B007 - the last one is the result
        pass
    return last


@contextmanager
def collectives_failing(world: World, out: Path):
    """On several ranks, an error on this one (most often a collective that failed because
    another rank died, or one that waited past --collective-timeout): one line, exit 1.
    Rank 0 alone writes, atomically, so the saved checkpoints are intact."""
    if world.size == 1:
        yield
        return
    try:
        yield
    except RuntimeError as e:  # gloo's lost peer is a bare RuntimeError, NCCL's a DistError
        lines = str(e).strip().splitlines()
        reason = f"{type(e).__name__}: {lines[0][:300] if lines else ''}"
        typer.echo(
            f"charrnn: error: rank {world.rank} of {world.size} stops ({reason}); if another "
            f"rank died, its error or torchrun's summary says why. The checkpoints saved so far "
            f"are intact: continue with charrnn train --resume {out}",
            err=True,
        )
        raise typer.Exit(1) from None


def encode(text: corpus.Corpus, tok_cfg: tokenizers.TokenizerConfig, documents: str):
    """(tokenizer, token ids, a line that says how they were made) of a corpus; from the
    cache when this text was seen before."""
    tok, _ = tokens.fit_tokenizer(text, tok_cfg, documents)
    encoded = tokens.token_ids(text, tok, documents)
    if encoded.cached:
        how = f"token ids from the cache in {tokens.cache_dir()}"
    else:
        mb = text.chars / 1e6
        how = (
            f"encoded {mb:,.1f}M chars in {encoded.seconds:.1f}s "
            f"({mb / max(encoded.seconds, 1e-9):,.1f}M chars/s), cached in {tokens.cache_dir()}"
        )
    if encoded.unknown:
        how += f"; {encoded.unknown:,} tokens ({encoded.unknown / len(encoded.ids):.2%}) are <unk>"
    return tok, encoded.ids, how


def new_run(sources, text, tokens_given, given, dev, run_dir, world: World = SINGLE):
    """Every rank reads the corpus and builds the same model; rank 0 encodes it first (the
    others then read the token cache) and creates the run directory."""
    documents = tokens_given["documents"] or "none"
    if documents not in corpus.DOCUMENTS:
        raise UsageError(f"--documents {documents}: choose {' | '.join(corpus.DOCUMENTS)}")
    tok_cfg = tokenizers.TokenizerConfig(
        kind=tokens_given["tokenizer"] or "char",
        vocab_size=tokens_given["vocab_size"],
        min_count=tokens_given["min_count"] or 1,
    )
    if world.is_main:
        tok, ids, how = encode(text, tok_cfg, documents)
    world.barrier()
    if not world.is_main:
        tok, ids, how = encode(text, tok_cfg, documents)
    model_cfg, train_cfg = model_and_train_configs(given, tok.vocab_size, dev)
    train_ids, val_ids = data.split(ids, train_cfg.val_frac)
    train_cfg, note = fit_batch_size(train_cfg, len(train_ids), len(val_ids), world.size)
    if world.size > 1 and run_dir is None:
        raise UsageError("with torchrun, give --run-dir: the ranks must agree on where to save")
    out = run_dir or default_run_dir(sources, model_cfg.cell)
    if world.is_main and (out / checkpoint.CONFIG).exists():
        raise UsageError(
            f"{out} already holds a run; continue it with --resume {out} or pick another --run-dir"
        )
    err.print(describe(model_cfg, train_cfg, dev, world))
    if note:
        err.print(note, style="yellow")
    err.print(
        f"corpus: {', '.join(sources) or 'python (the standard library)'}: "
        f"{len(text.files)} files, {text.chars:,} chars, {tok.vocab_size:,} {tok.kind} "
        f"tokens in the vocabulary; {len(train_ids):,} train / {len(val_ids):,} val tokens"
    )
    err.print(how, style="dim")
    torch.manual_seed(train_cfg.seed)
    model = RNNLanguageModel(model_cfg).to(dev)
    config = {
        "model": model_cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "tokenizer": {
            "type": tok.kind, "vocab_size": tok.vocab_size,  # what the fit gave
            "requested_vocab_size": tok_cfg.vocab_size, "min_count": tok_cfg.min_count,
        },
        "corpus": {
            "sources": sources, "glob": text.glob, "encoding_errors": text.encoding_errors,
            "documents": documents, "files": len(text.files), "chars": text.chars,
            "sha256": text.sha256,
        },
        "versions": {
            "charrnn": __version__, "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "step": 0, "best_val_loss": None, "best_step": None,
        "world_size": world.size,  # ranks of the last session: batch_size is per rank
    }  # fmt: skip
    if world.is_main:
        checkpoint.create_run(out, config, tok)
    return model, tok, train_cfg, train_ids, val_ids, out, None


def resume_run(run: Path, sources, glob, encoding_errors, given, dev, world: World = SINGLE):
    """Every rank reads the run directory (on several nodes it must be on a shared
    filesystem). On another number of ranks the run keeps its streams: each rank reads
    streams / ranks of them."""
    config = checkpoint.read_config(run)
    tok = checkpoint.load_tokenizer(run, config)
    saved_model, saved_train = config["model"], config["train"]
    stored_tokens = {
        "tokenizer": config["tokenizer"]["type"],
        "vocab_size": config["tokenizer"].get("requested_vocab_size"),
        "min_count": config["tokenizer"].get("min_count", 1),
        "documents": config["corpus"].get("documents", "none"),
    }
    ranks, note = config.get("world_size", 1), ""
    if ranks != world.size:
        streams = saved_train["batch_size"] * ranks
        if streams % world.size:
            raise UsageError(
                f"{run} reads {streams} streams ({ranks} ranks x --batch-size "
                f"{saved_train['batch_size']}); {world.size} ranks cannot share them evenly: "
                f"resume on a number of ranks that divides {streams}"
            )
        saved_train = {**saved_train, "batch_size": streams // world.size}
        note = (
            f"it read {streams} streams as {ranks} x batch {config['train']['batch_size']}; on "
            f"{world.size} ranks it reads the same streams, {streams // world.size} per rank"
        )
    for name, value in given.items():
        if name in ("steps", "epochs", "time_budget") or value is None:
            continue
        stored = {**saved_train, **saved_model, **stored_tokens}.get(name)
        if stored != value:
            raise UsageError(
                f"--{name.replace('_', '-')} {value} differs from the run's {stored}; a resumed "
                "run keeps its settings (start a new run to change them)"
            )
    duration = {k: given[k] for k in ("steps", "epochs", "time_budget")}
    if any(v is not None for v in duration.values()):
        saved_train = {**saved_train, **duration}  # a resumed run may be given more time
    train_cfg = TrainConfig(**saved_train)
    stored = config["corpus"]
    text = corpus.read(sources or stored["sources"], stored["glob"], stored["encoding_errors"])
    if text.sha256 != stored["sha256"]:
        raise UsageError(
            f"the corpus differs from the one {run} was trained on ({stored['chars']:,} chars, "
            f"sha256 {stored['sha256'][:12]}...); resume with the same text"
        )
    encoded = tokens.token_ids(text, tok, stored_tokens["documents"])
    train_ids, val_ids = data.split(encoded.ids, train_cfg.val_frac)
    model, saved = checkpoint.load_last(run, dev)
    if world.is_main:
        checkpoint.remove_leftovers(run)
        if train_cfg != TrainConfig(**config["train"]) or ranks != world.size:
            checkpoint.update_config(run, {"train": train_cfg.to_dict(), "world_size": world.size})
    err.print(
        describe(model.config, train_cfg, dev, world).replace("(defaults", "(resumed; defaults")
    )
    err.print(f"resuming {run} at step {saved['progress']['step']}" + (f"; {note}" if note else ""))
    return model, tok, train_cfg, train_ids, val_ids, run, saved


def render_training(reports, train_cfg: TrainConfig):
    """Show fit()'s reports: a progress bar, a table and a sample at each evaluation."""
    by_time = train_cfg.time_budget is not None
    progress = Progress(
        TextColumn("step {task.fields[step]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    last = None
    with progress:
        task = progress.add_task("train", total=None, step=0, loss="-", val="-", tps="-")
        for report in reports:
            last = report
            p = report.progress
            total = train_cfg.time_budget if by_time else report.total_steps
            fields = {
                "step": f"{p.step}" + (f"/{report.total_steps}" if report.total_steps else "")
            }
            if report.loss is not None:
                fields.update(loss=f"{report.loss:.3f}", tps=f"{report.tokens_per_sec:,.0f}")
            if report.val is not None:
                fields["val"] = f"{report.val.loss:.3f}"
                progress.console.print(eval_table(report))
                progress.console.print(
                    Panel(
                        Text(report.sample or ""),
                        title=f"sample at step {p.step}",
                        title_align="left",
                    )
                )
            if report.message:
                style = "bold red" if report.kind == "diverged" else "yellow"
                progress.console.print(f"{report.kind}: {report.message}", style=style)
            progress.update(task, total=total, completed=p.elapsed if by_time else p.step, **fields)
    return last


def eval_table(report) -> Table:
    p = report.progress
    table = Table(
        title=f"step {p.step} · epoch {p.epoch + 1} · {p.tokens:,} tokens · "
        f"{format_duration(p.elapsed)}",
        title_justify="left",
    )
    for col in ("", "loss (nats/token)", "bits/char", "perplexity"):
        table.add_column(col, justify="right")
    for name, m in (("train", report.train), ("val", report.val)):
        if m is None:
            continue
        table.add_row(name, f"{m.loss:.4f}", f"{m.bpc:.4f}", f"{m.perplexity:.2f}")
    best = (
        "new best: saved model.safetensors"
        if report.improved
        else f"best {p.best_val_loss:.4f} at step {p.best_step}"
    )
    table.caption = best
    return table


def render_summary(run_dir: Path, last) -> None:
    if last is None:
        return
    p = last.progress
    best = next((m for m in checkpoint.read_metrics(run_dir) if m["step"] == p.best_step), None)
    bpc = f", {best['val_bpc']:.4f} bits/char" if best else ""
    err.print(
        f"[bold]done[/]: {p.step} steps, {p.tokens:,} tokens in {format_duration(p.elapsed)} of "
        f"training; best val loss {p.best_val_loss:.4f} nats/token{bpc} at step {p.best_step}"
    )
    err.print(f"saved in {run_dir}; sample with: charrnn sample {run_dir}")


# sample --------------------------------------------------------------------------------


@app.command()
def sample(
    run: Run,
    prime: Annotated[str, typer.Option(help="Text to start from (printed first).")] = "",
    length: Annotated[int, typer.Option(help="Tokens to generate per sample.")] = 500,
    temperature: Annotated[float, typer.Option(help="0 = greedy; higher = wilder.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample among the k likeliest.")] = None,
    top_p: Annotated[
        Optional[float], typer.Option(help="Sample within probability mass p.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Same seed, same text.")] = None,
    num_samples: Annotated[int, typer.Option(help="Samples made together, one batch.")] = 1,
    on_unknown: OnUnknown = "error",
    allow_unk: Annotated[
        bool, typer.Option("--allow-unk", help="Let a word model generate <unk>.")
    ] = False,
    clamp: Annotated[
        Optional[list[str]],
        typer.Option(help="Hold LAYER:NEURON's h at VALUE while sampling: 0:12=1 (repeatable)."),
    ] = None,
    device: Device = "cpu",
):
    """Generate text from a trained run; the text alone goes to stdout, as it is made."""
    with user_errors():
        dev = resolve_device(device)
        clamps = parse_clamps(clamp or [])
        model, tok, run_config = checkpoint.load_best(run, dev)
        banned = () if allow_unk or tok.unk_id is None else (tok.unk_id,)
        config = sampling.SampleConfig(
            length, temperature, top_k, top_p, num_samples, banned_ids=banned
        )
        sampling.check_clamp(model.config, clamps)
        prime_ids = encode_prime(tok, prime, on_unknown)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
        err.print(f"seed {seed}", style="dim")
    if dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(sampling.cpu_threads(num_samples))
    generator = torch.Generator(dev).manual_seed(seed)
    # A model of documents starts each sample where it ended one itself (run_to_eos).
    documents = run_config["corpus"].get("documents", "none") != "none" and not prime
    steps = sampling.generate(
        model, prime_ids, config, tok.eos_id, generator, clamp=clamps,
        burn_in=length if documents else 0,
    )  # fmt: skip
    if num_samples == 1:
        stream_one(steps, tok, prime)
    else:
        print_batch(steps, tok, prime, num_samples)


def encode_prime(tok, prime: str, on_unknown: str) -> list[int]:
    """<eos> then the prime's ids: a sample starts where every document starts."""
    if on_unknown not in tokenizers.ON_UNKNOWN:
        raise UsageError(f"--on-unknown {on_unknown}: choose error | skip | unk")
    unknown = tok.unknown(prime)
    if unknown and on_unknown == "error":
        shown = " ".join(repr(c) for c in unknown[:20])
        raise UsageError(
            f"--prime has {'words' if tok.kind == 'word' else 'characters'} the model has "
            f"never seen: {shown} (--on-unknown skip drops them"
            + (", unk maps them to <unk>)" if tok.unk_id is not None else ")")
        )
    if unknown and on_unknown == "unk" and tok.unk_id is None:
        raise UsageError(f"--on-unknown unk: a {tok.kind} model has no <unk>; use skip")
    return [tok.eos_id, *tok.encode(prime, on_unknown).tolist()]


def stream_one(steps, tok, prime: str) -> None:
    """Write one sample as it is made. The whole sample is decoded again at each token,
    so tokens that only make sense together (the UTF-8 bytes of one character, from a
    byte-fallback BPE model) are written once they are complete."""
    out = sys.stdout
    out.write(prime)
    ids: list[int] = []
    written = 0
    for step, _ in steps:  # one sample: generate() ends the moment it says <eos>
        ids.append(step[0].item())
        text = tok.decode(ids)
        if not text.endswith("\ufffd"):
            out.write(text[written:])
            out.flush()
            written = len(text)
    out.write(tok.decode(ids)[written:] + "\n")
    out.flush()


def print_batch(steps, tok, prime: str, n: int) -> None:
    """Print each sample of a batch once it is finished, in order."""
    tokens: list[list[int]] = [[] for _ in range(n)]
    finished = [False] * n
    printed = 0
    for ids, alive in steps:
        for b, (token, live) in enumerate(zip(ids.tolist(), alive.tolist())):
            if live and token != tok.eos_id:
                tokens[b].append(token)
            finished[b] = not live or token == tok.eos_id
        while printed < n and finished[printed]:
            sys.stdout.write(prime + tok.decode(tokens[printed]) + "\n")
            sys.stdout.flush()
            printed += 1
    for b in range(printed, n):
        sys.stdout.write(prime + tok.decode(tokens[b]) + "\n")
    sys.stdout.flush()


# info and eval -------------------------------------------------------------------------


@app.command()
def info(run: Run, as_json: AsJson = False):
    """Show a run's configuration, size, progress and vocabulary."""
    with user_errors():
        model, tok, config = checkpoint.load_best(run)
    metrics = checkpoint.read_metrics(run)
    summary = {
        "run_dir": str(run),
        "parameters": count_parameters(model),
        "step": config.get("step"),
        "best_val_loss": config.get("best_val_loss"),
        "best_step": config.get("best_step"),
        "best_val_bpc": next(
            (m["val_bpc"] for m in metrics if m["step"] == config.get("best_step")), None
        ),
        "evaluations": len(metrics),
        "vocab_size": tok.vocab_size,
        "model": config["model"],
        "train": config["train"],
        "world_size": config.get("world_size", 1),
        "tokenizer": config["tokenizer"],
        "corpus": {k: v for k, v in config["corpus"].items() if k != "sha256"},
        "versions": config.get("versions", {}),
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    out = Console(highlight=False)
    table = Table(show_header=False, box=None, title=str(run), title_justify="left")
    m = config["model"]
    table.add_row("model", f"{m['cell']} {m['layers']}x{m['hidden']}, embedding {m['embedding']}, "
                  f"dropout {m['dropout']:g}{', tied' if m['tie_weights'] else ''}")  # fmt: skip
    table.add_row("parameters", f"{summary['parameters']:,}")
    table.add_row("steps", f"{summary['step']}")
    if summary["best_val_loss"] is not None:
        bpc = f", {summary['best_val_bpc']:.4f} bits/char" if summary["best_val_bpc"] else ""
        table.add_row(
            "best val loss",
            f"{summary['best_val_loss']:.4f} nats/token{bpc} at step {summary['best_step']}",
        )
    first = [tok.decode([i]) or "<eos>" for i in range(0, min(tok.vocab_size, 80))]
    sample_vocab = "".join(first) if tok.kind == "char" else " ".join(map(repr, first[:24]))
    table.add_row(
        "vocabulary",
        f"{tok.vocab_size:,} tokens ({config['tokenizer']['type']}): "
        + (repr(sample_vocab) if tok.kind == "char" else sample_vocab)
        + (" ..." if tok.kind != "char" and tok.vocab_size > 24 else ""),
    )
    c = config["corpus"]
    table.add_row(
        "corpus",
        f"{', '.join(c['sources']) or 'python'}: {c['files']} files, {c['chars']:,} chars"
        + (f", --documents {c['documents']}" if c.get("documents", "none") != "none" else ""),
    )
    t = config["train"]
    ranks = (
        f"{summary['world_size']} ranks, batch_size per rank; " if summary["world_size"] > 1 else ""
    )
    table.add_row("training", ranks + ", ".join(f"{k} {v}" for k, v in t.items() if v is not None))
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in summary["versions"].items()))
    out.print(table)


@app.command("eval")
def eval_(
    run: Run,
    sources: Annotated[
        list[str], typer.Argument(metavar="CORPUS...", help="Files or folders to score.")
    ],
    glob: Glob = "*",
    encoding_errors: EncodingErrors = "strict",
    seq_len: Annotated[int, typer.Option(help="Tokens per window.")] = 256,
    on_unknown: Annotated[
        Optional[str],
        typer.Option(help="Symbols the model never saw: error | skip | unk (word models: unk)."),
    ] = None,
    device: Device = "auto",
    as_json: AsJson = False,
):
    """Score a run's best model on any text: loss, bits per character, perplexity."""
    check_encoding_errors(encoding_errors)
    dev = resolve_device(device)
    with user_errors():
        model, tok, config = checkpoint.load_best(run, dev)
        on_unknown = on_unknown or ("error" if tok.unk_id is None else "unk")
        if on_unknown not in tokenizers.ON_UNKNOWN or (on_unknown == "unk" and tok.unk_id is None):
            raise UsageError(f"--on-unknown {on_unknown}: choose error or skip for this model")
        text = corpus.read(sources, glob, encoding_errors)
        documents = config["corpus"].get("documents", "none")
        if on_unknown == "error":
            unknown = sorted({s for chunk in text.chunks() for s in tok.unknown(chunk)})
            if unknown:
                shown = " ".join(repr(c) for c in unknown[:20])
                raise UsageError(
                    f"the text has {len(unknown)} symbols the model has never seen: {shown} "
                    "(--on-unknown skip leaves them out of the score)"
                )
        encoded = tokens.token_ids(text, tok, documents, on_unknown)
        if len(encoded.ids) < 2:
            raise UsageError("the text is too short to score")
        metrics = evaluate(model, encoded.ids, seq_len, tok.count_chars, dev)
    result = {"run_dir": str(run), **asdict(metrics), "unk": encoded.unknown}
    if on_unknown == "skip" and documents == "none":  # what the skipped symbols took up
        result["skipped_chars"] = text.chars - metrics.chars
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(
            f"loss {metrics.loss:.4f} nats/token  bits/char {metrics.bpc:.4f}  "
            f"perplexity {metrics.perplexity:.3f}  "
            f"({metrics.tokens:,} tokens, {metrics.chars:,} chars"
            + "".join(f", {v:,} {k.replace('_', ' ')}" for k in ("unk", "skipped_chars")
                      if (v := result.get(k)))
            + ")"
        )  # fmt: skip


# inspect-neurons (and the parsing of sample --clamp) --------------------------------------


def parse_clamps(specs: list[str]) -> dict[tuple[int, int], float]:
    """['0:12=1', '1:3=-0.5'] -> {(0, 12): 1.0, (1, 3): -0.5}; BadParameter on bad syntax."""
    clamps = {}
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    for spec in specs:
        m = re.fullmatch(rf"\s*(\d+)\s*:\s*(\d+)\s*=\s*({number})\s*", spec)
        if not m:
            raise typer.BadParameter(
                f"--clamp {spec!r} is not LAYER:NEURON=VALUE (for example 0:12=1 or 1:3=-0.5)"
            )
        clamps[int(m[1]), int(m[2])] = float(m[3])
    return clamps


ViewColor = Annotated[
    str,
    typer.Option(
        "--color", help="auto (when stdout is a terminal and NO_COLOR is unset) | always | never"
    ),
]
FIND_HELP = (
    "Rank neurons by |Pearson r| with a feature: 'inside quotes', 'bracket depth', "
    "'position in line', 'indentation', 'start of word', 'inside a comment', or a regex "
    "(1 inside a match). Without it: by selectivity (kurtosis)."
)


@app.command("inspect-neurons")
def inspect_neurons(
    run: Run,
    text: Annotated[Optional[str], typer.Option(help="The text to run the model over.")] = None,
    file: Annotated[Optional[Path], typer.Option(help="Read the text from this file.")] = None,
    layer: Annotated[
        Optional[int], typer.Option(help="Layer shown and ranked (default: all; shown: best).")
    ] = None,
    neuron: Annotated[
        Optional[int], typer.Option(help="Neuron shown (default: the best-ranked one).")
    ] = None,
    state: Annotated[
        Optional[str], typer.Option(help="h | c (shown as tanh(c)) | gates. Default: c for lstm.")
    ] = None,
    gate: Annotated[
        Optional[str], typer.Option(help="With --state gates: i|f|g|o (lstm), r|z|n (gru).")
    ] = None,
    find: Annotated[Optional[str], typer.Option(help=FIND_HELP)] = None,
    top: Annotated[int, typer.Option(help="Neurons in the ranking (0: no ranking).")] = 10,
    gate_stats: Annotated[
        bool, typer.Option("--gate-stats", help="Show each layer's gate saturation.")
    ] = False,
    html: Annotated[
        Optional[Path], typer.Option(help="Also write a self-contained HTML page here.")
    ] = None,
    max_chars: Annotated[int, typer.Option(help="Trace at most this many characters.")] = 2000,
    color: ViewColor = "auto",
    seed: Annotated[
        int, typer.Option(help="Seed of the sample inspected when no --text/--file is given.")
    ] = 0,
    device: Device = "cpu",
):
    """Colour text by one neuron's activation with the model's guesses under it, rank the
    neurons, show gate saturation; the view goes to stdout."""
    if text is not None and file is not None:
        raise typer.BadParameter("give --text or --file, not both")
    if color not in ("auto", "always", "never"):
        raise typer.BadParameter(f"--color must be auto, always or never, not {color!r}")
    if top < 0 or max_chars < 1:
        raise typer.BadParameter("--top cannot be negative and --max-chars must be at least 1")
    dev = resolve_device(device)
    with user_errors():
        model, tok, _ = checkpoint.load_best(run, dev)
        name = neurons.state_name(model.config.cell, default_state(model, state, gate), gate)
        source = inspection_text(model, tok, text, file, max_chars, seed, dev)
        tr = neurons.trace_text(model, tok, source)
        acts = neurons.activation(tr, name)  # [L, T, H]
        ranked, ranking, target = rank_neurons(tr, acts, find, top, layer)
        shown = shown_neuron(model.config, ranked, layer, neuron)
        if html is not None:
            write_page(html, run, tr, tok, ranked, {**ranking, "state": name}, name, shown)
    out = view_console(color)
    plain = out.no_color or out.color_system is None
    render_view(out, tr, tok, acts, name, shown, target, ranking, plain)
    if top > 0:
        out.print(ranking_table(ranked, ranking, tr, plain))
    if gate_stats:
        render_gate_stats(out, tr)


def default_state(model, state: str | None, gate: str | None) -> str:
    if state is None:
        return "gates" if gate is not None else "c" if model.config.cell == "lstm" else "h"
    if gate is not None and state != "gates":
        raise UsageError(f"--gate {gate} needs --state gates, not --state {state}")
    return state


def inspection_text(model, tok, text, file, max_chars: int, seed: int, dev) -> str:
    """--text, --file, or else a sample from the model; checked and cut to --max-chars."""
    if file is not None:
        try:
            data = file.read_bytes()
        except OSError as e:
            raise UsageError(f"{file}: cannot read it ({e.strerror})") from None
        text = corpus.decode(data, str(file))
    if text is None:
        config = sampling.SampleConfig(length=min(max_chars, 500), stop_at_eos=False)
        generator = torch.Generator(dev).manual_seed(seed)
        text = sampling.sample_text(model, tok, "", config, generator)[0]
        err.print(
            f"no --text or --file: inspecting {len(text)} characters sampled from the model "
            f"(--seed {seed})",
            style="dim",
        )
    if not text:
        raise UsageError("the text is empty; give some with --text or --file")
    if len(text) > max_chars:
        err.print(f"note: inspecting the first {max_chars:,} of {len(text):,} characters")
        text = text[:max_chars]
    unknown = tok.unknown(text)
    if unknown:
        shown = " ".join(repr(c) for c in unknown[:20])
        what = "words" if tok.kind == "word" else "characters"
        raise UsageError(f"the text has {what} the model has never seen: {shown}")
    return text


def rank_neurons(tr, acts, find: str | None, top: int, layer: int | None):
    """(ranked, a description of the ranking, the feature [T] or None)."""
    k = max(top, 1)  # the best one is shown when no --neuron is given, even with --top 0
    if find is None:
        ranked = neurons.rank_by_selectivity(acts, k, layer)
        title = "most selective neurons: excess kurtosis of the activation over the text"
        return ranked, {"title": title, "score": "kurtosis"}, None
    feature, target = neurons.feature(find, tr.tokens)
    ranked = neurons.rank_by_feature(acts, target, k, layer)
    title = f"neurons most correlated with {feature} (Pearson r over {len(target):,} characters)"
    return ranked, {"title": title, "score": "|r|", "feature": feature}, target


def shown_neuron(config, ranked, layer: int | None, neuron: int | None) -> tuple[int, int]:
    """(layer, neuron) of the view: --neuron (in --layer, default 0), or the best-ranked one."""
    if neuron is None:
        return ranked[0].layer, ranked[0].neuron
    if not 0 <= neuron < config.hidden:
        raise UsageError(
            f"--neuron {neuron} is out of range: a layer has neurons 0..{config.hidden - 1}"
        )
    return (layer if layer is not None else 0), neuron


def write_page(path: Path, run: Path, tr, tok, ranked, ranking, name, shown) -> None:
    initial = {"layer": shown[0], "state": name, "neuron": shown[1]}
    page = neurons.html_page(neurons.page_data(tr, tok, ranked, ranking, initial), f"{run}")
    try:
        checkpoint.atomic_write(path, page.encode("utf-8"))
        path.chmod(0o644)  # a page to open and share, not a private temporary file
    except OSError as e:
        raise UsageError(f"{path}: cannot write it ({e.strerror})") from None
    err.print(f"wrote {path} ({len(page.encode()) / 1024:,.0f} KiB); open it in a browser")


def view_console(color: str) -> Console:
    if color == "always":
        return Console(force_terminal=True, color_system="truecolor", no_color=False,
                       highlight=False)  # fmt: skip
    if color == "never":
        return Console(color_system=None, highlight=False)
    return Console(highlight=False)  # rich: colour only on a terminal, and not with NO_COLOR


def _rgb(rgb: tuple[int, int, int]) -> str:
    return f"black on rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def view_rows(tokens, width: int) -> list[range]:
    """Steps per screen row: a row ends after a newline or when it fills the width (a
    word or subword token takes as many columns as it has characters)."""
    rows, start, used = [], 0, 0
    for t, token in enumerate(tokens):
        cells = len(neurons.glyph(token))
        if used and used + cells > width:
            rows.append(range(start, t))
            start, used = t, 0
        used += cells
        if token.endswith("\n") or used >= width:
            rows.append(range(start, t + 1))
            start, used = t + 1, 0
    if start < len(tokens):
        rows.append(range(start, len(tokens)))
    return rows


def view_lines(row: range, tr, tok, values, plain: bool) -> list[Text]:
    """The text coloured by the neuron (plain: a digit row under it, 0 = -1 .. 9 = +1),
    then one line per guess rank, each guess shaded by its probability. Each step takes
    as many columns as its token; a guess is cut or padded to fit them."""
    widths = {t: len(neurons.glyph(tr.tokens[t])) for t in row}
    text = Text()
    for t in row:
        text.append(neurons.glyph(tr.tokens[t]), None if plain else _rgb(neurons.colour(values[t])))
    lines = [text]
    if plain:
        lines.append(Text("".join(str(round((values[t] + 1) * 4.5)) * widths[t] for t in row)))
    for k in range(tr.top_ids.shape[1]):
        guesses = Text()
        for t in row:
            g = neurons.glyph(tok.decode([int(tr.top_ids[t, k])]), "␣")[: widths[t]]
            guesses.append(
                g.ljust(widths[t]), None if plain else _rgb(neurons.shade(tr.top_probs[t, k]))
            )
        lines.append(guesses)
    return lines


def render_view(out: Console, tr, tok, acts, name, shown, target, ranking, plain) -> None:
    layer, neuron = shown
    values = neurons.unit_scale(acts[layer, :, neuron], name)  # [T] in [-1, 1]
    unit = "characters" if tok.kind == "char" else "tokens"
    head = f"layer {layer}, neuron {neuron}: {neurons.LABELS[name]} over {len(values):,} {unit}"
    if target is not None:
        r = neurons.pearson(acts[layer, :, neuron][None].astype("float64"), target)[0]
        head += f"; r = {r:+.3f} with {ranking['feature']}"
    scale = "0 to 1" if neurons.value_range(name)[0] == 0 else "-1 to +1"
    legend = (
        f"under each line: the activation as a digit, 0 to 9 for {scale}; then the model's 5 "
        f"likeliest next {unit}, likeliest first"
        if plain
        else f"background: blue, white, red for {scale}; under each line: the model's 5 "
        f"likeliest next {unit}, greener = likelier"
    )
    out.print(Text(head, style="bold"), soft_wrap=True)
    out.print(Text(legend, style="dim"), soft_wrap=True)
    for row in view_rows(tr.tokens, max(out.width, 10)):
        for line in view_lines(row, tr, tok, values, plain):
            out.print(line, soft_wrap=True)
        out.print()


def context_text(tokens, context, plain: bool) -> Text:
    text = Text(f"{context.value:+.2f}  ", style="dim")
    for t in range(context.start, context.end):
        g = neurons.glyph(tokens[t])
        if t == context.peak:
            text.append(f"«{g}»" if plain else g, "bold reverse")
        else:
            text.append(g)
    return text


def ranking_table(ranked, ranking, tr, plain: bool) -> Table:
    table = Table(title=ranking["title"], title_justify="left")
    for col in ("#", "layer", "neuron", ranking["score"]):
        table.add_column(col, justify="right")
    if "feature" in ranking:
        table.add_column("sign")
    table.add_column("strongest contexts (" + ("«»" if plain else "reversed") + ": most active)")
    for k, r in enumerate(ranked, 1):
        cells = [str(k), str(r.layer), str(r.neuron), f"{r.score:.3f}"]
        if "feature" in ranking:
            cells.append("+" if r.sign > 0 else "-")
        contexts = Text("\n").join(context_text(tr.tokens, c, plain) for c in r.contexts)
        table.add_row(*cells, contexts)
    return table


GATE_NAMES = {"i": "input", "f": "forget", "o": "output", "r": "reset", "z": "update"}


def render_gate_stats(out: Console, tr) -> None:
    stats = neurons.gate_saturation(tr)
    if not stats:
        out.print(f"gate saturation: a {tr.cell} has no gates")
        return
    table = Table(
        title="gate saturation: fraction of characters a gate is < 0.1 (left) or > 0.9 "
        "(right), mean over units; units saturated more than half of the time",
        title_justify="left",
    )
    for col in ("layer", "gate", "left", "right", "units mostly left", "units mostly right"):
        table.add_column(col, justify="right")
    for s in stats:
        table.add_row(
            str(s.layer), f"{s.gate} ({GATE_NAMES[s.gate]})", f"{s.left.mean():.1%}",
            f"{s.right.mean():.1%}", f"{(s.left > 0.5).sum()}/{len(s.left)}",
            f"{(s.right > 0.5).sum()}/{len(s.right)}",
        )  # fmt: skip
    out.print(table)


# bench ---------------------------------------------------------------------------------

bench_app = typer.Typer(
    help="Measure training and sampling speed against the hardware and a plain reference.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")

BenchCell = Annotated[str, typer.Option(help="lstm | gru | rnn")]
BenchLayers = Annotated[int, typer.Option(help="Stacked recurrent layers.")]
BenchHidden = Annotated[int, typer.Option(help="Units per layer.")]
BenchEmbedding = Annotated[int, typer.Option(help="Token embedding size.")]
BenchVocab = Annotated[int, typer.Option(help="Vocabulary of the random token ids.")]
BenchWarmup = Annotated[int, typer.Option(help="Untimed steps first.")]
Threads = Annotated[
    Optional[int], typer.Option(help="CPU threads for torch (default: as train/sample do).")
]


def bench_setup(device: str, threads: int | None, default: int | None = None) -> torch.device:
    """The device, and the CPU threads: --threads, or else `default` (on a CPU, when
    OMP_NUM_THREADS is unset, as `charrnn sample` does), or else torch's choice."""
    if threads is not None and threads < 1:
        raise typer.BadParameter(f"--threads must be at least 1, not {threads}")
    dev = resolve_device(device)
    if threads is None and dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        threads = default
    if threads is not None:
        torch.set_num_threads(threads)
    return dev


@bench_app.command("train")
def bench_train(
    cell: BenchCell = "lstm",
    layers: BenchLayers = 2,
    hidden: BenchHidden = 256,
    embedding: BenchEmbedding = 64,
    vocab_size: BenchVocab = 96,
    batch_size: Annotated[int, typer.Option(help="Parallel streams of text.")] = 32,
    seq_len: Annotated[int, typer.Option(help="Tokens per BPTT window.")] = 128,
    steps: Annotated[int, typer.Option(help="Timed optimizer steps.")] = 20,
    warmup: BenchWarmup = 3,
    precision: Annotated[str, typer.Option(help="auto | fp32 | fp16 | bf16 (CUDA).")] = "auto",
    corpus_: Annotated[
        Optional[str],
        typer.Option("--corpus", help="Train on this text (default: random token ids)."),
    ] = None,
    device: Device = "auto",
    threads: Threads = None,
    as_json: AsJson = False,
):
    """Training tokens/s, model FLOP utilisation and peak memory: charrnn's step and a
    plain PyTorch loop on the same data, in this process."""
    from charrnn import bench

    dev = bench_setup(device, threads)
    with user_errors():
        ids, data = None, ""
        if corpus_ is not None:
            text = corpus.read([corpus_], "*", "strict")
            tok, _ = tokens.fit_tokenizer(text, tokenizers.TokenizerConfig("char"))
            ids, vocab_size = tokens.token_ids(text, tok, "none").ids, tok.vocab_size
            data = f"{corpus_} ({len(ids):,} char tokens, V {vocab_size})"
        config = bench.BenchConfig(
            cell, layers, hidden, embedding, vocab_size, batch_size, seq_len, steps, warmup,
            resolve_precision(precision, dev),
        )  # fmt: skip
        err.print(f"timing charrnn and the reference: {warmup} + {steps} steps each ...")
        result = bench.bench_train(config, dev, ids, data)
    render_bench(result, as_json)


@bench_app.command("sample")
def bench_sample(
    cell: BenchCell = "lstm",
    layers: BenchLayers = 2,
    hidden: BenchHidden = 256,
    embedding: BenchEmbedding = 64,
    vocab_size: BenchVocab = 96,
    batch_size: Annotated[int, typer.Option(help="Samples made together.")] = 1,
    steps: Annotated[int, typer.Option(help="Timed tokens per sample.")] = 500,
    warmup: BenchWarmup = 20,
    device: Device = "auto",
    threads: Threads = None,
    as_json: AsJson = False,
):
    """Sampling tokens/s (characters/s for a char model), MFU and peak memory: charrnn's
    sampler and a plain one-token-at-a-time loop, in this process."""
    from charrnn import bench

    dev = bench_setup(device, threads, sampling.cpu_threads(batch_size))  # as `sample` does
    with user_errors():
        config = bench.BenchConfig(
            cell, layers, hidden, embedding, vocab_size, batch_size, 1, steps, warmup
        )
        err.print(f"timing charrnn and the reference: {warmup} + {steps} tokens each ...")
        result = bench.bench_sample(config, dev)
    render_bench(result, as_json)


def render_bench(result, as_json: bool) -> None:
    """The figures to stdout: a table (or JSON), with what was measured and where."""
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    c, v = result.config, result.versions
    shape = f"--batch-size {c.batch_size}" + (
        f" --seq-len {c.seq_len} --precision {c.precision}" if result.kind == "train" else ""
    )
    out = Console(highlight=False, soft_wrap=True)
    out.print(
        f"charrnn bench {result.kind}: {c.cell} {c.layers}x{c.hidden}, embedding "
        f"{c.embedding}, V {c.vocab_size}, {shape}, {c.warmup} + {c.steps} steps; "
        f"data: {result.data}"
    )
    out.print(
        f"device: {result.device} ({result.device_name}, torch threads: {result.threads}); torch "
        f"{v['torch']}, CUDA {v['cuda'] or '-'}, cuDNN {v['cudnn'] or '-'}; {result.date}"
    )
    out.print(
        f"matmul peak {result.peak_flops / 1e12:.3f} TFLOP/s ({result.peak_how}); "
        f"{result.flops_per_token:,} model FLOPs per token; memory: {result.memory_how}"
    )
    table = Table()
    for col in ("", "tokens/s", "ms/step", "MFU", "peak memory", "loss"):
        table.add_column(col, justify="right")
    for name, m in (("charrnn", result.ours), ("reference", result.reference)):
        loss = f"{m.loss:.3f}" if m.loss is not None else "-"
        table.add_row(
            name, f"{m.tokens_per_sec:,.0f}", f"{m.seconds_per_step * 1e3:.2f}",
            f"{m.mfu:.2%}", f"{m.peak_memory / 2**20:,.0f} MiB", loss,
        )  # fmt: skip
    ours, ref = result.ours, result.reference
    table.add_row(
        "ratio", f"{result.ratio:.2f}x", f"{ours.seconds_per_step / ref.seconds_per_step:.2f}x",
        f"{ours.mfu / ref.mfu:.2f}x", f"{ours.peak_memory / max(ref.peak_memory, 1):.2f}x", "",
    )  # fmt: skip
    out.print(table)
