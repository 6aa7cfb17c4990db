"""A run directory's config.json as a value: RunConfig, checked as it is read, and the one
place that reads older format versions (migrate). run.py makes runs with it; api.load()
loads one to use it. Nothing here trains or prints.

    config.json, format_version 7
      model, train, tokenizer   ModelConfig, TrainConfig, TokenizerConfig: every key is a
                                setting's name (settings.py); tokenizer holds what was asked
      corpus                    CorpusConfig, and what reading it gave: sources, files,
                                chars, sha256
      world_size                ranks of the latest session (train.batch_size is per rank)
      step, best_val_loss, best_step    progress, updated at each evaluation
      ended                     why the run ended before its length ("patience"), or null
      versions                  charrnn, torch and python of the session that wrote it
      init_from                 (a fine-tuned run) where it began: InitFrom
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from charrnn import checkpoint, settings
from charrnn.checkpoint import CheckpointError
from charrnn.corpus import CorpusConfig
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig
from charrnn.tokenizers import TokenizerConfig
from charrnn.training.config import TrainConfig
from charrnn.version import __version__

SECTIONS = {"model": ModelConfig, "train": TrainConfig, "tokenizer": TokenizerConfig}
READ_RECORD = ("sources", "files", "chars", "sha256")  # corpus: what reading it gave


@dataclass(frozen=True)
class InitFrom:
    """Where a fine-tuned run began (--init-from RUN; finetune.py): RUN as it was given, the
    step of its best model, the sha256 of that model.safetensors, and RUN's vocabulary size
    (the new run's ids from there on are the tokens it added)."""

    run: str
    step: int | None
    sha256: str
    vocab_size: int

    @classmethod
    def of(cls, data: Any, path: Path) -> InitFrom | None:
        if data is None:
            return None
        try:
            step = None if data["step"] is None else int(data["step"])
            return cls(str(data["run"]), step, str(data["sha256"]), int(data["vocab_size"]))
        except (TypeError, KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: init_from is not a record of a run ({e!r})") from None


@dataclass(frozen=True)
class RunConfig:
    """config.json of a run directory, checked."""

    model: ModelConfig
    train: TrainConfig
    tokenizer: TokenizerConfig
    corpus: CorpusConfig
    sources: tuple[str, ...]  # what was given to read (none: the built-in python corpus)
    files: int
    chars: int
    sha256: str  # of the text: a resumed run checks it reads the same text
    world_size: int = 1
    step: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    ended: str | None = None  # why it ended before its length: "patience" (--patience)
    versions: dict = field(default_factory=dict)
    init_from: InitFrom | None = None  # a fine-tuned run: where it began

    def to_json(self) -> dict[str, Any]:
        read = {"sources": list(self.sources), "files": self.files, "chars": self.chars,
                "sha256": self.sha256}  # fmt: skip
        return {
            "format_version": checkpoint.FORMAT_VERSION,
            **{name: getattr(self, name).to_dict() for name in SECTIONS},
            "corpus": {**self.corpus.to_dict(), **read},
            "world_size": self.world_size, "step": self.step,
            "best_val_loss": self.best_val_loss, "best_step": self.best_step,
            "ended": self.ended,
            "versions": self.versions,
            **({"init_from": asdict(self.init_from)} if self.init_from else {}),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: Path) -> RunConfig:
        """The config of a migrated config.json; CheckpointError naming what is wrong."""
        parts = {name: _settings(kind, _section(data, name, path), name, path)
                 for name, kind in SECTIONS.items()}  # fmt: skip
        read = _section(data, "corpus", path)
        missing = [k for k in READ_RECORD if k not in read]
        if missing:
            raise CheckpointError(f"{path}: the corpus section has no {', '.join(missing)}")
        chosen = {k: v for k, v in read.items() if k not in READ_RECORD}
        try:
            return cls(
                **parts, corpus=_settings(CorpusConfig, chosen, "corpus", path),
                sources=tuple(read["sources"]), files=int(read["files"]),
                chars=int(read["chars"]), sha256=str(read["sha256"]),
                world_size=int(data.get("world_size", 1)), step=int(data.get("step", 0)),
                best_val_loss=data.get("best_val_loss"), best_step=data.get("best_step"),
                ended=data.get("ended"),
                versions=dict(data.get("versions") or {}),
                init_from=InitFrom.of(data.get("init_from"), path),
            )  # fmt: skip
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: a value has the wrong type ({e})") from None


def _section(data: Mapping, name: str, path: Path) -> dict:
    section = data.get(name)
    if not isinstance(section, dict):
        raise CheckpointError(f"{path}: no {name!r} section; not a config.json charrnn wrote")
    return section


def _settings(cls: type, values: dict, name: str, path: Path):
    known = {d.name for d in settings.declared(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CheckpointError(f"{path}: unknown {name} settings {unknown} (a newer charrnn?)")
    try:
        return cls(**values)
    except ConfigError as e:
        raise CheckpointError(f"{path}: bad {name} settings ({e})") from None


def migrate(data: dict, path: Path) -> dict:
    """config.json of any format version charrnn has written -> the current one's keys,
    one version's step at a time; a run keeps the behaviour it was made with."""
    version = data.get("format_version")
    if version not in MIGRATIONS and version != checkpoint.FORMAT_VERSION:
        newer = isinstance(version, int) and version > checkpoint.FORMAT_VERSION
        raise CheckpointError(
            f"{path}: format_version {version!r}; this charrnn reads 1 to "
            f"{checkpoint.FORMAT_VERSION}" + ("; upgrade charrnn to read it" if newer else "")
        )
    for old in range(version, checkpoint.FORMAT_VERSION):
        data = MIGRATIONS[old](data)
    return {**data, "format_version": checkpoint.FORMAT_VERSION}


def _from_1(data: dict) -> dict:
    """Format 2 named the tokenizer's kind and the asked vocabulary size as their flags."""
    tok = data.get("tokenizer")
    if isinstance(tok, dict):
        tok = {"tokenizer": tok.get("type"), "vocab_size": tok.get("requested_vocab_size"),
               "min_count": tok.get("min_count", 1)}  # fmt: skip
    return {**data, "tokenizer": tok}


def _from_2(data: dict) -> dict:
    """Format 3 added settings whose defaults behave otherwise: a run made before keeps its
    own dropout (a new mask at every step), its whole length and its learning rate."""
    model, train = data.get("model"), data.get("train")
    if isinstance(model, dict):
        model = {"variational": False, **model}
    if isinstance(train, dict):
        train = {"patience": 0, "lr_decay": 1.0, **train}
    return {**data, "model": model, "train": train}


def _from_3(data: dict) -> dict:
    """Format 4 added --average: a run made before never averages its weights."""
    train = data.get("train")
    if isinstance(train, dict):
        train = {"average": 0, **train}
    return {**data, "train": train}


def _from_4(data: dict) -> dict:
    """Format 5 added --word-split: a run made before split punctuation off its words."""
    tok = data.get("tokenizer")
    if isinstance(tok, dict):
        tok = {"word_split": "punct" if tok.get("tokenizer") == "word" else None, **tok}
    return {**data, "tokenizer": tok}


def _from_5(data: dict) -> dict:
    """Format 6 added --shortlist: a run made before decodes with one softmax."""
    model = data.get("model")
    if isinstance(model, dict):
        model = {"shortlist": 0, **model}
    return {**data, "model": model}


def _from_6(data: dict) -> dict:
    """Format 7 added --ngram: a run made before has no n-gram beside its model."""
    model = data.get("model")
    if isinstance(model, dict):
        model = {"ngram": 0, **model}
    return {**data, "model": model}


# format_version -> the step to the next
MIGRATIONS = {1: _from_1, 2: _from_2, 3: _from_3, 4: _from_4, 5: _from_5, 6: _from_6}


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / checkpoint.CONFIG
    return RunConfig.from_json(migrate(checkpoint.read_config(run_dir), path), path)


def versions() -> dict[str, str]:
    return {"charrnn": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}
