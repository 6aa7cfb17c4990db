"""A run made ready to train: new (create) or carried on (resume), its config.json a
RunConfig (runconfig.py). Every rule of resuming lives in resume(): the model, tokenizer
and corpus settings stay, the duration may change, the text must be the same, and the
streams are shared evenly among the ranks. Set-up returns notes for the caller to show;
nothing here prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from charrnn import checkpoint, corpus, data, fitting, memory, settings, tokens
from charrnn import sample as sampling
from charrnn.checkpoint import CheckpointError
from charrnn.corpus import CorpusConfig
from charrnn.distributed import SINGLE, World
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.ngram import NGram
from charrnn.runconfig import RunConfig, read_config, versions
from charrnn.tokenizers import Tokenizer, TokenizerConfig
from charrnn.training import pace
from charrnn.training.config import TrainConfig, resolve_precision
from charrnn.training.trainer import Job
from charrnn.version import __version__


def context(
    device: torch.device, tokenizer: str | None, optimizer: str | None = None
) -> tuple[str, str, str]:
    """What the defaults depend on: the device type, the tokenizer and the optimizer (whose
    own default depends on the first two)."""
    kind, tokenizer = torch.device(device).type, tokenizer or "char"
    optimizer = optimizer or settings.default_of(TrainConfig, "optimizer", (kind, tokenizer))
    return kind, tokenizer, optimizer


@dataclass(frozen=True)
class Asked:
    """The settings of a new run, checked before its corpus is read: the model's given ones
    (its vocabulary comes from the tokenizer), the others resolved, and the model's
    smallest shape (vocabulary 1), for the first memory check."""

    context: tuple[str, str, str]  # what the defaults depend on: device type, tokenizer,
    # optimizer
    model_given: dict[str, Any]
    smallest: ModelConfig
    train: TrainConfig
    tokenizer: TokenizerConfig
    corpus: CorpusConfig


def resolve_settings(given: Mapping[str, Any], device: torch.device) -> Asked:
    """Every setting `given` (None: the default for this device and tokenizer) checked;
    ConfigError naming the flag of the first bad one."""
    model_given, train_given, tok_given, corpus_given = split(given)
    ctx = context(device, tok_given.get("tokenizer"), train_given.get("optimizer"))
    train_given["precision"] = resolve_precision(train_given.get("precision", "auto"), device)
    corpus_cfg = settings.resolve(CorpusConfig, corpus_given)
    tok_cfg = settings.resolve(TokenizerConfig, tok_given, ctx)
    model_given = tie_if_they_fit(model_given, ctx)
    smallest = settings.resolve(ModelConfig, model_given, ctx, vocab_size=1)
    train_cfg = settings.resolve(TrainConfig, train_given, ctx)
    return Asked(ctx, model_given, smallest, train_cfg, tok_cfg, corpus_cfg)


def create(
    sources: list[str], given: Mapping[str, Any], device: torch.device,
    run_dir: Path | None = None, world: World = SINGLE, base: Any = None,
) -> Job:  # fmt: skip
    """A new run: every setting `given` (None: the default for this device and tokenizer)
    checked, the corpus read and encoded (rank 0 first; the others read its cache), the
    model built and the run directory started (by rank 0). `base` (--init-from): the
    finetune.Base whose model and vocabulary the run starts from, at the hooks marked."""
    fine_tuning: dict[str, Any] = {}
    if base is not None:  # hook: RUN's shape and tokenizer, the fine-tuning defaults
        given, fine_tuning = base.settings_for(given, device)
    asked = resolve_settings(given, device)
    corpus_cfg, tok_cfg, train_cfg = asked.corpus, asked.tokenizer, asked.train
    out = target_dir(run_dir, sources, asked.smallest.cell, world)
    memory.check_training(asked.smallest, train_cfg.batch_size, train_cfg.seq_len, device)
    text = corpus.read(sources, corpus_cfg.glob, corpus_cfg.encoding_errors)
    grown = base.grown_tokenizer(text, tok_cfg, corpus_cfg.documents) if base else None  # hook
    tok, ids, how = encode_on_ranks(text, tok_cfg, corpus_cfg.documents, world, grown)
    train_ids, val_ids = data.split(ids, train_cfg.val_frac)
    train_cfg, note = fit_batch_size(train_cfg, len(train_ids), len(val_ids), world.size)
    fitted = fit_to_text(asked, train_cfg, tok.vocab_size, len(train_ids), len(val_ids), device,
                         world, given)  # fmt: skip
    model_cfg = settings.resolve(ModelConfig, {**fitted.model, **asked.model_given},
                                 asked.context, vocab_size=tok.vocab_size)  # fmt: skip
    train_cfg = settings.update(train_cfg, fitted.train)
    memory.check_training(model_cfg, train_cfg.batch_size, train_cfg.seq_len, device)
    config = RunConfig(
        model_cfg, train_cfg, tok_cfg, corpus_cfg, tuple(sources), len(text.files), text.chars,
        text.sha256, world_size=world.size, versions=versions(),
        init_from=base.origin if base else None,  # hook
    )  # fmt: skip
    first = describe(config, device, world, given)
    first += base.line(tok, fine_tuning) if base else ""  # hook: what came from RUN
    notes = [
        ("info", first),
        ("info", fitted_line(config, fitted)),
        ("warning", note),
        ("info", corpus_line(config, tok, len(train_ids), len(val_ids))),
        ("detail", how),
    ]
    torch.manual_seed(train_cfg.seed)
    # hook: RUN's weights, and rows for the new tokens
    model = base.grown_model(model_cfg, tok, train_ids) if base else RNNLanguageModel(model_cfg)
    model = with_ngram(model.to(device), train_ids)
    if world.is_main:
        checkpoint.create_run(out, config.to_json(), tok, model.ngram)
    preview = sampling.sample_config(tok, corpus_cfg.documents, length=200, temperature=0.8)
    return Job(model, tok, train_ids, val_ids, train_cfg, device, out, world, None, preview,
               [n for n in notes if n[1]])  # fmt: skip


def resume(
    run_dir: Path, sources: list[str], given: Mapping[str, Any], device: torch.device,
    world: World = SINGLE,
) -> Job:  # fmt: skip
    """Carry on a run from last/. Every rank reads the run directory (on several nodes it
    must be on a shared filesystem). Settings given must agree with the run's, except the
    duration (--steps, --epochs, --time-budget), which a resumed run may be given anew."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    tok = checkpoint.load_tokenizer(run_dir, config.model.vocab_size)
    model_given, train_given, tok_given, corpus_given = split(given)
    if "precision" in train_given:
        train_given["precision"] = resolve_precision(train_given["precision"], device)
    train, note = reshard(config, run_dir, world)
    for old, new in ((config.model, model_given), (config.tokenizer, tok_given),
                     (config.corpus, corpus_given), (train, train_given)):  # fmt: skip
        refuse_changes(old, new)
    train = settings.update(train, train_given)  # a new duration or precision replaces the old
    if train.precision != "fp32" and device.type != "cuda":  # a CUDA run carried on off CUDA
        note += f"; it trained in {train.precision} on CUDA and carries on in fp32 on {device}"
        train = replace(train, precision="fp32")
    text = corpus.read(
        list(sources or config.sources), config.corpus.glob, config.corpus.encoding_errors
    )
    if text.sha256 != config.sha256:
        raise ConfigError(
            f"the corpus differs from the one {run_dir} was trained on ({config.chars:,} chars, "
            f"sha256 {config.sha256[:12]}...); resume with the same text"
        )
    encoded = tokens.token_ids(text, tok, config.corpus.documents)
    train_ids, val_ids = data.split(encoded.ids, train.val_frac)
    memory.check_training(config.model, train.batch_size, train.seq_len, device)
    model, saved = checkpoint.load_last(run_dir, config.model, device)
    model = with_ngram(model, train_ids)
    if world.is_main:
        config = replace(config, train=train, world_size=world.size)
        try:
            checkpoint.remove_leftovers(run_dir)
            checkpoint.write_json(run_dir / checkpoint.CONFIG, config.to_json())
            if model.ngram is not None:  # the same tables: counted on the same text
                checkpoint.save_ngram(run_dir, model.ngram)
        except OSError as e:
            raise CheckpointError(
                f"{run_dir}: cannot write in it ({e.strerror}); a resumed run saves there"
            ) from None
    line = describe(replace(config, train=train), device, world, given, resumed=True)
    step = saved.get("progress", {}).get("step") if isinstance(saved, dict) else None
    notes = [("info", line), ("info", f"resuming {run_dir} at step {step}" + note)]
    preview = sampling.sample_config(tok, config.corpus.documents, length=200, temperature=0.8)
    return Job(model, tok, train_ids, val_ids, train, device, run_dir, world, saved, preview,
               notes)  # fmt: skip


def with_ngram(model: RNNLanguageModel, train_ids) -> RNNLanguageModel:
    """`model` with the n-gram of its training split beside it (--ngram; ngram.py)."""
    c = model.config
    if c.ngram:
        model.ngram = NGram.count(train_ids, c.ngram, c.vocab_size)
    return model


def tie_if_they_fit(model_given: dict[str, Any], ctx) -> dict[str, Any]:
    """Where tied weights are the default (word models), they are tied only if the given
    sizes allow it (--embedding equal to --hidden); asked for, they must be."""
    if "tie_weights" in model_given:
        return model_given
    size = {n: model_given.get(n, settings.default_of(ModelConfig, n, ctx))
            for n in ("tie_weights", "embedding", "hidden")}  # fmt: skip
    if size["tie_weights"] and size["embedding"] != size["hidden"]:
        return {**model_given, "tie_weights": False}
    return model_given


def split(given: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The settings given (not None), shared out as model, train, tokenizer and corpus ones."""
    present = {k: v for k, v in given.items() if v is not None}
    return settings.split(present, ModelConfig, TrainConfig, TokenizerConfig, CorpusConfig)


def refuse_changes(old: Any, given: Mapping[str, Any]) -> None:
    """ConfigError for a setting a resumed run keeps that is given another value."""
    for d, was, now in settings.changed(old, given):
        if d.setting.on_resume == "keep":
            raise ConfigError(
                f"{d.flag} {d.text(now)} differs from the run's {d.text(was)}; a resumed run "
                "keeps its settings (start a new run to change them)"
            )


def reshard(config: RunConfig, run_dir: Path, world: World) -> tuple[TrainConfig, str]:
    """The run's TrainConfig for this number of ranks: a run keeps its streams for life,
    and each of N ranks reads streams / N of them."""
    ranks, batch = config.world_size, config.train.batch_size
    if ranks == world.size:
        return config.train, ""
    streams = batch * ranks
    if streams % world.size:
        raise ConfigError(
            f"{run_dir} reads {streams} streams ({ranks} ranks x --batch-size {batch}); "
            f"{world.size} ranks cannot share them evenly: resume on a number of ranks that "
            f"divides {streams}"
        )
    per_rank = streams // world.size
    note = (
        f"; it read {streams} streams as {ranks} x batch {batch}; on {world.size} ranks it "
        f"reads the same streams, {per_rank} per rank"
    )
    return replace(config.train, batch_size=per_rank), note


def target_dir(run_dir: Path | None, sources: list[str], cell: str, world: World) -> Path:
    """--run-dir, or a new folder under checkpoints/: one that can be made, or an empty one;
    never one that holds a run or anything else."""
    if world.size > 1 and run_dir is None:
        raise ConfigError("with torchrun, give --run-dir: the ranks must agree on where to save")
    if run_dir is None:
        name = Path(sources[0]).stem if sources else "python"
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("checkpoints") / f"{name or 'corpus'}-{cell}-{stamp}"
    if world.is_main:
        checkpoint.check_new_run_dir(Path(run_dir))  # before the corpus is read
    return Path(run_dir)


def encode_on_ranks(
    text, tok_cfg: TokenizerConfig, documents: str, world: World, tok: Tokenizer | None = None
):  # fmt: skip
    """(tokenizer, ids, how they were made): rank 0 fits (unless given `tok`) and encodes
    first, the others then read its cache."""
    if world.is_main:
        out = tokens.encode(text, tok_cfg, documents, tok)
    world.barrier()
    if not world.is_main:
        out = tokens.encode(text, tok_cfg, documents, tok)
    return out


def fit_to_text(
    asked: Asked, train_cfg: TrainConfig, vocab_size: int, n_train: int, n_val: int,
    device: torch.device, world: World, given: Mapping[str, Any],
) -> fitting.Fitted:  # fmt: skip
    """The defaults fitted to the text's size and the passes the run makes over it
    (fitting.py, pace.py), for the settings not given."""
    streams = train_cfg.batch_size * world.size
    windows = -(-((n_train - 1) // streams) // train_cfg.seq_len)  # as data.Streams cuts them
    given = {k: v for k, v in given.items() if v is not None}
    declared = settings.default_of(ModelConfig, "ngram", asked.context)
    model = settings.resolve(ModelConfig, {"ngram": 0, **asked.model_given}, asked.context,
                             vocab_size=vocab_size)  # the n-gram's order is fitted below
    paced = pace.planned(train_cfg, model, windows, streams * train_cfg.seq_len, device, world)
    half, narrowed = fitting.narrower(asked.context, model.hidden, paced, given), ""
    if half is not None:  # too few steps at the default width: half of it, paced again
        model = settings.update(model, {"hidden": half} | (
            {"embedding": half} if model.tie_weights else {}))  # fmt: skip
        paced, first = pace.planned(train_cfg, model, windows, streams * train_cfg.seq_len,
                                    device, world), paced  # fmt: skip
        narrowed = f"about {first.steps:,.0f} steps of --hidden {model.hidden * 2}, so "
    return fitting.fit(asked.context, n_train, n_val, windows, streams * train_cfg.seq_len,
                       paced, given, narrowed, half, train_cfg.lr, declared,
                       vocab_size)  # fmt: skip


def fitted_line(config: RunConfig, fitted: fitting.Fitted) -> str:
    """What was fitted to the text, as the flags that give it, and why."""
    shown = [d.as_flag(getattr(part, d.name))
             for part, names in ((config.model, fitted.model), (config.train, fitted.train))
             for d in settings.declared(type(part)) if d.name in names]  # fmt: skip
    return f"fitted to the text ({fitted.why}): {' '.join(shown)}" if shown else ""


def fit_batch_size(
    train_cfg: TrainConfig, n_train: int, n_val: int, ranks: int = 1
) -> tuple[TrainConfig, str]:
    """Shrink the batch (per rank) for a small corpus, returning a note that says so;
    refuse a corpus too small to train on."""
    streams = data.max_batch_size(n_train, train_cfg.seq_len)
    if 1 <= streams < ranks:
        raise ConfigError(
            f"the corpus fills only {streams} streams of --seq-len {train_cfg.seq_len}, fewer "
            f"than the {ranks} ranks; give more text, a shorter --seq-len or fewer ranks"
        )
    most = streams // ranks
    if most < 1 or n_val < 2:
        raise ConfigError(
            f"the corpus is too small: {n_train} training and {n_val} validation tokens "
            f"cannot fill one window of --seq-len {train_cfg.seq_len}; give more text or a "
            "shorter --seq-len"
        )
    if most >= train_cfg.batch_size:
        return train_cfg, ""
    per_rank = f" ({most} per rank)" if ranks > 1 else ""
    note = (
        f"note: the corpus fills only {most * ranks} streams of --seq-len {train_cfg.seq_len}"
        f"{per_rank}; using --batch-size {most} instead of {train_cfg.batch_size}"
    )
    return replace(train_cfg, batch_size=most), note


def describe(
    config: RunConfig, device: torch.device, world: World, given: Mapping[str, Any],
    resumed: bool = False,
) -> str:  # fmt: skip
    """The first line of `charrnn train`: where it runs, and every setting whose default
    depends on the device or tokenizer, or that was given."""
    device = torch.device(device)
    named = [k for k, v in given.items() if v is not None]
    flags = [f for part in (config.model, config.train, config.tokenizer, config.corpus)
             for f in settings.describe(part, named)]  # fmt: skip
    n = torch.get_num_threads()
    threads = f" ({n} thread{'s' if n > 1 else ''})" if device.type == "cpu" else ""
    where = f"{device}"
    if world.size > 1:
        n, b = world.size, config.train.batch_size
        where = f"{n} ranks x {device.type}"
        flags = [f"{f} per rank ({n} ranks x batch {b} = {n * b} streams)"
                 if f.startswith("--batch-size ") else f for f in flags]  # fmt: skip
    how = "resumed; defaults" if resumed else "defaults"
    return (
        f"charrnn {__version__} on {where}{threads}: {' '.join(flags)} ({how} for "
        f"{device.type}; flags override)"
    )


def corpus_line(config: RunConfig, tok: Tokenizer, n_train: int, n_val: int) -> str:
    sources = ", ".join(config.sources) or "python (the standard library)"
    return (
        f"corpus: {sources}: {config.files} files, {config.chars:,} chars, "
        f"{tok.vocab_size:,} {tok.tokenizer} tokens in the vocabulary; {n_train:,} train / "
        f"{n_val:,} val tokens"
    )
