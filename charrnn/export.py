"""A run's one-token step as an ONNX graph, checked in onnxruntime before it is written.

Owns: `export(run, path)`. The graph is `model.step` on a CPU in float32, traced by
torch.onnx's exporter (torch.export underneath) with oneDNN off, so that the cells' plain
matmuls are traced rather than matmul.py's oneDNN calls, which ONNX has no operator for.

    inputs   ids         int64 [B]        the token just read (<eos>, id 0, to start)
             h, c, ...   float32 [L, B, H] the state, one input per state name of the
                                          cell (lstm: h, c; gru and rnn: h; fgr: h c i f o)
    outputs  logits      float32 [B, V]   scores of the next token (softmax: probabilities)
             h_next, ... float32 [L, B, H] the state after the token, fed back as h, ...

B is a dynamic axis. The tokenizer's files (tokenizer.json, and tokenizer.model for bpe
and unigram) go beside the graph, as in a run directory; the graph's metadata names the
cell, the state, the tokenizer and the charrnn version. Before anything is written the
graph runs in onnxruntime for CHECK_STEPS steps from a zero state, and its logits and
states must agree with PyTorch's within TOLERANCE. docs/export.md has the contract.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from charrnn import checkpoint, version
from charrnn.errors import CharrnnError, ConfigError

EXTRA = ("onnx", "onnxscript", "onnxruntime")
OPSET = 18
CHECK_STEPS = 100
TOLERANCE = 1e-4
REFUSED: dict[str, str] = {}  # cell -> why its step cannot be exported (none so far)


class Step(nn.Module):
    """model.step as a module: (ids [B], *state [L, B, H]) -> (logits [B, V], *state)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, *state: torch.Tensor):
        logits, new = self.model.step(ids, state)
        return (logits, *new)


@dataclass(frozen=True)
class Exported:
    """What export() wrote and how closely onnxruntime agreed with PyTorch."""

    path: Path
    tokenizer_files: list[Path]
    inputs: list[str]
    outputs: list[str]
    max_difference: float  # max |logits and states, onnxruntime - PyTorch| over the check
    steps: int


def export(run, path: str | Path, check_steps: int = CHECK_STEPS) -> Exported:
    """Write `run`'s step as ONNX to `path`, its tokenizer's files beside it; CharrnnError
    for a cell that cannot be exported, a missing extra or a path that cannot be written."""
    path = Path(path)
    cell = run.config.model.cell
    if cell in REFUSED:
        raise ConfigError(f"a {cell} model cannot be exported to ONNX: {REFUSED[cell]}")
    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise CharrnnError(f"charrnn export needs {', '.join(missing)}: pip install "
                           "'charrnn[export]'")  # fmt: skip
    _check_folder(path, run.tokenizer)
    model = _cpu_copy(run)
    names = list(run.config.model.state_names)
    proto = _graph(model, names)
    _describe(proto, run, names)
    data = proto.SerializeToString()
    difference = check(data, model, check_steps)
    if not difference <= TOLERANCE:  # NaN too
        raise CharrnnError(f"the ONNX graph of this {cell} model differs from PyTorch by "
                           f"{difference:.3g}, more than {TOLERANCE:g}: not written")  # fmt: skip
    written = []
    for name, content in run.tokenizer.files().items():
        checkpoint.atomic_write(path.parent / name, content)
        written.append(path.parent / name)
    checkpoint.atomic_write(path, data)
    return Exported(path, written, ["ids", *names], ["logits", *_next(names)], difference,
                    check_steps)  # fmt: skip


def _next(names: list[str]) -> list[str]:
    return [f"{n}_next" for n in names]


def _cpu_copy(run) -> nn.Module:
    """The run's model on a CPU in float32, in eval mode (the run's own is left as it is)."""
    model = type(run.model)(run.model.config)
    model.load_state_dict({k: v.detach().float().cpu() for k, v in run.model.state_dict().items()})
    return model.eval()


def _check_folder(path: Path, tokenizer) -> None:
    """Refuse a folder that is not there, or that holds another tokenizer's files."""
    if not path.parent.is_dir():
        raise ConfigError(f"--onnx {path}: no folder {path.parent}; make it first")
    if path.is_dir():
        raise ConfigError(f"--onnx {path} is a folder; give the file to write, e.g. "
                          f"{path / 'model.onnx'}")  # fmt: skip
    for name, content in tokenizer.files().items():
        there = path.parent / name
        if there.exists() and there.read_bytes() != content:
            raise ConfigError(f"{there} is another model's tokenizer; export into a folder "
                              "of its own")  # fmt: skip


def _graph(model: nn.Module, names: list[str]):
    """The ONNX ModelProto of Step(model), traced with oneDNN off, batch axis dynamic."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    ids = torch.zeros(2, dtype=torch.long)
    state = model.initial_state(2)
    shapes = ({0: batch}, tuple({1: batch} for _ in names))  # ids, then *state as one
    with quiet(), torch.backends.mkldnn.flags(enabled=False), torch.no_grad():
        program = torch.onnx.export(
            Step(model), (ids, *state), dynamo=True, input_names=["ids", *names],
            output_names=["logits", *_next(names)], dynamic_shapes=shapes,
            opset_version=OPSET, verbose=False, external_data=False, report=False,
        )  # fmt: skip
    return program.model_proto


@contextlib.contextmanager
def quiet():
    """The exporter's notes about itself (warnings, and log lines about torchvision) off."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _describe(proto, run, names: list[str]) -> None:
    c = run.config.model
    props = {"producer": "charrnn", "charrnn_version": version.__version__, "cell": c.cell,
             "layers": str(c.layers), "hidden": str(c.hidden), "vocab_size": str(c.vocab_size),
             "state_names": ",".join(names), "eos_id": str(run.tokenizer.eos_id),
             "tokenizer": run.tokenizer.tokenizer, "documents": run.config.corpus.documents,
             "contract": json.dumps({"inputs": ["ids", *names],
                                     "outputs": ["logits", *_next(names)]})}  # fmt: skip
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def check(data: bytes, model: nn.Module, steps: int, batch: int = 3, seed: int = 0) -> float:
    """The largest |onnxruntime - PyTorch| of the logits and states over `steps` steps of
    `batch` streams of random tokens from a zero state."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = list(model.config.state_names)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (steps, batch), generator=generator)
    state = model.initial_state(batch)
    feed = {n: s.numpy() for n, s in zip(names, state)}
    worst = 0.0
    with torch.inference_mode():
        for t in range(steps):
            logits, state = model.step(ids[t], state)
            out = session.run(None, {"ids": ids[t].numpy(), **feed})
            for got, want in zip(out, (logits, *state)):
                worst = max(worst, float(np.abs(got - want.numpy()).max()))
            feed = dict(zip(names, out[1:]))
    return worst
