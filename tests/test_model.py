"""The model against a reference written from the cell equations, and its state contract."""

import pytest
import torch

from charrnn.errors import ConfigError
from charrnn.model import ModelConfig, RNNLanguageModel, detach

from .conftest import TEXT


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    # PyTorch's gate order: input, forget, cell candidate, output.
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def reference_forward(model: RNNLanguageModel, ids, state):
    """The model's forward, one time step and one layer at a time, from the equations."""
    cell = model.config.cell
    x = model.embed(ids)  # [B, T, E]
    finals = []
    for layer_index, layer in enumerate(model.layers):
        w = (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
        h = state[0][layer_index]
        c = state[1][layer_index] if cell == "lstm" else None
        outputs = []
        for t in range(x.shape[1]):
            if cell == "lstm":
                h, c = lstm_cell(x[:, t], h, c, *w)
            elif cell == "gru":
                h = gru_cell(x[:, t], h, *w)
            else:
                h = rnn_cell(x[:, t], h, *w)
            outputs.append(h)
        x = torch.stack(outputs, dim=1)
        finals.append((h, c) if cell == "lstm" else (h,))
    state = tuple(torch.stack(parts) for parts in zip(*finals))
    return model.decoder(x), state


def make(cell, layers=2, **kw):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=11, cell=cell, layers=layers, hidden=16, embedding=8, **kw)
    return RNNLanguageModel(config).double().eval()


def random_state(model, batch):
    g = torch.Generator().manual_seed(1)
    L, H = model.config.layers, model.config.hidden
    n = len(model.config.state_names)
    return tuple(torch.randn(L, batch, H, generator=g, dtype=torch.float64) for _ in range(n))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_matches_the_reference_cell_equations(cell):
    model = make(cell, layers=3)
    ids = torch.randint(0, 11, (4, 9), generator=torch.Generator().manual_seed(2))
    state = random_state(model, 4)
    logits, final = model(ids, state)
    ref_logits, ref_final = reference_forward(model, ids, state)
    torch.testing.assert_close(logits, ref_logits)
    for got, want in zip(final, ref_final, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_state_shapes_are_explicit(cell):
    model = make(cell)
    logits, state = model(torch.zeros(3, 5, dtype=torch.long))
    assert logits.shape == (3, 5, 11)
    assert len(state) == (2 if cell == "lstm" else 1)
    assert all(s.shape == (2, 3, 16) for s in state)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_twelve_steps_equal_five_then_seven_with_the_carried_state(cell):
    model = make(cell)
    ids = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(3))
    whole, whole_state = model(ids)
    first, state = model(ids[:, :5])
    second, state = model(ids[:, 5:], detach(state))
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    for a, b in zip(state, whole_state, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_overfits_one_batch(cell):
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=7, cell=cell, layers=1, hidden=32, embedding=8))
    ids = torch.randint(0, 7, (2, 17), generator=torch.Generator().manual_seed(4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits, _ = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_tied_weights_share_one_matrix_and_need_equal_sizes():
    model = RNNLanguageModel(ModelConfig(vocab_size=5, hidden=8, embedding=8, tie_weights=True))
    assert model.decoder.weight is model.embed.weight
    with pytest.raises(ConfigError, match="--tie-weights needs --embedding equal to --hidden"):
        ModelConfig(vocab_size=5, hidden=8, embedding=4, tie_weights=True)


@pytest.mark.parametrize(
    "field, value, shown",
    [("cell", "transformer", "'transformer'"), ("layers", 0, "0"), ("hidden", -1, "-1"),
     ("dropout", 1.0, "1"), ("layers", 2.5, "2.5"), ("dropout", float("nan"), "nan")],
)  # fmt: skip
def test_config_names_the_flag_and_the_bad_value(field, value, shown):
    flag = "--" + field.replace("_", "-")
    with pytest.raises(ConfigError, match=f"^{flag} .*{shown}"):
        ModelConfig(vocab_size=5, **{field: value})


def test_forget_bias_is_one_declaration_from_flag_to_config_info_and_resume(tmp_path):
    """A model option, declared once in ModelConfig: the flag, its help, config.json, info
    and the resume check all follow from that declaration."""
    import json

    from typer.testing import CliRunner

    from charrnn.cli import app

    from .conftest import cli_train

    run = cli_train(tmp_path, TEXT, "--forget-bias", "1.5", "--steps", "2")
    assert json.loads((run / "config.json").read_text())["model"]["forget_bias"] == 1.5
    model = RNNLanguageModel(ModelConfig(vocab_size=5, hidden=4, embedding=2, forget_bias=1.5))
    f = slice(4, 8)  # PyTorch's gate order i, f, g, o
    assert (model.layers[0].bias_ih_l0[f] + model.layers[0].bias_hh_l0[f] == 1.5).all()
    runner = CliRunner()
    assert "--forget-bias 1.5" in runner.invoke(app, ["info", str(run)]).stdout
    refused = runner.invoke(app, ["train", "--resume", str(run), "--forget-bias", "2"])
    assert refused.exit_code == 2
    assert "--forget-bias 2 differs from the run's 1.5" in refused.stderr
    assert "--forget-bias X" in runner.invoke(app, ["train", "--help"]).stdout


def test_a_shortlist_gives_exact_probabilities_and_scores_only_the_rest_it_needs():
    """Two softmaxes (the 4 commonest ids and a class for the other 7) make one
    distribution; a target's nats from forward(targets=) are -log of it, whether the
    target is on the shortlist or among the rest, and training moves the rest's rows only
    through the targets among them."""
    model = make("lstm", layers=1, shortlist=4, tie_weights=False)
    torch.nn.init.normal_(model.rest.weight)  # the class of the rest starts at 0: move it
    ids = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(2))
    targets = torch.roll(ids, -1, 1)
    logits, state = model(ids)
    probs = logits.exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 9, dtype=torch.float64))
    nats, same = model(ids, None, targets)
    want = -logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(nats, want.float(), check_dtype=False)
    assert (targets < 4).any() and (targets >= 4).any()
    torch.testing.assert_close(same, state)
    step, _ = model.step(ids[:, 0], model.initial_state(3))  # one token: the same logits
    torch.testing.assert_close(step, logits[:, 0])
    model.train()
    model(ids, None, torch.full_like(ids, 2))[0].sum().backward()  # no target among the rest
    assert (model.decoder.weight.grad[4:] == 0).all() and (model.decoder.weight.grad[:4] != 0).any()


def test_a_shortlist_as_long_as_the_vocabulary_is_one_softmax():
    one = make("lstm", layers=1)
    long = make("lstm", layers=1, shortlist=11)
    assert not hasattr(long, "rest") and long.state_dict().keys() == one.state_dict().keys()
    ids = torch.arange(11)[None]
    torch.testing.assert_close(long(ids)[0], one(ids)[0])
    nats, _ = one(ids[:, :-1], None, ids[:, 1:])
    torch.testing.assert_close(nats[0], torch.nn.functional.cross_entropy(
        one(ids[:, :-1])[0][0], ids[0, 1:], reduction="none"), check_dtype=False)  # fmt: skip
