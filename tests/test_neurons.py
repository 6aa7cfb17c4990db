"""Neurons: the trace against the torch modules step by step, the features, the rankings,
gate saturation, clamping, the terminal view, and the HTML page (in headless Chromium
when it is installed)."""

import base64
import json
import re
import shutil
import subprocess
from importlib import resources

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn import neurons
from charrnn.cli import app
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig, RNNLanguageModel, clamp_units
from charrnn.sample import SampleConfig, generate
from charrnn.tokenizers import CharTokenizer

from .conftest import TEXT, cli_train

CODE = 'x = foo(a, [b, c], {"d": (e)})  # call http://x\n    if (a[0]):\n        print("hi")\n'


def make(cell, layers=2, hidden=12, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=11, cell=cell, layers=layers, hidden=hidden, embedding=6)
    return RNNLanguageModel(config).eval()


def random_ids(n=23, seed=2):
    return torch.randint(1, 11, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def random_state(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    L, H = model.config.layers, model.config.hidden
    return tuple(torch.randn(L, 1, H, generator=g) for _ in model.config.state_names)


# The trace is the model -----------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_traced_final_state_and_guesses_equal_forward(cell):
    model, ids = make(cell), random_ids()
    for state in (None, random_state(model)):
        tr = neurons.trace(model, ids, state)
        with torch.no_grad():
            logits, final = model(torch.tensor([ids]), state)
        for got, want in zip(tr.final, final, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        top = logits[0].softmax(-1).topk(5)
        np.testing.assert_allclose(tr.top_probs, top.values.numpy(), rtol=1e-5, atol=1e-6)
        assert (tr.top_ids == top.indices.numpy()).all()


def layer_inputs(model, tr, layer, ids):
    """What `layer` read at each step: the embedding, or the traced h of the layer below."""
    if layer == 0:
        return model.embed(torch.tensor(ids))  # [T, E]
    return torch.from_numpy(tr.values["h"][layer - 1])  # [T, H]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_traced_gates_reproduce_the_torch_cell_step_by_step(cell):
    model, ids = make(cell), random_ids()
    state = random_state(model)
    tr = neurons.trace(model, ids, state)
    v = {k: torch.from_numpy(a) for k, a in tr.values.items()}  # each [L, T, H]
    close = dict(rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            x = layer_inputs(model, tr, i, ids)
            h, c = state[0][i, 0], state[1][i, 0] if cell == "lstm" else None
            for t in range(len(ids)):
                step_in = x[t][None, None]  # [1, 1, In]
                if cell == "lstm":
                    _, (h_mod, c_mod) = torch.nn.LSTM.forward(
                        layer, step_in, (h[None, None], c[None, None])
                    )
                    # The traced gates, put back into the equations, give the module's h and c.
                    c_gates = v["f"][i, t] * c + v["i"][i, t] * v["g"][i, t]
                    torch.testing.assert_close(c_gates, c_mod[0, 0], **close)
                    torch.testing.assert_close(v["o"][i, t] * c_gates.tanh(), h_mod[0, 0], **close)
                    torch.testing.assert_close(v["c"][i, t], c_mod[0, 0], **close)
                    c = v["c"][i, t]
                else:
                    module = (
                        torch.nn.GRU if cell == "gru" else torch.nn.RNN
                    )  # the torch module's own
                    _, h_mod = module.forward(layer, step_in, h[None, None])
                    if cell == "gru":
                        z, n = v["z"][i, t], v["n"][i, t]
                        torch.testing.assert_close((1 - z) * n + z * h, h_mod[0, 0], **close)
                torch.testing.assert_close(v["h"][i, t], h_mod[0, 0], **close)
                h = v["h"][i, t]


def test_trace_text_starts_after_eos_and_drops_that_step():
    tok = CharTokenizer.fit(TEXT)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(tok.vocab_size, layers=1, hidden=8, embedding=4))
    tr = neurons.trace_text(model, tok, "All:\nSpeak")
    full = neurons.trace(model, [tok.eos_id, *tok.encode("All:\nSpeak").tolist()])
    assert tr.tokens == tuple("All:\nSpeak") and tr.values["h"].shape == (1, 10, 8)
    np.testing.assert_array_equal(tr.values["c"], full.values["c"][:, 1:])
    np.testing.assert_array_equal(tr.top_ids, full.top_ids[1:])


# Features -----------------------------------------------------------------------------


def digits(values):
    return "".join(str(int(v)) for v in values)


def test_builtin_features_on_a_line_of_code():
    text = 'f(a, [b]) # "x"\n  y = "it\'s"\n'
    assert digits(neurons.bracket_depth(text)) == "01111221000000000000000000000"
    assert digits(neurons.inside_quotes(text)) == "00000000000011000000001111100"
    assert digits(neurons.inside_comment(text)) == "00000000001111100000000000000"
    assert digits(neurons.indentation(text)) == "00000000000000001222222222220"
    assert digits(neurons.start_of_word(text)) == "10100010000001000010000100100"
    assert list(neurons.position_in_line("ab\ncd")) == [1, 2, 0, 1, 2]
    assert digits(neurons.inside_quotes("don't 'go'")) == "0000001110"


def test_feature_names_regexes_and_bad_specs():
    tokens = list("ab12 cd3")
    assert neurons.feature("Start-of_word", tokens)[0] == "start of word"
    name, values = neurons.feature(r"\d+", tokens)
    assert name == r"regex /\d+/" and digits(values) == "00110001"
    with pytest.raises(ConfigError, match="neither a built-in feature"):
        neurons.feature("(unclosed", tokens)
    acts = np.random.default_rng(0).normal(size=(1, 8, 3))
    with pytest.raises(ConfigError, match="same on every character"):
        neurons.rank_by_feature(acts, neurons.feature("z", tokens)[1])


# Rankings and gates -------------------------------------------------------------------


def test_rank_by_feature_finds_a_planted_neuron_with_its_sign():
    rng = np.random.default_rng(0)
    target = neurons.bracket_depth("(a (b [c {d}] e) f) g " * 8)
    acts = np.tanh(rng.normal(size=(2, len(target), 6)))  # [L, T, H]
    acts[1, :, 4] = -0.2 * target + 0.01 * rng.normal(size=len(target))
    ranked = neurons.rank_by_feature(acts, target, top=3)
    best = ranked[0]
    assert (best.layer, best.neuron, best.sign) == (1, 4, -1) and best.score > 0.99
    assert all(target[c.peak] == target.max() for c in best.contexts)  # most active: deepest
    assert len(neurons.rank_by_feature(acts, target, top=3, layer=0)) == 3
    assert {r.layer for r in neurons.rank_by_feature(acts, target, top=6, layer=0)} == {0}
    with pytest.raises(ConfigError, match="--layer 2 is out of range"):
        neurons.rank_by_feature(acts, target, layer=2)


def test_rank_by_selectivity_prefers_a_detector_over_noise_and_quiet():
    rng = np.random.default_rng(0)
    acts = np.clip(rng.normal(0, 0.3, size=(1, 400, 3)), -1, 1)
    acts[0, :, 1] = -0.8
    acts[0, ::50, 1] = 0.9  # fires rarely and strongly
    acts[0, :, 2] = 0.02 * rng.normal(size=400)  # quiet: never visible
    ranked = neurons.rank_by_selectivity(acts, top=3)
    assert ranked[0].neuron == 1 and ranked[0].sign == 1
    assert ranked[-1].neuron == 2 and ranked[-1].score == 0.0
    assert all(c.value == pytest.approx(0.9) for c in ranked[0].contexts)


@pytest.mark.parametrize("cell, gates", [("lstm", "ifo"), ("gru", "rz"), ("rnn", "")])
def test_gate_saturation_counts_each_sigmoid_gate_of_each_layer(cell, gates):
    model = make(cell)
    if cell == "lstm":
        with torch.no_grad():  # a forget gate pushed wide open: right-saturated always
            model.layers[1].bias_ih_l0[12:24] = 30.0
    stats = neurons.gate_saturation(neurons.trace(model, random_ids()))
    assert [(s.layer, s.gate) for s in stats] == [(i, g) for i in range(2) for g in gates]
    for s in stats:
        assert s.left.shape == (12,) and ((s.left + s.right) <= 1).all()
    if cell == "lstm":
        assert (stats[4].right == 1.0).all() and stats[4].gate == "f"


# Clamping -----------------------------------------------------------------------------


def clamped_reference(model, ids, held: dict[tuple[int, int], float]):
    """The clamp written plainly: layer by layer, step by step, each held unit of h set
    after its layer's step, in the state carried on and in the input of the layer above."""
    state = [tuple(s[i] for s in model.initial_state(1)) for i in range(model.config.layers)]
    logits = []
    for token in ids:
        x = model.embed(torch.tensor([token]))
        for i, layer in enumerate(model.layers):
            new, _ = layer.step(x, state[i])
            h = new[0].clone()
            for (li, n), v in held.items():
                if li == i:
                    h[0, n] = v
            state[i] = (h, *new[1:])
            x = h
        logits.append(model.decoder(x))
    return torch.cat(logits), state


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_clamp_holds_units_in_the_carried_state_and_in_the_layer_above(cell):
    model, ids = make(cell), random_ids()
    held = {(0, 3): 0.75, (1, 5): -0.5}
    clamp, state, logits = clamp_units(model, held), model.initial_state(1), []
    with torch.no_grad():
        for token in ids:
            out, state = model.step(torch.tensor([token]), state, clamp=clamp)
            assert state[0][0, 0, 3].item() == 0.75 and state[0][1, 0, 5].item() == -0.5
            logits.append(out)
        want, want_state = clamped_reference(model, ids, held)
        free, _ = clamped_reference(model, ids, {})
    torch.testing.assert_close(torch.cat(logits), want)
    for i, layer_state in enumerate(want_state):
        for got, expected in zip(state, layer_state, strict=True):
            torch.testing.assert_close(got[i], expected)
    assert not torch.allclose(want, free)


def test_generate_with_a_clamp_changes_the_sample_and_checks_the_neuron():
    model = make("lstm")
    config = SampleConfig(length=40, stop_at_eos=False)

    def run(clamp):
        g = torch.Generator().manual_seed(3)
        return torch.stack([ids for ids, _ in generate(model, [3], config, 0, g, clamp=clamp)])

    assert torch.equal(run(None), run({}))
    assert not torch.equal(run(None), run({(1, 0): 1.0, (1, 1): -1.0, (0, 2): 1.0}))
    with pytest.raises(ConfigError, match="no layer 2"):
        clamp_units(model, {(2, 0): 1.0})
    with pytest.raises(ConfigError, match="no neuron 12"):
        clamp_units(model, {(0, 12): 1.0})


# The command, end to end --------------------------------------------------------------

runner = CliRunner()
ANSI = re.compile(r"\x1b\[")
SHOWN = 'x = foo(a, [b, c], {"d": (e)})\nAll:\n    if (a[0]):'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("neurons")
    # the network alone: a clamped neuron's effect on the text is the network's (a model of 4
    # steps mixed with a char n-gram that knows this text would take the n-gram's text)
    return cli_train(root, TEXT + CODE * 10, "--steps", "4", "--eval-every", "4",
                     "--layers", "2", "--hidden", "16", "--ngram", "0")  # fmt: skip


def inspect(run_dir, *args, env=None):
    result = runner.invoke(app, ["inspect-neurons", str(run_dir), *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_terminal_view_without_colour_shows_digits_and_guesses(run_dir):
    out = inspect(run_dir, "--text", SHOWN, "--layer", "1", "--neuron", "3", "--top", "0")
    lines = out.splitlines()
    assert lines[0] == f"layer 1, neuron 3: tanh(cell state c) over {len(SHOWN)} characters"
    assert not ANSI.search(out)
    first = lines.index('x = foo(a, [b, c], {"d": (e)})⏎')
    assert re.fullmatch(r"\d{31}", lines[first + 1])  # one digit per character
    assert all(len(line) == 31 for line in lines[first + 2 : first + 7])  # 5 guesses each
    assert lines[first + 7] == "" and "    if (a[0]):" in lines
    coloured = inspect(run_dir, "--text", SHOWN, "--color", "always", "--top", "0")
    assert ANSI.search(coloured) and "48;2;" in coloured  # true-colour backgrounds


def test_no_color_env_and_narrow_terminals(run_dir):
    out = inspect(run_dir, "--text", "All: " * 30, "--top", "0", env={"NO_COLOR": "1"})
    assert not ANSI.search(out)
    out = inspect(run_dir, "--text", "All: " * 30, "--top", "0", env={"COLUMNS": "40"})
    assert max(len(line) for line in out.splitlines()[2:]) <= 40  # the view wraps to fit


def test_find_ranks_neurons_by_a_feature_with_contexts(run_dir):
    out = inspect(run_dir, "--text", SHOWN * 3, "--find", "bracket depth", "--top", "4")
    assert "with bracket depth" in out.splitlines()[0]
    assert "neurons most correlated with bracket depth" in out
    rows = re.findall(r"│ +(\d) │ +([01]) │ +(\d+) │ (0\.\d{3}) │ ([+-]) +│", out)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    scores = [float(r[3]) for r in rows]
    assert scores == sorted(scores, reverse=True) and "«" in out
    out = inspect(run_dir, "--text", SHOWN * 3, "--find", r"\(|\[", "--gate-stats")
    assert "regex" in out and "gate saturation" in out and "f (forget)" in out
    out = inspect(run_dir, "--text", SHOWN, "--state", "gates", "--gate", "o", "--top", "2")
    assert "output gate o" in out and "most selective neurons" in out


def test_html_page_is_self_contained(run_dir, tmp_path):
    page = tmp_path / "neurons.html"
    inspect(run_dir, "--text", SHOWN + " http://x", "--find", "inside quotes", "--html", str(page))
    html = page.read_text(encoding="utf-8")
    assert "default-src 'none'" in html and "Content-Security-Policy" in html
    assert "://" not in html  # the text's own URL is escaped in the JSON too
    assert not re.search(r"""\b(src|href|action)\s*=|url\(|@import""", html)
    data = json.loads(re.search(r'id="data">(.*?)</script>', html, re.S)[1])
    assert data["layers"] == 2 and data["hidden"] == 16 and set(data["states"]) == set("hcifgo")
    assert "".join(data["chars"]) == SHOWN + " http://x"
    assert len(data["guesses"]) == len(data["chars"]) and len(data["guesses"][0]) == 5
    assert data["ranking"]["rows"] and data["gates"]


def test_page_html_is_package_data_filled_in_one_pass():
    template = resources.files("charrnn.neurons").joinpath("page.html").read_text("utf-8")
    assert template.count("__DATA__") == 1 and template.count("__TITLE__") == 2
    page = neurons.html_page({"x": "__TITLE__ </script>"}, "__DATA__ <b>")
    assert page.count("<title>__DATA__ &lt;b&gt;</title>") == 1  # a title, never the data
    assert page_json(page) == {"x": "__TITLE__ </script>"}


def find_chromium():
    return next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )


def dump_dom(page, profile, fragment=""):
    """The page's DOM after its scripts ran, from headless Chromium."""
    result = subprocess.run(
        [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--dump-dom", page.as_uri() + fragment],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert re.search(r"<body[^>]*>", result.stdout), result.stderr[-2000:]
    return result.stdout


needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")


@needs_chromium
def test_html_page_switches_neuron_in_a_real_browser_and_fetches_nothing(run_dir, tmp_path):
    page = tmp_path / "neurons.html"
    inspect(run_dir, "--text", SHOWN, "--html", str(page), "--top", "3")
    body = re.search(r"<body[^>]*>", dump_dom(page, tmp_path / "profile", "#selftest"))
    assert 'data-selftest="pass"' in body[0], body[0]
    assert "changed=true guesses=5 fetched=0" in body[0]


def page_json(html):
    return json.loads(re.search(r'id="data">(.*?)</script>', html, re.S)[1])


def shown_values(data, neuron):
    """The stored int8 values [T] of one neuron of the page's initial state and layer."""
    state, layer = data["initial"]["state"], data["initial"]["layer"]
    raw = base64.b64decode(data["states"][state]["layers"][layer])
    values = np.frombuffer(raw, np.int8).reshape(len(data["chars"]), data["hidden"])  # [T, H]
    return values[:, neuron].astype(int)


def backgrounds(dom, where):
    """The background colours of the text's characters ("text") or of the legend's swatches
    ("legend"), in order."""
    if where == "legend":
        dom = re.search(r'id="legend">[^<]*((?:<span[^>]*>[^<]*</span>)*)', dom)[1]
    else:
        dom = "".join(re.findall(r'<span[^>]*data-t="\d+"[^>]*>', dom))
    return re.findall(r'style="background-color: (rgb\([^)]*\));', dom)


def rgb(colour):
    return "rgb({}, {}, {})".format(*colour)


@needs_chromium
def test_html_page_colours_are_the_terminal_colours(run_dir, tmp_path):
    page = tmp_path / "neurons.html"
    inspect(run_dir, "--text", SHOWN, "--html", str(page), "--top", "3")
    data = page_json(page.read_text(encoding="utf-8"))
    dom = dump_dom(page, tmp_path / "profile")
    q = shown_values(data, data["initial"]["neuron"])
    assert backgrounds(dom, "text") == [rgb(neurons.colour(v / 127)) for v in q]
    assert len(set(backgrounds(dom, "text"))) > 3  # a neuron that varies, not one colour
    assert backgrounds(dom, "legend") == [rgb(neurons.colour(v)) for v in (-1, 0, 1)]


@needs_chromium
def test_html_page_takes_its_colour_scale_from_its_data(run_dir, tmp_path):
    page = tmp_path / "neurons.html"
    inspect(run_dir, "--text", SHOWN, "--html", str(page), "--top", "3")
    data = page_json(page.read_text(encoding="utf-8"))
    grey = [f"#{k:02x}{k:02x}{k:02x}" for k in range(255)]  # q -> grey q + 127
    data["colours"] = {"activation": grey, "guess": "#010203"}
    page.write_text(neurons.html_page(data, "grey"), encoding="utf-8")
    dom = dump_dom(page, tmp_path / "profile", "#selftest")  # shows neuron + 1, hovers t = 0
    assert 'data-selftest="pass"' in dom
    q = shown_values(data, (data["initial"]["neuron"] + 1) % data["hidden"])
    assert backgrounds(dom, "text") == [rgb((v + 127,) * 3) for v in q]
    assert backgrounds(dom, "legend") == [rgb((k,) * 3) for k in (0, 127, 254)]
    bars = re.findall(r'class="bar" style="[^"]*background-color: ([^;"]*)', dom)
    assert bars == ["rgb(1, 2, 3)"] * 5


def test_sample_clamp_changes_the_text(run_dir):
    args = ["sample", str(run_dir), "--length", "80", "--seed", "5", "--prime", "All:"]
    plain = runner.invoke(app, args)
    held = runner.invoke(app, [*args, "--clamp", "1:3=1", "--clamp", "1:7=-1", "--clamp", "0:0=1"])
    assert plain.exit_code == 0 and held.exit_code == 0, held.output
    assert held.stdout.startswith("All:") and held.stdout != plain.stdout
    assert runner.invoke(app, args).stdout == plain.stdout  # same seed, same text


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sample", "RUN", "--clamp", "1:3"], "LAYER:NEURON=VALUE"),
        (["sample", "RUN", "--clamp", "a:3=1"], "LAYER:NEURON=VALUE"),
        (["sample", "RUN", "--clamp", "2:3=1"], "no layer 2; the model has layers 0..1"),
        (["sample", "RUN", "--clamp", "0:16=1"], "no neuron 16"),
        (["inspect-neurons", "RUN", "--text", "Zürich"], "'ü'"),
        (["inspect-neurons", "RUN", "--text", "All", "--gate", "z"], "gates i|f|g|o, not 'z'"),
        (["inspect-neurons", "RUN", "--text", "All", "--state", "h", "--gate", "f"], "--gate f"),
        (
            ["inspect-neurons", "RUN", "--text", "All", "--state", "x"],
            "'x' is not one of 'h', 'c', 'gates'",
        ),
        (["inspect-neurons", "RUN", "--text", "All", "--neuron", "16"], "0..15"),
        (["inspect-neurons", "RUN", "--text", "All", "--layer", "2"], "--layer 2"),
        (["inspect-neurons", "RUN", "--text", "All", "--find", "[z"], "nor a regex"),
        (
            ["inspect-neurons", "RUN", "--text", "All", "--on-unknown", "x"],
            "'error', 'skip', 'unk'",
        ),
        (["inspect-neurons", "RUN", "--text", "All", "--find", "inside quotes"], "same on every"),
        (["inspect-neurons", "RUN", "--text", "All", "--file", "RUN"], "not both"),
        (["inspect-neurons", "RUN", "--file", "missing.txt"], "missing.txt: no such file (--file)"),
        (["inspect-neurons", "RUN", "--text", "All", "--html", "no/such/dir/p.html"], "cannot"),
    ],
)
def test_bad_input_is_one_clear_line(args, needle, run_dir):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.output, result.stderr
    if "Usage" not in result.stderr:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


UNSEEN = "xü: fé(a)\nAll"  # ü and é are not in the corpus


def test_unknown_characters_are_refused_naming_on_unknown_skip(run_dir):
    result = runner.invoke(app, ["inspect-neurons", str(run_dir), "--text", UNSEEN])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        "charrnn: error: the text has characters the model has never seen: 'é' 'ü' "
        "(--on-unknown skip drops them)\n"
    )
    result = runner.invoke(
        app, ["inspect-neurons", str(run_dir), "--text", UNSEEN, "--on-unknown", "unk"]
    )
    assert result.exit_code == 2
    assert (
        result.stderr
        == "charrnn: error: --on-unknown unk: a char model has no <unk>; use skip or error\n"
    )


def test_on_unknown_skip_inspects_the_text_without_them(run_dir):
    args = ["inspect-neurons", str(run_dir), "--text", UNSEEN * 2, "--on-unknown", "skip"]
    result = runner.invoke(app, [*args, "--top", "0"])
    assert result.exit_code == 0, result.output
    assert result.stderr == "note: skipped 4 characters the model has never seen: 'é' 'ü'\n"
    lines = result.stdout.splitlines()
    assert lines[0].endswith(f"over {len(UNSEEN) * 2 - 4} characters")
    assert "x: f(a)⏎" in lines and "Allx: f(a)⏎" in lines and "All" in lines
    assert "é" not in result.stdout and "ü" not in result.stdout
    result = runner.invoke(
        app, ["inspect-neurons", str(run_dir), "--text", "éü", "--on-unknown", "skip"]
    )
    assert result.exit_code == 2 and "only characters the model has never seen" in result.stderr
    result = runner.invoke(app, [*args[:3], "All é", "--on-unknown", "skip", "--top", "0"])
    assert result.stderr == "note: skipped 1 character the model has never seen: 'é'\n"


@pytest.fixture(scope="module")
def word_run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("neurons_words")
    small = ["--hidden", "8", "--embedding", "4", "--batch-size", "2", "--seq-len", "8"]
    return cli_train(root, TEXT, "--tokenizer", "word", "--word-split", "punct", "--steps", "2",
                     "--eval-every", "2", *small)  # fmt: skip


WORDS = "All speak, zyzzyva Citizen: xyst zyzzyva."  # zyzzyva and xyst are not in TEXT


NOTES = {  # what stderr says, and the start of the view's first line
    "skip": ("skipped 3 words the model has never seen", "All speak,  Citizen:  ."),
    "unk": ("read 3 words the model has never seen as <unk>", "All speak, <unk> Citizen: <unk>"),
}


@pytest.mark.parametrize("on_unknown", ["skip", "unk", None])
def test_word_models_skip_or_read_unknown_words_as_unk(word_run_dir, on_unknown):
    args = ["inspect-neurons", str(word_run_dir), "--text", WORDS, "--top", "0"]
    refused = runner.invoke(app, [*args, "--on-unknown", "error"])
    assert refused.exit_code == 2 and "'xyst' 'zyzzyva' (--on-unknown skip drops" in refused.stderr
    assert "unk maps them to <unk>" in refused.stderr
    given = ["--on-unknown", on_unknown] if on_unknown else []  # a word model's default: unk
    result = runner.invoke(app, [*args, *given])
    assert result.exit_code == 0, result.output
    note, shown = NOTES[on_unknown or "unk"]
    assert result.stderr == f"note: {note}: 'xyst' 'zyzzyva'\n"
    assert result.stdout.splitlines()[2].startswith(shown)
    assert "zyzzyva" not in result.stdout and "xyst" not in result.stdout


def test_without_text_the_model_samples_its_own(run_dir):
    result = runner.invoke(app, ["inspect-neurons", str(run_dir), "--max-chars", "60"])
    assert result.exit_code == 0, result.output
    assert "sampled from the model (--seed 0)" in result.stderr
    assert re.match(
        r"layer \d, neuron \d+: tanh\(cell state c\) over \d+ characters", result.stdout
    )
