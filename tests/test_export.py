"""`charrnn export`: the one-token step as ONNX, run in onnxruntime against PyTorch's own
step over 100 steps for every cell, with the contract docs/export.md states (names,
shapes, dtypes, the batch axis, the tokenizer beside it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn import api, checkpoint
from charrnn import export as exporting
from charrnn.cells import CELLS
from charrnn.cli import app
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer, load

from .conftest import start_run

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
runner = CliRunner()
SYMBOLS = sorted("abcdefgh \n")  # ids in code-point order, as a fit gives them


def make_run(root, cell: str, layers: int = 2, shortlist: int = 0):
    """A run directory of an untrained model of `cell` (random weights: nothing to learn
    here but the arithmetic), loaded."""
    torch.manual_seed(0)
    tok = CharTokenizer(SYMBOLS)
    config = ModelConfig(vocab_size=tok.vocab_size, cell=cell, layers=layers, hidden=16,
                         embedding=8, shortlist=shortlist)  # fmt: skip
    model = RNNLanguageModel(config)
    if shortlist:
        torch.nn.init.normal_(model.rest.weight)  # (it starts at 0)
    run_dir = root / cell
    start_run(run_dir, model, tok)
    checkpoint.save_weights(run_dir, model)
    return api.load(run_dir)


def onnx_steps(path, model, steps: int = 100, batch: int = 2) -> float:
    """The largest |onnxruntime - PyTorch| of logits and states, feeding each its own
    state back, over `steps` random tokens."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = list(model.config.state_names)
    ids = torch.randint(0, model.config.vocab_size, (steps, batch),
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    state = model.initial_state(batch)
    feed = {n: np.zeros(s.shape, np.float32) for n, s in zip(names, state)}
    worst = 0.0
    with torch.no_grad():
        for t in range(steps):
            logits, state = model.step(ids[t], state)
            out = session.run(None, {"ids": ids[t].numpy().astype(np.int64), **feed})
            worst = max(worst, float(np.abs(out[0] - logits.numpy()).max()))
            feed = dict(zip(names, out[1:]))
    return worst


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_cell_exports_and_onnxruntime_gives_pytorchs_logits(cell, tmp_path):
    run = make_run(tmp_path, cell)
    out = tmp_path / "onnx"
    out.mkdir()
    result = runner.invoke(app, ["export", str(run.dir), "--onnx", str(out / "model.onnx")])
    assert result.exit_code == 0, result.output
    assert onnx_steps(out / "model.onnx", run.model) <= 1e-4
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = list(CELLS[cell].state_names)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    assert [i.name for i in inputs] == ["ids", *names]
    assert [o.name for o in outputs] == ["logits", *(f"{n}_next" for n in names)]
    assert inputs[0].type == "tensor(int64)" and inputs[1].type == "tensor(float)"
    assert inputs[1].shape[0] == 2 and inputs[1].shape[2] == 16 and isinstance(
        inputs[1].shape[1], str)  # [L, B, H], B dynamic  # fmt: skip
    assert outputs[0].shape[1] == len(SYMBOLS) + 1
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["cell"] == cell and meta["state_names"] == ",".join(names)
    assert meta["eos_id"] == "0" and json.loads(meta["contract"])["inputs"] == ["ids", *names]
    beside = load(out)  # the tokenizer beside it: ids -> text, as the run's
    assert beside.files() == run.tokenizer.files() and beside.decode([1, 2, 3]) == "\n a"


def test_a_shortlist_exports_its_log_probabilities(tmp_path):
    run = make_run(tmp_path, "lstm", layers=1, shortlist=4)
    done = exporting.export(run, tmp_path / "short.onnx", check_steps=2)
    assert onnx_steps(done.path, run.model, steps=20) <= 1e-4
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    zero = np.zeros((1, 3, 16), np.float32)
    logits = session.run(None, {"ids": np.arange(3), "h": zero, "c": zero})[0]
    np.testing.assert_allclose(np.exp(logits).sum(-1), 1.0, rtol=1e-5)  # two softmaxes, one sum


def test_a_batch_of_any_size_runs(tmp_path):
    run = make_run(tmp_path, "gru", layers=1)
    done = exporting.export(run, tmp_path / "gru.onnx", check_steps=2)
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        ids = np.zeros(batch, np.int64)
        logits, h = session.run(None, {"ids": ids, "h": np.zeros((1, batch, 16), np.float32)})
        assert logits.shape == (batch, len(SYMBOLS) + 1) and h.shape == (1, batch, 16)


def test_a_cell_that_cannot_export_is_refused_in_one_line(tmp_path, monkeypatch):
    run = make_run(tmp_path, "rnn", layers=1)
    monkeypatch.setitem(exporting.REFUSED, "rnn", "its step uses an operator ONNX lacks")
    result = runner.invoke(app, ["export", str(run.dir), "--onnx", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "a rnn model cannot be exported to ONNX: its step uses an operator" in result.output
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "give --onnx FILE"),
        (["--onnx", "{tmp}/no/such/folder/m.onnx"], "no folder"),
        (["--onnx", "{tmp}"], "is a folder"),
        (["--onnx", "{tmp}/clash/m.onnx"], "another model's tokenizer"),
    ],
)
def test_bad_export_lines_are_one_line(tmp_path, args, needle):
    run = make_run(tmp_path, "rnn", layers=1)
    (tmp_path / "clash").mkdir()
    (tmp_path / "clash" / "tokenizer.json").write_text("{}")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, ["export", str(run.dir), *args])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert result.output.count("\n") == 1


def test_without_the_extra_export_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    run = make_run(tmp_path, "rnn", layers=1)
    real = importlib.util.find_spec
    hidden = "onnxscript"
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == hidden else real(name, *a))  # fmt: skip
    result = runner.invoke(app, ["export", str(run.dir), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert "charrnn export needs onnxscript: pip install 'charrnn[export]'" in result.output
