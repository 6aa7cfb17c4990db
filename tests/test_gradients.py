"""inspect-gradients: the gradient through time falls by the recurrent matrix's eigenvalue per
lag where the cell is linear, an LSTM's held forget gate keeps it, the one-backward method
equals one autograd call per window, layer and step, and the command end to end."""

import copy
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from charrnn import gradients as grads
from charrnn.cells import Cell
from charrnn.cli import app
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig

from .conftest import TEXT


def tiny(cell: str, hidden: int = 8, layers: int = 1, vocab: int = 11, seed: int = 0):
    config = ModelConfig(vocab_size=vocab, cell=cell, hidden=hidden, embedding=4, layers=layers)
    return grads.untrained(config, seed)


def linear_rnn(scale: float):
    """A tanh RNN whose h stays 0 (no input, no bias), so tanh' = 1 and d h_t / d h_{t-1}
    is its recurrent matrix, here scale * I."""
    model = tiny("rnn")
    cell = model.layers[0]
    with torch.no_grad():
        model.embed.weight.zero_()
        cell.bias_ih_l0.zero_()
        cell.bias_hh_l0.zero_()
        cell.weight_hh_l0.copy_(scale * torch.eye(8))
    return model


@pytest.mark.parametrize("scale", [0.25, 4.0])
def test_a_linear_rnn_gradient_changes_by_its_eigenvalue_per_lag(scale):
    result = grads.measure(linear_rnn(scale), grads.random_windows(11, 4, 200, seed=0))
    (flow,) = result.flows
    assert (flow.layer, flow.state, len(flow.norms)) == (0, "h", 200)
    np.testing.assert_allclose(flow.norms[1:] / flow.norms[:-1], scale, rtol=1e-9)
    # 0.25^199 and 4^199 are no float32 numbers: the measure runs in float64
    assert flow.ratio == pytest.approx(scale**199, rel=1e-9)
    assert flow.per_lag == pytest.approx(scale, rel=1e-9)
    (matrix,) = result.spectra[0].matrices
    assert matrix.name == "weight_hh_l0" and matrix.shape == (8, 8)
    assert matrix.sigma_max == pytest.approx(scale)
    assert matrix.blocks == (("all", pytest.approx(scale)),)


def held_lstm(forget_bias: float, input_bias: float):
    model = tiny("lstm", hidden=16)
    cell, H = model.layers[0], 16
    with torch.no_grad():
        for bias in (cell.bias_ih_l0, cell.bias_hh_l0):
            bias[: 2 * H] = 0.0
        cell.bias_ih_l0[:H] = input_bias  # rows i, f, g, o
        cell.bias_ih_l0[H : 2 * H] = forget_bias
    return model


def test_an_lstm_whose_forget_gate_is_held_open_keeps_the_gradient_through_c():
    windows = grads.random_windows(11, 8, 200, seed=1)
    held = grads.measure(held_lstm(forget_bias=20.0, input_bias=-20.0), windows)
    c = next(f for f in held.flows if f.state == "c")
    assert [f.state for f in held.flows] == ["h", "c"]
    assert 0.5 < c.ratio < 2, c.norms[[0, 9, 99, 199]]
    # the control: with PyTorch's initialisation the same cell forgets, by far
    free = grads.measure(tiny("lstm", hidden=16), windows)
    assert next(f for f in free.flows if f.state == "c").ratio < 1e-6


def lstm_step_with(cell, x, state, delta):
    """An LSTM step from its equations, with `delta` added to c before h is made of it."""
    w_ih, w_hh, b_ih, b_hh = cell.weight_ih_l0, cell.weight_hh_l0, cell.bias_ih_l0, cell.bias_hh_l0
    i, f, g, o = (x @ w_ih.T + b_ih + state[0] @ w_hh.T + b_hh).chunk(4, -1)
    c = i.sigmoid() * g.tanh() + f.sigmoid() * state[1] + delta
    return o.sigmoid() * c.tanh(), c


def reference_norm(model, row, warmup: int, layer: int, name: str, step: int) -> float:
    """||d loss / d state|| of one window, one layer's state at one step, written as a plain
    loop over the cells (their fused one-step functions, not the observer's path): a zero
    leaf added to that state is what the gradient is taken with respect to. For c it is
    added before h is made of c: the total derivative, as for h."""
    m = copy.deepcopy(model).double()
    states = [tuple(s[i] for s in m.initial_state(1)) for i in range(len(m.layers))]
    delta = torch.zeros(1, m.config.hidden, dtype=torch.float64, requires_grad=True)
    for t in range(len(row) - 1):
        x = m.embed(row[t : t + 1])  # [1, E]
        for i, cell in enumerate(m.layers):
            here = (t, i) == (warmup + step, layer)
            if here and name == "c":
                new = lstm_step_with(cell, x, states[i], delta)
            else:
                new, _ = cell.step(x, states[i])
                new = (new[0] + delta, *new[1:]) if here else new
            states[i], x = new, new[0]
    loss = F.cross_entropy(m.decoder(x), row[-1:])
    return float(torch.autograd.grad(loss, delta)[0].norm())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_one_backward_equals_a_separate_gradient_per_window_layer_and_step(cell):
    model = tiny(cell, hidden=5, layers=2, vocab=7, seed=3)
    windows = grads.random_windows(7, 3, max_lag=6, seed=4, warmup=3)
    result = grads.measure(model, windows)
    K = windows.max_lag
    assert K == 6 and result.max_lag == 6 and result.windows == 3
    for flow in result.flows:
        for step in range(K):  # the step s of the window is lag K - s
            norms = [
                reference_norm(model, row, 3, flow.layer, flow.state, step) for row in windows.ids
            ]
            assert flow.norms[K - step - 1] == pytest.approx(np.mean(norms), rel=1e-10)


def test_measure_leaves_the_model_as_it_was():
    model = tiny("lstm")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    grads.measure(model, grads.random_windows(11, 2, 5, seed=0))
    assert model.training and model.decoder.weight.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_windows_are_spread_over_the_text_after_their_context():
    ids = np.arange(1000)
    w = grads.windows_of(ids, 4, max_lag=10, warmup=50)
    assert w.warmup == 50 and w.max_lag == 10 and w.ids.shape == (4, 62)
    assert w.ids[:, 0].tolist() == [0, 313, 625, 938] and w.ids[-1, -1] == 999
    short = grads.windows_of(ids[:20], 8, max_lag=10, warmup=50)  # little context, few places
    assert short.warmup == 8 and short.ids.shape == (1, 20)
    with pytest.raises(ConfigError, match="--max-lag 30 needs a text of at least 31 tokens"):
        grads.windows_of(ids[:20], 8, max_lag=30)


def test_each_gate_block_has_its_spectral_radius_and_the_whole_its_singular_value():
    model = tiny("lstm", hidden=4)
    with torch.no_grad():
        w = model.layers[0].weight_hh_l0  # [4H, H], blocks i, f, g, o
        w.copy_(torch.cat([k * torch.eye(4) for k in (1.0, 2.0, 0.5, 3.0)]))
    (matrix,) = grads.spectra(model)[0].matrices
    assert [b for b, _ in matrix.blocks] == ["i", "f", "g", "o"]
    assert [r for _, r in matrix.blocks] == pytest.approx([1.0, 2.0, 0.5, 3.0])
    assert matrix.sigma_max == pytest.approx((1 + 4 + 0.25 + 9) ** 0.5)


class GatedByInput(Cell):
    """A cell like minGRU: h = z * h_{t-1} + (1 - z) * tanh(W x), z = sigmoid(U x); no
    weight sees h. With `sees_h`, z also reads h through a matrix not named weight_hh."""

    state_names, gate_names = ("h",), ("z",)

    def __init__(self, input_size: int, hidden_size: int, sees_h: bool = False):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.w = nn.Linear(input_size, 2 * hidden_size)
        self.mix = nn.Linear(hidden_size, hidden_size, bias=False) if sees_h else None

    def step(self, x, state, observe=False):
        a, b = self.w(x).chunk(2, -1)
        z = torch.sigmoid(a + (self.mix(state[0]) if self.mix is not None else 0))
        h = z * state[0] + (1 - z) * torch.tanh(b)
        return (h,), ({"z": z} if observe else None)


def test_a_cell_without_a_recurrent_matrix_says_so_and_is_still_measured():
    model = tiny("rnn", hidden=6)
    model.layers[0] = GatedByInput(4, 6)
    result = grads.measure(model, grads.random_windows(11, 2, 20, seed=0))
    assert result.spectra[0].matrices == ()
    assert result.spectra[0].note == "no recurrent matrix: its gates do not depend on h"
    assert np.isfinite(result.flows[0].norms).all() and (result.flows[0].norms > 0).all()
    model.layers[0] = GatedByInput(4, 6, sees_h=True)  # its h-matrix is not called weight_hh
    note = "no recurrent matrix declared (Cell.recurrent_weights)"
    assert grads.spectra(model)[0] == grads.Spectrum(0, (), note)
    model.layers[0].recurrent_weights = lambda: {"mix.weight": ("z",)}  # it names its own
    (matrix,) = grads.spectra(model)[0].matrices
    assert matrix.name == "mix.weight" and [b for b, _ in matrix.blocks] == ["z"]


def test_lags_shown_are_log_spaced_and_end_at_the_largest():
    assert grads.shown_lags(200) == [1, 2, 3, 5, 10, 20, 50, 100, 200]
    assert grads.shown_lags(150) == [1, 2, 3, 5, 10, 20, 50, 100, 150]
    assert grads.shown_lags(1) == [1]
    assert grads.shown_lags(4) == [1, 2, 3, 4]


# The command, end to end ---------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gradients")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    args = ["train", str(root / "corpus.txt"), "--steps", "2", "--eval-every", "2",
            "--layers", "2", "--hidden", "16", "--embedding", "8", "--batch-size", "4",
            "--seq-len", "16", "--run-dir", str(root / "run")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "run"


def inspect(*args):
    result = runner.invoke(app, ["inspect-gradients", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def test_the_table_shows_log_spaced_lags_ratios_and_spectra(run_dir):
    out = inspect(run_dir, "--text", TEXT, "--max-lag", "20", "--windows", "4").stdout
    flow = out.split("lag 20 / lag 1")[0]  # the first table
    rows = [line.split("│")[1:5] for line in flow.splitlines() if line.count("│") == 6]
    lags = [int(r[2]) for r in rows if r[0].strip() == "1" and r[1].strip() == "c"]
    assert lags == [1, 2, 3, 5, 10, 20]
    assert {(r[0].strip(), r[1].strip()) for r in rows} == {
        ("0", "h"), ("0", "c"), ("1", "h"), ("1", "c")}  # fmt: skip
    assert "lag 20 / lag 1" in out and "█" in out
    assert "weight_hh_l0 [64, 16]" in out and "spectral radius" in out


def test_json_has_every_lag_of_every_layer_and_state(run_dir):
    out = inspect(run_dir, "--text", TEXT, "--max-lag", "30", "--windows", "3", "--json")
    data = json.loads(out.stdout)
    assert data["model"] == str(run_dir) and data["cell"] == "lstm"
    assert (data["max_lag"], data["windows"], data["warmup"]) == (30, 3, 100)
    assert [(f["layer"], f["state"]) for f in data["flows"]] == [
        (0, "h"), (0, "c"), (1, "h"), (1, "c")]  # fmt: skip
    assert all(len(f["norms"]) == 30 and f["norms"][0] > 0 for f in data["flows"])
    blocks = [b["block"] for b in data["spectra"][1]["matrices"][0]["blocks"]]
    assert blocks == ["i", "f", "g", "o"]


def test_without_text_a_run_reads_samples_of_its_own(run_dir):
    result = inspect(run_dir, "--max-lag", "8", "--windows", "2", "--json")
    assert "no --text or --file: reading 2 samples" in result.stderr
    assert json.loads(result.stdout)["windows"] == 2


def test_an_untrained_cell_on_random_ids_or_on_a_text(tmp_path):
    args = ["--cell", "gru", "--hidden", "12", "--max-lag", "5", "--windows", "2",
            "--vocab-size", "20", "--json"]  # fmt: skip
    data = json.loads(inspect(*args).stdout)
    assert data["model"] == "untrained gru 1x12 (--seed 0)"
    assert [f["state"] for f in data["flows"]] == ["h"]
    assert data["spectra"][0]["matrices"][0]["shape"] == [36, 12]
    assert json.loads(inspect(*args).stdout) == data  # same --seed, same model and ids
    (tmp_path / "t.txt").write_text("abc abd " * 20, encoding="utf-8")
    out = inspect("--cell", "rnn", "--hidden", "8", "--file", tmp_path / "t.txt",
                  "--max-lag", "50").stdout  # fmt: skip
    assert "untrained rnn 1x8" in out and "lag 50 / lag 1" in out


def test_png_is_a_plot_of_the_right_size(run_dir, tmp_path):
    image = pytest.importorskip("matplotlib.image")
    path = tmp_path / "flow.png"
    result = inspect(run_dir, "--text", TEXT, "--max-lag", "40", "--windows", "2", "--png", path)
    assert f"wrote {path}" in result.stderr and "lag 40 / lag 1" in result.stdout
    pixels = image.imread(path)  # [rows, columns, RGBA]
    assert pixels.shape[:2] == (600, 1000)  # plots.WIDTH x HEIGHT
    assert pixels[..., :3].std() > 0.05  # not one colour
    assert (pixels[..., :3] < 0.5).mean() > 0.005  # axes, text and curves drawn on white


@pytest.mark.parametrize(
    "args, needle",
    [
        (["RUN", "--text", "All", "--file", "RUN"], "not both"),
        ([], "give a RUN directory, or --cell CELL"),
        (["RUN", "--hidden", "32"], "--hidden: a run has its own model"),
        (["RUN", "--vocab-size", "9"], "--vocab-size is for an untrained model"),
        (["RUN", "--text", "All:"], "--max-lag 200 needs a text of at least 201 tokens"),
        (["RUN", "--text", "All:", "--max-lag", "0"], "--max-lag must be at least 1"),
        (["RUN", "--text", "Zürich"], "'ü'"),
        (["RUN", "--text", ""], "the text is empty"),
        (["RUN", "--file", "missing.txt"], "missing.txt"),
        (["RUN", "--png", "no/such/dir/g.png"], "--png no/such/dir/g.png: there is no folder"),
        (["--cell", "rnn", "--text", "abc", "--vocab-size", "9"], "--vocab-size: with a text"),
        (["--cell", "cnn"], "'cnn' is not one of"),
        (["--cell", "rnn", "--windows", "0"], "--windows must be at least 1"),
    ],
)
def test_bad_input_is_one_clear_line(args, needle, run_dir):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    result = runner.invoke(app, ["inspect-gradients", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.output, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_png_without_matplotlib_says_how_to_get_it(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    result = runner.invoke(
        app, ["inspect-gradients", str(run_dir), "--png", str(tmp_path / "g.png")]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "charrnn: error: charrnn inspect-gradients --png needs matplotlib: "
        "pip install 'charrnn[plot]'"
    )
    assert not (tmp_path / "g.png").exists()
