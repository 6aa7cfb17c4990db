"""The run directory: everything needed to sample from or resume a run, saved atomically
and loaded safely. Nothing here trains or samples.

    RUN/
      config.json          format_version, model/train/tokenizer/corpus configs, progress
      model.safetensors    weights of the best model so far (what `sample` loads)
      tokenizer.json       the vocabulary: the model owns it
      ngram.safetensors    --ngram: the n-gram tables of the training split (ngram.py)
      last/                model.safetensors + trainer_state.pt, for --resume
      metrics.jsonl        one JSON object per evaluation

Loading never unpickles code: weights come from safetensors, config from JSON, trainer
state from torch.load(weights_only=True); every file is checked before it is read (a
regular file this process may read) and after (keys, types, shapes, finite weights), and
what is wrong is a CheckpointError naming the file. Every write goes to a temporary name
in the same folder, is fsynced, then renamed over the old file, so a crash leaves the old
file or the new one, never half of one; a new run directory is made whole or not at all
(paths.make_folder), and only where no one else's files are.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from charrnn import paths, tokenizers
from charrnn.errors import CharrnnError
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.ngram import NGram
from charrnn.paths import fsync_dir

# Of config.json; run.py reads older ones (runconfig.migrate). 3: settings for validation-driven
# training and the regularisers (older runs keep their behaviour), tokenizer.json lists a
# char vocabulary in id order (a grown one is not in code-point order), init_from may be set.
# 4: --average (older runs do not average). 5: --word-split (older runs split punctuation).
# 6: --shortlist (older runs decode with one softmax). 7: --ngram (older runs have none).
FORMAT_VERSION = 7
ENDINGS = (None, "patience")  # Progress.ended: why a run ended before its length
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
NGRAM = "ngram.safetensors"
LAST = "last"
TRAINER_STATE = "trainer_state.pt"
METRICS = "metrics.jsonl"
_LAST_TMP, _LAST_OLD = ".last.tmp", ".last.old"


class CheckpointError(CharrnnError):
    """A run directory or one of its files is missing, damaged or inconsistent."""


def readable(path: Path) -> Path:
    """`path`, if it is a regular file this process may read; CheckpointError naming it and
    what is wrong otherwise (missing, a folder, a pipe that would block, no permission)."""
    problem = paths.read_problem(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    return Path(path)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would have given
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, _json_bytes(data))


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one line to metrics.jsonl. A write that fails (a full disk) is cut back off,
    so the next line does not join a torn one; a line torn by a crash is skipped by
    read_metrics."""
    line = (json.dumps(record) + "\n").encode("utf-8")
    fd = os.open(Path(run_dir) / METRICS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not os.path.lexists(path):
        return []
    records = []
    for line in readable(path).read_text(encoding="utf-8", errors="replace").splitlines():
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


def load_weights(
    path: Path, config: ModelConfig, device: str | torch.device = "cpu", data: bytes | None = None
):  # fmt: skip
    """A model built from `config` with the weights in `path`, checked tensor by tensor:
    names, shapes, and every value finite (NaN weights sample nothing and score NaN).
    `data`: the file's bytes, read already (by a caller that hashes what it loads)."""
    model = RNNLanguageModel(config)
    if data is None:
        readable(path)  # safetensors calls a file it may not read "not found"
    try:
        if data is None:
            tensors = safetensors.torch.load_file(path, device=str(device))
        else:
            tensors = {k: v.to(device) for k, v in safetensors.torch.load(data).items()}
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
        if tensors[name].is_floating_point() and not torch.isfinite(tensors[name]).all():
            raise CheckpointError(
                f"{path}: {name} holds NaN or infinite values; the file is damaged (restore "
                "it from a copy, or train again)"
            )
    model.load_state_dict(tensors)
    return model.to(device)


# Run directory ------------------------------------------------------------------------


def check_new_run_dir(run_dir: Path) -> None:
    """CheckpointError unless a new run may start in `run_dir`: a folder that does not exist
    yet and can be made, or an empty one this process may write in. A folder that holds
    anything else (the user's own files) is never written into."""
    run_dir, where = Path(run_dir), f"--run-dir {run_dir}"
    names = []
    if run_dir.is_dir():
        try:
            names = sorted(os.listdir(run_dir))
        except OSError as e:
            raise CheckpointError(f"{where}: cannot read this folder ({e.strerror})") from None
    if CONFIG in names:
        raise CheckpointError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick "
            "another --run-dir"
        )
    if names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise CheckpointError(
            f"{where}: the folder holds files that are not a charrnn run ({shown}); a run "
            "starts only in a new or empty folder: pick another --run-dir"
        )
    problem = paths.folder_problem(run_dir)
    if problem is not None:
        raise CheckpointError(f"{where}: {problem}")


def create_run(run_dir: Path, config: dict, tokenizer, ngram: NGram | None = None) -> None:
    """Start a run directory: config.json, the tokenizer (and the n-gram's tables), before
    any weights exist; made whole or not at all (paths.make_folder), config.json last.
    CheckpointError naming the folder and why it could not be made (a full disk, a
    read-only filesystem)."""
    files = {**tokenizer.files(), **({NGRAM: ngram_bytes(ngram)} if ngram else {})}
    files[CONFIG] = _json_bytes({"format_version": FORMAT_VERSION, **config})

    def fill(folder: Path) -> None:
        for name, data in files.items():
            atomic_write(folder / name, data)

    try:
        paths.make_folder(Path(run_dir), fill)
    except OSError as e:
        raise CheckpointError(
            f"--run-dir {run_dir}: cannot create the run ({paths.reason(e)})"
        ) from None


def ngram_bytes(ngram: NGram) -> bytes:
    """The n-gram's tables as safetensors bytes."""
    metadata = {"order": str(ngram.order), "vocab_size": str(ngram.vocab_size)}
    return safetensors.torch.save(ngram.tensors(), metadata=metadata)


def save_ngram(run_dir: Path, ngram: NGram) -> None:
    atomic_write(Path(run_dir) / NGRAM, ngram_bytes(ngram))


def load_ngram(run_dir: Path, config: ModelConfig) -> NGram:
    """The run's n-gram (ngram.safetensors), checked: its tables, sorted keys of the
    vocabulary's ids and positive counts."""
    path = readable(Path(run_dir) / NGRAM)
    try:
        tensors = safetensors.torch.load_file(path)
        return NGram.of_tensors(tensors, config.ngram, config.vocab_size)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not the n-gram of this run ({e})") from None


def save_weights(run_dir: Path, model: RNNLanguageModel) -> None:
    """Replace model.safetensors with `model`'s weights."""
    atomic_write(Path(run_dir) / WEIGHTS, weights_bytes(model))


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
    try:
        atomic_write(tmp / WEIGHTS, weights_bytes(model))
        _torch_save(trainer_state, tmp / TRAINER_STATE)
        fsync_dir(tmp)
    except BaseException:  # a full disk: no half-written .last.tmp/ stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if last.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(last, old)
    os.replace(tmp, last)
    fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def _torch_save(obj, path: Path) -> None:
    """torch.save to `path`, fsynced; OSError if the file could not be written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    sink = paths.Sink(fd)
    try:
        torch.save(obj, sink)
        os.fsync(fd)
    except RuntimeError:
        if sink.error is not None:
            raise sink.error from None
        raise
    finally:
        os.close(fd)


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
    (runconfig.read_config checks its content and reads older format versions.)"""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        if os.path.lexists(run_dir):
            raise CheckpointError(f"{run_dir}: a {paths.what_is(run_dir)}, not a run directory")
        raise CheckpointError(f"{run_dir}: no such run directory")
    if not os.path.lexists(path):
        raise CheckpointError(f"{run_dir}: not a run directory (no {CONFIG})")
    try:
        config = json.loads(readable(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a charrnn config (a JSON object is expected)")
    return config


def load_tokenizer(run_dir: Path, vocab_size: int):
    """The run's tokenizer, checked against the vocabulary size the model was built for."""
    for name in (tokenizers.TOKENIZER_FILE, tokenizers.SENTENCEPIECE_FILE):
        if os.path.lexists(Path(run_dir) / name):  # a missing one: tokenizers.load says
            readable(Path(run_dir) / name)
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
    """The best model of a run (model.safetensors, and its n-gram), ready to sample."""
    model = load_weights(best_path(run_dir), config, device)
    if config.ngram:
        model.ngram = load_ngram(run_dir, config)
    return model


def best_path(run_dir: Path) -> Path:
    """model.safetensors of a run; CheckpointError if the run has none yet."""
    path = Path(run_dir) / WEIGHTS
    if not os.path.lexists(path):
        raise CheckpointError(f"{run_dir}: no {WEIGHTS} yet (the run has not evaluated once)")
    return path


def load_last(run_dir: Path, config: ModelConfig, device: str | torch.device = "cpu"):
    """(model, trainer_state) of the last checkpoint, for resuming; the trainer state is
    checked against what a charrnn run saves (TRAINER_STATE_KEYS)."""
    path = last_dir(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir}: no complete {LAST}/ checkpoint to resume from")
    model = load_weights(path / WEIGHTS, config, device)
    state = load_trainer_state(path / TRAINER_STATE, device)
    return model, state


# What trainer.Trainer.trainer_state() saves, and restore() reads: key -> type.
TRAINER_STATE_KEYS = {
    "optimizer": dict, "progress": dict, "state": list, "torch_rng": torch.Tensor,
    "cuda_rng": list, "python_rng": tuple, "since_eval": list,
}  # fmt: skip


def load_trainer_state(path: Path, device: str | torch.device = "cpu") -> dict:
    """last/trainer_state.pt through torch.load(weights_only=True), which never runs code
    from the file; CheckpointError naming the file if it is refused, unreadable, or not a
    charrnn trainer state."""
    readable(path)
    try:
        with warnings.catch_warnings():  # torch's advice on pickle protocols is not ours
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f" ({found[1]})" if found else ""
        raise CheckpointError(
            f"{path}: refused: it holds Python objects{what} that loading would have to run, "
            "not only tensors and data; it was not loaded and nothing in it ran"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch.load of damaged bytes raises anything
        first = (str(e).strip().splitlines() or [""])[0][:200]
        why = f"{type(e).__name__}: {first}" if first else type(e).__name__
        raise CheckpointError(f"{path}: not a trainer state charrnn can read ({why})") from None
    check_trainer_state(state, path)
    return state


def check_trainer_state(state, path: Path) -> None:
    """CheckpointError naming `path` and what is missing or of the wrong type."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a trainer state")
    missing = [k for k in TRAINER_STATE_KEYS if k not in state]
    wrong = [f"{k} is a {type(state[k]).__name__}, not a {kind.__name__}"
             for k, kind in TRAINER_STATE_KEYS.items() if k not in missing
             and not isinstance(state[k], kind)]  # fmt: skip
    if not missing and not wrong:
        progress, optimizer = state["progress"], state["optimizer"]
        if not isinstance(progress.get("step"), int):
            wrong.append("progress has no step")
        elif not all(isinstance(v, (int, float)) or (k == "ended" and v in ENDINGS)
                     for k, v in progress.items()):  # fmt: skip
            wrong.append("progress holds values that are not numbers")
        if not {"state", "param_groups"} <= set(optimizer):
            wrong.append("optimizer is not an optimizer's state_dict")
    if missing or wrong:
        problems = ([f"no {', '.join(missing)}"] if missing else []) + wrong
        raise CheckpointError(f"{path}: not a charrnn trainer state: {'; '.join(problems)}")
