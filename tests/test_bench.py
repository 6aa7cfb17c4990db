"""`charrnn bench`: the FLOP count against a hand count, and both commands end to end."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from charrnn.bench import forward_flops_per_token
from charrnn.cli import app
from charrnn.model import ModelConfig, RNNLanguageModel

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "16", "--embedding", "8", "--vocab-size", "20",
        "--steps", "3", "--untimed-steps", "1", "--device", "cpu"]  # fmt: skip


def test_flops_per_token_by_hand():
    # L=2, H=3, E=2, V=5. lstm: 4 blocks of 3 rows over [input, h]:
    # layer 0: 2*12*(2+3) = 120, layer 1: 2*12*(3+3) = 144, decoder 2*3*5 = 30.
    config = ModelConfig(vocab_size=5, cell="lstm", layers=2, hidden=3, embedding=2)
    assert forward_flops_per_token(config) == 120 + 144 + 30
    gru = ModelConfig(vocab_size=5, cell="gru", layers=2, hidden=3, embedding=2)
    assert forward_flops_per_token(gru) == 2 * 9 * 5 + 2 * 9 * 6 + 30
    rnn = ModelConfig(vocab_size=5, cell="rnn", layers=2, hidden=3, embedding=2)
    assert forward_flops_per_token(rnn) == 2 * 3 * 5 + 2 * 3 * 6 + 30


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_flops_per_token_matches_pytorchs_flop_counter(cell):
    model = RNNLanguageModel(ModelConfig(11, cell=cell, layers=3, hidden=7, embedding=5)).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.step(torch.tensor([1]), model.initial_state(1))  # one token
    assert counter.get_total_flops() == forward_flops_per_token(model.config)


@pytest.mark.parametrize("command", ["train", "sample"])
def test_bench_prints_a_table_with_the_ratio(command):
    extra = (
        ["--batch-size", "2", "--seq-len", "8"] if command == "train" else ["--num-samples", "2"]
    )
    result = runner.invoke(app, ["bench", command, *TINY, *extra])
    assert result.exit_code == 0, result.output
    for word in ("tokens/s", "MFU", "peak memory", "charrnn", "reference", "ratio",
                 "matmul peak", "torch 2", "data: "):  # fmt: skip
        assert word in result.stdout, word


def test_bench_json_and_a_corpus(text_file):
    args = ["bench", "train", *TINY, "--batch-size", "2", "--seq-len", "8", "--json"]
    result = runner.invoke(app, [*args, "--corpus", str(text_file)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert str(text_file) in record["data"] and record["kind"] == "train"
    assert record["ratio"] == pytest.approx(
        record["ours"]["tokens_per_sec"] / record["reference"]["tokens_per_sec"]
    )
    assert 0 < record["ours"]["mfu"] and record["ours"]["peak_memory"] > 0
    assert record["versions"]["torch"] == torch.__version__


def test_bench_refuses_bad_values():
    result = runner.invoke(app, ["bench", "train", *TINY, "--precision", "fp16"])
    assert result.exit_code == 2 and "CUDA" in result.stderr
    result = runner.invoke(app, ["bench", "sample", *TINY, "--cell", "lstmx"])
    assert result.exit_code == 2 and "lstmx" in result.stderr


def test_a_variant_cell_is_timed_against_nn_lstm_with_its_own_flops():
    args = ["bench", "train", *TINY, "--cell", "mlstm", "--batch-size", "2", "--seq-len", "8",
            "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    mlstm = ModelConfig(vocab_size=20, cell="mlstm", layers=1, hidden=16, embedding=8)
    lstm = ModelConfig(vocab_size=20, cell="lstm", layers=1, hidden=16, embedding=8)
    assert record["flops_per_token"] == 3 * forward_flops_per_token(mlstm)
    assert record["reference_flops_per_token"] == 3 * forward_flops_per_token(lstm)
    assert record["flops_per_token"] > record["reference_flops_per_token"]
    peak, ours, ref = record["peak_flops"], record["ours"], record["reference"]
    assert ours["mfu"] == pytest.approx(ours["tokens_per_sec"] * record["flops_per_token"] / peak)
    assert ref["mfu"] == pytest.approx(
        ref["tokens_per_sec"] * record["reference_flops_per_token"] / peak
    )
