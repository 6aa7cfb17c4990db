"""Every cell works everywhere a stock cell does, through the command line: training with a
carried state and resume, seeded, batched and clamped sampling, inspect-neurons on its own
states and gates with --gate-stats, info and eval; and exact resume in process."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn.cells import CELLS
from charrnn.cli import app
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer
from charrnn.training.config import TrainConfig
from charrnn.training.loop import fit

from .conftest import TEXT, cli_train, job, load_last, start_run

runner = CliRunner()
SMALL = ["--layers", "2", "--hidden", "8", "--embedding", "4", "--batch-size", "2",
         "--seq-len", "8", "--eval-every", "2"]  # fmt: skip


def ok(args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("cell", list(CELLS))
def test_the_cell_trains_resumes_samples_is_inspected_and_scores(tmp_path, cell):
    run = cli_train(tmp_path, TEXT, "--cell", cell, "--steps", "4", *SMALL)
    ok(["train", "--resume", run, "--steps", "6"])
    assert json.loads((run / "config.json").read_text())["step"] == 6
    sample = ["sample", run, "--length", "30", "--seed", "3"]
    assert ok(sample).stdout == ok(sample).stdout and len(ok(sample).stdout) == 31
    assert len(ok([*sample, "--num-samples", "3"]).stdout) == 3 * 31  # 3 x (30 chars + \n)
    held = ok([*sample, "--clamp", "1:2=0.9"]).stdout
    assert len(held) == 31  # (a held unit changes the text; the clamp is tested in test_neurons)
    kind = CELLS[cell]
    view = ["inspect-neurons", run, "--text", "All: speak.", "--color", "never", "--top", "2"]
    out = ok([*view, "--gate-stats"]).stdout
    has = "gate saturation: fraction of characters" in out
    assert has == bool(kind.sigmoid_gates) and (has or f"a {cell} has no gates" in out)
    for gate in kind.gate_names:
        assert "layer" in ok([*view, "--state", "gates", "--gate", gate]).stdout
    if "c" in kind.state_names:
        assert "tanh(cell state c)" in ok([*view, "--state", "c"]).stdout
    assert f"--cell {cell}" in ok(["info", run]).stdout
    scored = json.loads(ok(["eval", run, tmp_path / "run.txt", "--json"]).stdout)
    assert np.isfinite(scored["loss"]) and scored["tokens"] == len(TEXT)


@pytest.mark.parametrize("cell", list(CELLS))
def test_a_stopped_run_of_the_cell_resumes_bit_identically(tmp_path, cell):
    """With every regulariser on: each draws from the random state that last/ saves."""
    tok = CharTokenizer.fit(TEXT)
    ids = np.concatenate([[0], tok.encode(TEXT)]).astype(np.int32)
    config = TrainConfig(seq_len=8, batch_size=3, steps=10, eval_every=5, warmup_steps=2)

    def model():
        torch.manual_seed(0)
        return RNNLanguageModel(ModelConfig(tok.vocab_size, cell=cell, layers=2, hidden=8,
                                            embedding=4, dropout=0.2, input_dropout=0.1,
                                            embedding_dropout=0.1, weight_drop=0.3))  # fmt: skip

    whole = model()
    start_run(tmp_path / "a", whole, tok)
    list(fit(job(whole, tok, ids, config, tmp_path / "a")))
    cut = model()
    start_run(tmp_path / "b", cut, tok)
    reports = []
    for r in fit(job(cut, tok, ids, config, tmp_path / "b"),
                 lambda: bool(reports) and reports[-1].progress.step >= 6):  # fmt: skip
        reports.append(r)
    assert reports[-1].kind == "stopped"
    resumed, saved = load_last(tmp_path / "b")
    list(fit(job(resumed, tok, ids, config, tmp_path / "b", resume=saved)))
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
