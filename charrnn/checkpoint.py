"""The run directory: everything needed to sample from or resume a run, saved atomically
and loaded safely. Nothing here trains or samples.

    RUN/
      config.json          format_version, model/train/tokenizer/corpus configs, progress
      model.safetensors    weights of the best model so far (what `sample` loads)
      tokenizer.json       the vocabulary: the model owns it
      last/                model.safetensors + trainer_state.pt, for --resume
      metrics.jsonl        one JSON object per evaluation

Loading never unpickles code: weights come from safetensors, config from JSON, trainer
state from torch.load(weights_only=True). Every write goes to a temporary name in the
same folder, is fsynced, then renamed over the old file, so a crash leaves the old file
or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from charrnn import tokenizer as tokenizers
from charrnn.errors import CharrnnError
from charrnn.model import ModelConfig, RNNLanguageModel

FORMAT_VERSION = 2  # of config.json; run.py reads older ones (run.migrate)
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LAST = "last"
TRAINER_STATE = "trainer_state.pt"
METRICS = "metrics.jsonl"
_LAST_TMP, _LAST_OLD = ".last.tmp", ".last.old"


class CheckpointError(CharrnnError):
    """A run directory or one of its files is missing, damaged or inconsistent."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one line to metrics.jsonl (a torn last line is skipped by read_metrics)."""
    with open(Path(run_dir) / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return records


# Weights ------------------------------------------------------------------------------


def weights_bytes(model: RNNLanguageModel) -> bytes:
    """The model's weights as safetensors bytes, with the config in the header metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        del tensors["decoder.weight"]  # the same tensor as embed.weight
    metadata = {"format_version": str(FORMAT_VERSION), "model": json.dumps(model.config.to_dict())}
    return safetensors.torch.save(tensors, metadata=metadata)


def load_weights(path: Path, config: ModelConfig, device: str | torch.device = "cpu"):
    """A model built from `config` with the weights in `path`, checked tensor by tensor."""
    model = RNNLanguageModel(config)
    try:
        tensors = safetensors.torch.load_file(path, device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if config.tie_weights:
        tensors["decoder.weight"] = tensors.get("embed.weight")
    expected = model.state_dict()
    missing = sorted(k for k in expected if tensors.get(k) is None)
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path}: does not match config.json (missing {missing}, extra {extra})"
        )
    for name, tensor in expected.items():
        if tensors[name].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: {name} has shape {list(tensors[name].shape)}, config.json says "
                f"{list(tensor.shape)}"
            )
    model.load_state_dict(tensors)
    return model.to(device)


# Run directory ------------------------------------------------------------------------


def create_run(run_dir: Path, config: dict, tokenizer) -> None:
    """Start a run directory: config.json and the tokenizer, before any weights exist."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in tokenizer.files().items():
        atomic_write(run_dir / name, data)
    write_json(run_dir / CONFIG, {"format_version": FORMAT_VERSION, **config})


def save_best(run_dir: Path, model: RNNLanguageModel, progress: dict) -> None:
    """Replace model.safetensors with `model`, then record the progress in config.json."""
    run_dir = Path(run_dir)
    atomic_write(run_dir / WEIGHTS, weights_bytes(model))
    update_config(run_dir, progress)


def update_config(run_dir: Path, progress: dict) -> None:
    config = read_config(run_dir)
    config.update(progress)
    write_json(Path(run_dir) / CONFIG, config)


def save_last(run_dir: Path, model: RNNLanguageModel, trainer_state: dict) -> None:
    """Replace last/ as a whole: written beside it, fsynced, then swapped in by renames.

    At every instant either last/ or .last.old/ is a complete checkpoint; load_last
    reads whichever is there.
    """
    run_dir = Path(run_dir)
    tmp, old, last = run_dir / _LAST_TMP, run_dir / _LAST_OLD, run_dir / LAST
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    atomic_write(tmp / WEIGHTS, weights_bytes(model))
    with open(tmp / TRAINER_STATE, "wb") as f:
        torch.save(trainer_state, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if last.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(last, old)
    os.replace(tmp, last)
    _fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(run_dir: Path) -> None:
    """Delete what a process killed mid-save left behind: temporary files, a half last/."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / _LAST_TMP, ignore_errors=True)  # a last/ never swapped in
    for path in run_dir.glob(".*.tmp"):  # atomic_write's temporary files
        path.unlink(missing_ok=True)


def last_dir(run_dir: Path) -> Path | None:
    """The complete last checkpoint, if any (after a crash mid-swap, the previous one)."""
    for name in (LAST, _LAST_OLD):
        path = Path(run_dir) / name
        if (path / TRAINER_STATE).exists() and (path / WEIGHTS).exists():
            return path
    return None


def read_config(run_dir: Path) -> dict:
    """config.json of a run directory as JSON; CheckpointError if it is not a run directory.
    (run.read_config checks its content and reads older format versions.)"""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    if not path.exists():
        raise CheckpointError(f"{run_dir}: not a run directory (no {CONFIG})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a charrnn config (a JSON object is expected)")
    return config


def load_tokenizer(run_dir: Path, vocab_size: int):
    """The run's tokenizer, checked against the vocabulary size the model was built for."""
    try:
        tok = tokenizers.load(run_dir)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if tok.vocab_size != vocab_size:
        raise CheckpointError(
            f"{Path(run_dir) / tokenizers.TOKENIZER_FILE}: {tok.vocab_size} tokens, "
            f"but the model in {CONFIG} has vocab_size {vocab_size}"
        )
    return tok


def load_best(run_dir: Path, config: ModelConfig, device: str | torch.device = "cpu"):
    """The best model of a run (model.safetensors), ready to sample."""
    path = Path(run_dir) / WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{run_dir}: no {WEIGHTS} yet (the run has not evaluated once)")
    return load_weights(path, config, device)


def load_last(run_dir: Path, config: ModelConfig, device: str | torch.device = "cpu"):
    """(model, trainer_state) of the last checkpoint, for resuming."""
    path = last_dir(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir}: no complete {LAST}/ checkpoint to resume from")
    model = load_weights(path / WEIGHTS, config, device)
    try:
        state = torch.load(path / TRAINER_STATE, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle safely is the file's fault
        raise CheckpointError(f"{path / TRAINER_STATE}: refused or unreadable ({e})") from None
    return model, state
