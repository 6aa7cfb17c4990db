"""`charrnn train`: set up a new or resumed run (corpus, tokens, model, configs, under
torchrun too) and render fit()'s reports: progress bar, tables, samples, summary."""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from charrnn import __version__, checkpoint, corpus, data, distributed, tokens
from charrnn import sample as sampling
from charrnn import tokenizer as tokenizers
from charrnn.cli.common import (
    Device,
    EncodingErrors,
    Glob,
    Precision,
    UsageError,
    app,
    check_encoding_errors,
    err,
    format_duration,
    parse_duration,
    resolve_device,
    user_errors,
)
from charrnn.distributed import SINGLE, World
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.train import TrainConfig, fit, recipe, resolve_precision, set_deterministic

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
        model, tok, train_cfg, train_ids, val_ids, out, saved, documents = setup
        preview = sampling.sample_config(tok, documents, length=200, temperature=0.8)
        if train_cfg.deterministic:
            set_deterministic()
        stop = StopFlag()
        with stop.installed(), collectives_failing(world, out):
            reports = fit(
                model, tok, train_ids, val_ids, train_cfg, dev, out, saved, stop, world, preview
            )
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
    return model, tok, train_cfg, train_ids, val_ids, out, None, documents


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
    return model, tok, train_cfg, train_ids, val_ids, run, saved, stored_tokens["documents"]


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
