"""charrnn.cells: every cell against its paper's equations (tests/reference_cells.py), and
the invariants the model and the sampler rely on."""

import pytest
import torch
from torch import nn

from charrnn.cells import CELLS, make_cell
from charrnn.cells.matmul import linear, pack
from charrnn.model import ModelConfig, RNNLanguageModel
from tests.reference_cells import REFERENCES

NAMES = list(CELLS)
STOCK = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
NEW = [name for name in NAMES if name not in STOCK]
B, T, E, H = 3, 7, 5, 4


def setup(name, dtype=torch.float64, batch=B, steps=T, hidden=H, seed=0, scale=1.0):
    """A cell with random weights (uniform in +-scale), a window x and a random state."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = make_cell(name, E, hidden).to(dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_((torch.rand(p.shape, generator=gen, dtype=dtype) * 2 - 1) * scale)
    x = torch.randn(batch, steps, E, generator=gen, dtype=dtype)
    state = tuple(torch.randn(batch, hidden, generator=gen, dtype=dtype) for _ in cell.state_names)
    return cell, x, state


def parameters(cell):
    return dict(cell.named_parameters())


@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_the_equations(name):
    cell, x, state = setup(name)
    ys, final = cell(x, state)
    want_ys, want_final, _ = REFERENCES[name](parameters(cell), x, state)
    torch.testing.assert_close(ys, want_ys)
    assert len(final) == len(cell.state_names)
    for got, want in zip(final, want_final):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", NAMES)
def test_a_model_of_three_layers_matches_the_equations_layer_by_layer(name):
    """The whole model (embedding, 3 stacked cells, decoder), window and step, against the
    references fed each layer's output as the next one's input, from a random state."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=11, cell=name, layers=3, hidden=H, embedding=E)
    model = RNNLanguageModel(config).double().eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 11, (B, T), generator=gen)
    state = tuple(torch.randn(3, B, H, generator=gen, dtype=torch.float64)
                  for _ in config.state_names)  # fmt: skip
    x, finals = model.embed(ids), []
    for i, layer in enumerate(model.layers):
        x, final, _ = REFERENCES[name](parameters(layer), x, tuple(s[i] for s in state))
        finals.append(final)
    want_logits = model.decoder(x)
    logits, final = model(ids, state)
    torch.testing.assert_close(logits, want_logits)
    for got, want in zip(final, zip(*finals), strict=True):
        torch.testing.assert_close(got, torch.stack(want))
    stepped = state
    for t in range(T):  # the step interface, token by token, gives the same
        out, stepped = model.step(ids[:, t], stepped)
        torch.testing.assert_close(out, want_logits[:, t])


@pytest.mark.parametrize("name", NAMES)
def test_step_and_its_gates_match_the_equations(name):
    cell, x, state = setup(name)
    want_ys, want_final, want_gates = REFERENCES[name](parameters(cell), x, state)
    for t in range(T):
        state, gates = cell.step(x[:, t], state, observe=True)
        torch.testing.assert_close(state[0], want_ys[:, t])
        assert tuple(gates) == cell.gate_names
        for k in cell.gate_names:
            torch.testing.assert_close(gates[k], want_gates[t][k])
    for got, want in zip(state, want_final):
        torch.testing.assert_close(got, want)


def weighted_loss(ys, final, gen):
    """A loss that reaches every output: random weights on h at every step and the final state."""
    loss = (ys * torch.randn(ys.shape, generator=gen, dtype=ys.dtype)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=s.dtype)).sum()
    return loss


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_the_equations(name):
    cell, x, state = setup(name)
    x, state = x.requires_grad_(), tuple(s.requires_grad_() for s in state)
    loss = weighted_loss(*cell(x, state), torch.Generator().manual_seed(1))
    got = torch.autograd.grad(loss, [x, *state, *cell.parameters()])

    p = {n: q.detach().clone().requires_grad_() for n, q in cell.named_parameters()}
    x2, state2 = x.detach().requires_grad_(), tuple(s.detach().requires_grad_() for s in state)
    ys, final, _ = REFERENCES[name](p, x2, state2)
    loss = weighted_loss(ys, final, torch.Generator().manual_seed(1))
    want = torch.autograd.grad(loss, [x2, *state2, *p.values()])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("name", NEW)
def test_gradcheck(name):
    """The hand-written backward of each window (and minGRU's scan) by finite differences,
    for the inputs, the initial state and every weight."""
    cell, x, state = setup(name, batch=2, steps=3, hidden=3)
    names = [n for n, _ in cell.named_parameters()]
    weights = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def window(x, *rest):
        st, ws = rest[: len(state)], rest[len(state) :]
        ys, final = torch.func.functional_call(cell, dict(zip(names, ws)), (x, st))
        return ys, *final

    inputs = (x.requires_grad_(), *(s.requires_grad_() for s in state), *weights)
    assert torch.autograd.gradcheck(window, inputs)


@pytest.mark.parametrize("name", NAMES)
def test_stepping_equals_forward_in_float32(name):
    """What sampling relies on: T steps give forward's outputs and final state; observe
    changes no state. float32, so oneDNN's matmul (a CPU's fast path) is the one checked."""
    cell, x, state = setup(name, dtype=torch.float32, scale=0.5)
    ys, final = cell(x, state)
    with torch.no_grad():
        ys_no_grad, _ = cell(x, state)
    torch.testing.assert_close(ys_no_grad, ys)
    plain, observed = state, state
    for t in range(T):
        plain, nothing = cell.step(x[:, t], plain)
        observed, gates = cell.step(x[:, t], observed, observe=True)
        assert nothing is None and isinstance(gates, dict)
        torch.testing.assert_close(plain[0], ys[:, t], atol=2e-5, rtol=1e-4)
        for a, b in zip(plain, observed):
            torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)
    for a, b in zip(plain, final):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_float32_window_and_gradients_agree_with_float64(name):
    cell, x, state = setup(name, scale=0.5)
    cell32 = make_cell(name, E, H)
    cell32.load_state_dict({k: v.float() for k, v in cell.state_dict().items()})
    ys, final = cell(x, state)
    ys_weight, final_weights = torch.randn_like(ys), [torch.randn_like(s) for s in final]
    x_grads = []
    for c, dtype in ((cell, torch.float64), (cell32, torch.float32)):
        xs = x.detach().to(dtype).requires_grad_()
        ys, final = c(xs, tuple(s.to(dtype) for s in state))
        loss = (ys * ys_weight.to(dtype)).sum()
        loss = loss + sum((s * w.to(dtype)).sum() for s, w in zip(final, final_weights))
        loss.backward()
        x_grads.append(xs.grad)
    for (n, p64), p32 in zip(cell.named_parameters(), cell32.parameters()):
        torch.testing.assert_close(p32.grad, p64.grad.float(), atol=1e-4, rtol=1e-4, msg=n)
    torch.testing.assert_close(x_grads[1], x_grads[0].float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name):
    """DDP refuses parameters that take no part: a variant creates only what it uses."""
    cell, x, state = setup(name)
    cell(x, state)[0].sum().backward()
    for n, p in cell.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_peephole_without_peepholes_is_lstm():
    lstm, x, state = setup("lstm")
    peephole = make_cell("peephole", E, H).double()
    with torch.no_grad():  # same block order (i, f, g, o); one bias for PyTorch's two
        peephole.weight_ih.copy_(lstm.weight_ih_l0)
        peephole.weight_hh.copy_(lstm.weight_hh_l0)
        peephole.bias.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
        peephole.peephole.zero_()
    (ys, final), (want_ys, want_final) = peephole(x, state), lstm(x, state)
    torch.testing.assert_close(ys, want_ys)
    for a, b in zip(final, want_final):
        torch.testing.assert_close(a, b)


def test_cifg_has_no_forget_gate_weights():
    count = {n: sum(p.numel() for p in make_cell(n, E, H).parameters()) for n in CELLS}
    # One block (input weights, recurrent weights, bias) and one peephole row fewer.
    assert count["cifg"] == count["peephole"] - (H * E + H * H + H + H)
    cell, x, state = setup("cifg")
    for t in range(T):
        state, gates = cell.step(x[:, t], state, observe=True)
        torch.testing.assert_close(gates["f"], 1 - gates["i"])


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_mingru_scan_equals_its_sequential_form(scale):
    """From a carried non-zero state (negative values too), over a short and a long window;
    the scan in float32 against the step loop in float64 (scale 3 saturates z: the log of
    the running product of (1 - z) falls to about -1000 over 512 steps)."""
    cell, x, state = setup("mingru", steps=512, hidden=16, scale=scale)
    want = []
    h = state
    with torch.no_grad():
        for t in range(x.shape[1]):
            h, _ = cell.step(x[:, t], h)
            want.append(h[0])
    want = torch.stack(want, 1)
    cell32 = make_cell("mingru", E, 16)
    cell32.load_state_dict({k: v.float() for k, v in cell.state_dict().items()})
    x32, state32 = x.float(), tuple(s.float() for s in state)
    for steps in (5, 512):
        ys, final = cell(x[:, :steps], state)  # float64
        torch.testing.assert_close(ys, want[:, :steps])
        ys32, _ = cell32(x32[:, :steps], state32)
        assert torch.isfinite(ys32).all()
        torch.testing.assert_close(ys32, want[:, :steps].float(), atol=1e-5, rtol=1e-4)
    # Two windows, the second from the first's final state, are one window.
    first, carried = cell(x[:, :200], state)
    second, _ = cell(x[:, 200:], carried)
    torch.testing.assert_close(torch.cat([first, second], 1), want)


@pytest.mark.parametrize("name, module", STOCK.items())
def test_stock_cells_keep_the_nn_modules_state_dict(name, module):
    cell, reference = make_cell(name, E, H), module(E, H, batch_first=True)
    assert list(cell.state_dict()) == list(reference.state_dict())
    cell.load_state_dict(reference.state_dict())  # strict: checkpoints of 0.1 load
    x, h = torch.randn(B, T, E), torch.zeros(1, B, H)
    want, _ = reference(x, (h, h) if name == "lstm" else h)
    torch.testing.assert_close(cell(x, tuple(h[0] for _ in cell.state_names))[0], want)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("gru", "rnn", "nfg", "mingru")])
def test_forget_bias_sets_the_forget_gates_bias(name):
    """With every weight zero, f = sigmoid(forget_bias); cifg's f = 1 - i too."""
    cell = make_cell(name, E, H, forget_bias=1.5)
    with torch.no_grad():
        for n, p in cell.named_parameters():
            if not n.startswith("bias"):
                p.zero_()
    state = tuple(torch.randn(B, H) for _ in cell.state_names)
    _, gates = cell.step(torch.randn(B, E), state, observe=True)
    torch.testing.assert_close(gates["f"], torch.full((B, H), torch.tensor(1.5).sigmoid().item()))
    if name == "lstm":  # the whole of it on bias_ih_l0
        assert (cell.bias_ih_l0[H : 2 * H] == 1.5).all() and (cell.bias_hh_l0[H : 2 * H] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_forget_bias_none_keeps_the_default_and_others_ignore_it(name):
    torch.manual_seed(0)
    default = make_cell(name, E, H)
    torch.manual_seed(0)
    given = make_cell(name, E, H, forget_bias=None if "f" in CELLS[name].gate_names else 2.0)
    for (n, a), b in zip(default.state_dict().items(), given.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("name", NAMES)
def test_interface(name):
    cls = CELLS[name]
    assert cls.name == name and cls.state_names[0] == "h"
    assert set(cls.sigmoid_gates) <= set(cls.gate_names)
    G = {"lstm": 4, "gru": 3, "rnn": 1, "nig": 3, "nfg": 3, "nog": 3, "cifg": 3, "mingru": 2}
    assert cls.gate_weights == G.get(name, 4)
    extra = {"fgr": 9 * H * H, "mlstm": H * (E + H), "mingru": -2 * H * H}
    want = 2 * (cls.gate_weights * H * (E + H) + extra.get(name, 0))
    assert make_cell(name, E, H).flops_per_token() == want


def test_make_cell_names_the_choices():
    with pytest.raises(ValueError, match="mingru"):
        make_cell("lstmm", E, H)


def test_linear_on_views_equals_torch():
    """oneDNN's matmul (float32, CPU, no autograd) on the strided views the windows use."""
    x, w, add = torch.randn(6, 3, 8), torch.randn(10, 8), torch.randn(6, 3, 10)
    torch.testing.assert_close(linear(x[:, 1], w, add[:, 2]), x[:, 1] @ w.t() + add[:, 2])
    torch.testing.assert_close(linear(x[:, 1], w.t().t()), x[:, 1] @ w.t())
    flat = x.transpose(0, 1).flatten(0, 1)  # [18, 8]
    torch.testing.assert_close(linear(flat.t(), flat.t()), flat.t() @ flat)


def test_linear_with_a_packed_weight_equals_torch():
    x, w, add = torch.randn(4, 8), torch.randn(10, 8), torch.randn(4, 10)
    packed = pack(w, 4)  # oneDNN's layout on a CPU; w itself where oneDNN is missing
    torch.testing.assert_close(linear(x, packed, add), x @ w.t() + add)
    torch.testing.assert_close(linear(x, packed), x @ w.t())
    assert pack(w.double(), 4) is not None and not pack(w.double(), 4).is_mkldnn
