"""`charrnn serve` as a client meets it: a real server process on 127.0.0.1, spoken to by
OpenAI's own Python client, by plain HTTP (httpx), and by a browser (the page at /).

One server for the module, on a tiny run; its replies are checked against what the
library makes of the same run (`charrnn sample --seed`, Run.score), so the server adds
transport and batching, and nothing else."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import math
import shutil
import signal
import socket
import time

import pytest
import torch

from charrnn import api
from charrnn.ngram import mix

from .conftest import TEXT, ServerProcess, cli_train

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("starlette")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return cli_train(tmp_path_factory.mktemp("serve"), TEXT, name="tiny")


@pytest.fixture(scope="module")
def server(run_dir):
    served = ServerProcess([run_dir])
    yield served
    assert served.stop() == 0, served.text
    assert "Traceback" not in served.text, served.text


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def run(run_dir):
    return api.load(run_dir)


def post(server, body: dict, path: str = "/v1/completions") -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def test_health_and_models(server, client):
    health = server.get("/health")
    assert health["status"] == "ok" and set(health["models"]) == {"tiny"}
    (model,) = client.models.list().data
    assert model.id == "tiny" and model.object == "model" and model.owned_by == "charrnn"
    assert client.models.retrieve("tiny").id == "tiny"
    assert model.model_extra["charrnn"]["cell"] == "lstm"


def test_openai_client_completion_is_charrnn_samples_text(client, run):
    made = client.completions.create(model="tiny", prompt="First", max_tokens=40, seed=7,
                                     temperature=0.8, top_p=0.9)  # fmt: skip
    (choice,) = made.choices
    expected = run.sample("First", length=40, seed=7, temperature=0.8, top_p=0.9)[0]
    assert choice.text == expected and len(choice.text) == 40
    assert choice.finish_reason == "length" and choice.index == 0
    assert made.object == "text_completion" and made.model == "tiny"
    assert made.id.startswith("cmpl-")
    assert made.usage.prompt_tokens == 5 and made.usage.completion_tokens == 40
    assert made.usage.total_tokens == 45
    top_k = client.completions.create(
        model="tiny", prompt="First", max_tokens=40, seed=7, extra_body={"top_k": 3}
    )  # charrnn's own field
    assert top_k.choices[0].text == run.sample("First", length=40, seed=7, top_k=3)[0]


def test_openai_client_stream_is_the_same_text_piece_by_piece(client):
    whole = client.completions.create(model="tiny", prompt="All:", max_tokens=30, seed=3)
    chunks = list(client.completions.create(model="tiny", prompt="All:", max_tokens=30,
                                            seed=3, stream=True,
                                            stream_options={"include_usage": True}))  # fmt: skip
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len(pieces) > 1 and "".join(pieces) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 30


def test_plain_http_stream_is_server_sent_events_ending_in_done(server):
    body = {"model": "tiny", "prompt": "Speak", "max_tokens": 5, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) and len(chunks) == 5


def test_greedy_n_and_several_prompts(client, run):
    made = client.completions.create(model="tiny", prompt=["First", "All"], n=3,
                                     max_tokens=12, temperature=0)  # fmt: skip
    assert [c.index for c in made.choices] == list(range(6))
    for k, prompt in enumerate(["First", "All"]):
        greedy = run.sample(prompt, length=12, temperature=0)[0]
        assert {c.text for c in made.choices[3 * k : 3 * k + 3]} == {greedy}
    assert made.usage.completion_tokens == 72


def test_a_seed_makes_the_same_text_whatever_else_is_in_the_batch(server):
    alone = post(server, {"prompt": "First", "max_tokens": 150, "seed": 11}).json()
    before = server.get("/health")["models"]["tiny"]
    prompts = ["All", "You", "Before", "Speak", "Citizen", "First"]
    bodies = [{"prompt": p, "max_tokens": 150, "seed": 100 + i} for i, p in enumerate(prompts)]
    bodies.insert(3, {"prompt": "First", "max_tokens": 150, "seed": 11})
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda b: post(server, b).json(), bodies))
    assert replies[3]["choices"][0]["text"] == alone["choices"][0]["text"]
    assert replies[6]["choices"][0]["text"] != alone["choices"][0]["text"]  # another seed
    after = server.get("/health")["models"]["tiny"]
    tokens, steps = after["tokens"] - before["tokens"], after["steps"] - before["steps"]
    assert tokens == 7 * 150 and steps < tokens / 2  # made together: several rows a step


def test_logprobs_and_echo(server, run):
    reply = post(server, {"prompt": "Fir", "max_tokens": 6, "logprobs": 3, "echo": True,
                          "temperature": 0}).json()  # fmt: skip
    (choice,) = reply["choices"]
    lp = choice["logprobs"]
    assert choice["text"].startswith("Fir") and len(choice["text"]) == 9
    assert lp["tokens"] == list(choice["text"]) and lp["text_offset"] == list(range(9))
    for chosen, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
        assert len(top) == 3 and chosen <= max(top.values()) + 1e-6
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
    for token, chosen, top in list(zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]))[3:]:
        assert chosen == pytest.approx(max(top.values()))  # greedy picks the top token
        assert top[token] == pytest.approx(chosen)
    ids = torch.tensor([[0, *run.tokenizer.encode("Fir").tolist()]])  # <eos> first
    with torch.no_grad():
        logp = run.model(ids)[0][0].log_softmax(-1)  # [T, V]
    want = logp[torch.arange(3), ids[0, 1:]].double()
    assert run.model.ngram is not None  # a char model's default: the mixture with its n-gram
    want = mix(want, run.model.ngram.logp(ids[0].numpy()), float(run.model.ngram_weight)).tolist()
    assert lp["token_logprobs"][:3] == pytest.approx(want, abs=1e-5)  # the prompt's own
    plain = post(server, {"prompt": "Fir", "max_tokens": 4, "logprobs": 0}).json()
    offsets = plain["choices"][0]["logprobs"]["text_offset"]
    assert offsets == [3, 4, 5, 6]  # from the start of the prompt, as OpenAI counts
    assert plain["choices"][0]["logprobs"]["top_logprobs"] == [None] * 4


def test_stop_sequences_cut_the_text_streamed_or_not(server, client):
    free = post(server, {"prompt": "A", "max_tokens": 200, "seed": 5}).json()
    text = free["choices"][0]["text"]
    stop = text[50:52]
    cut = text.index(stop)
    whole = client.completions.create(model="tiny", prompt="A", max_tokens=200, seed=5,
                                      stop=[stop, "never seen"])  # fmt: skip
    assert whole.choices[0].text == text[:cut] and whole.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt="A", max_tokens=200, seed=5,
                                         stop=stop, stream=True)  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed) == text[:cut]


def test_max_tokens_zero_echoes_the_prompt(server):
    reply = post(server, {"prompt": "First", "max_tokens": 0, "echo": True}).json()
    assert reply["choices"][0]["text"] == "First"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 0


def test_score_is_run_score(server, run):
    text = "First Citizen:\nSpeak, speak.\n"
    got = post(server, {"text": text}, "/v1/score").json()
    want = run.score(text)
    assert got["object"] == "score" and got["tokens"] == want.tokens
    assert got["bpc"] == pytest.approx(want.bpc) and got["loss"] == pytest.approx(want.loss)
    assert got["word_perplexity"] == pytest.approx(want.word_perplexity)


def test_a_client_that_goes_mid_stream_frees_its_rows(server):
    body = {"prompt": "First", "max_tokens": 15_000, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert server.get("/health")["models"]["tiny"]["rows"] == 1
    for _ in range(100):
        health = server.get("/health")
        if health["models"]["tiny"]["rows"] == 0 and health["in_flight"] == 0:
            break
        time.sleep(0.05)
    assert health["models"]["tiny"]["rows"] == 0 and health["in_flight"] == 0


def test_sigterm_lets_requests_in_flight_finish_and_exits_0(run_dir):
    served = ServerProcess([run_dir])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        body = {"prompt": "First", "max_tokens": 3000, "stream": True}

        def stream():
            with httpx.stream("POST", served.url + "/v1/completions", json=body,
                              timeout=60) as r:  # fmt: skip
                return [line for line in r.iter_lines() if line]

        future = pool.submit(stream)
        while served.get("/health")["in_flight"] == 0:
            time.sleep(0.01)
        code = served.stop()
        lines = future.result()
    assert code == 0 and "Traceback" not in served.text, served.text
    assert lines[-1] == "data: [DONE]"  # the stream in flight was finished, not cut
    text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in lines[:-1])
    assert len(text) == 3000
    assert "stopped (SIGTERM)" in served.text


def test_a_stream_past_the_shutdown_timeout_is_cancelled_cleanly(run_dir):
    served = ServerProcess([run_dir], "--shutdown-timeout", "0.5")
    body = {"prompt": "First", "max_tokens": 16_000, "stream": True}
    rest = []
    with httpx.stream("POST", served.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        next(lines)
        served.process.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            rest += lines
        except httpx.RemoteProtocolError:  # cut short: the connection closed mid-stream
            pass
    assert served.process.wait(30) == 0, served.text
    assert "Traceback" not in served.text, served.text
    assert "data: [DONE]" not in rest


# The command line ------------------------------------------------------------------------


def test_without_the_extra_serve_is_one_line(run_dir, monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from charrnn.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real(name, *a))  # fmt: skip
    result = CliRunner().invoke(app, ["serve", str(run_dir)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "charrnn: error: charrnn serve needs uvicorn: pip install 'charrnn[serve]'"
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--port", "70000"], "--port must be in [0, 65535], not 70000"),
        (["--max-in-flight", "0"], "--max-in-flight must be at least 1, not 0"),
        (["--host", "no.such.host.invalid"], "--host no.such.host.invalid: not an address"),
        (["--port", "{busy}"], "cannot listen there"),
    ],
)
def test_bad_serve_flags_are_one_line(run_dir, args, needle):
    from typer.testing import CliRunner

    from charrnn.cli import app

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.replace("{busy}", str(busy.getsockname()[1])) for a in args]
        result = CliRunner().invoke(app, ["serve", str(run_dir), *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and needle in result.output, result.output


def test_two_runs_of_one_name_are_refused(run_dir, tmp_path):
    from typer.testing import CliRunner

    from charrnn.cli import app

    other = tmp_path / "tiny"
    shutil.copytree(run_dir, other)
    result = CliRunner().invoke(app, ["serve", str(run_dir), str(other)])
    assert result.exit_code == 2 and "two runs named 'tiny'" in result.output


# The page, in a browser --------------------------------------------------------------------


def browser():
    """Headless Chromium driven by chromedriver (Debian's chromium and chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--window-size=1200,800"):  # fmt: skip
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or shutil.which("chromedriver") is None
    or importlib.util.find_spec("selenium") is None,
    reason="needs chromium, chromium-driver and selenium",
)  # fmt: skip


@needs_browser
def test_the_page_streams_a_continuation_and_shows_the_guesses(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = httpx.get(server.url + "/", timeout=30)
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.text and "<script src" not in page.text
    driver = browser()
    try:
        state = lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")  # noqa: E731
        driver.get(server.url + "/")
        WebDriverWait(driver, 30).until(lambda _: state() == "idle")
        text = driver.find_element(By.ID, "text")
        text.send_keys("First Citizen:\nBefore we")
        rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#guesses .guess")  # noqa: E731
        after = lambda: driver.find_element(By.ID, "guesses").get_attribute("data-after")  # noqa: E731
        WebDriverWait(driver, 30).until(  # the guesses after the whole text, not a prefix
            lambda _: after() == "First Citizen:\nBefore we" and len(rows()) == 5
        )
        asked = post(server, {"prompt": "First Citizen:\nBefore we", "max_tokens": 1,
                              "logprobs": 5, "temperature": 0}).json()  # fmt: skip
        top = asked["choices"][0]["logprobs"]["top_logprobs"][0]
        best = max(top, key=top.get)
        first = rows()[0].text.split()
        assert first[0] == {" ": "␣", "\n": "⏎"}.get(best, best)
        assert first[-1] == f"{100 * math.exp(top[best]):.1f}%"
        length = driver.find_element(By.ID, "length")
        length.clear()
        length.send_keys("40")
        driver.find_element(By.ID, "write").click()
        WebDriverWait(driver, 60).until(lambda _: state() in ("done", "error"))
        status = driver.find_element(By.ID, "status").text
        assert state() == "done", status
        assert status.startswith("40 pieces in")  # streamed: one event per character
        written = text.get_attribute("value")
        assert written.startswith("First Citizen:\nBefore we") and len(written) == 24 + 40
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert fetched and all(url.startswith(server.url + "/v1/") for url in fetched)
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()


def test_word_and_bpe_models_served_together(tmp_path):
    """Two runs on one server, each under its name: a word model (its spaces made between
    tokens, <unk> for unknown words) and a byte-fallback BPE model; each makes what
    `charrnn sample --seed` makes, whole or streamed."""
    small = ["--steps", "2", "--eval-every", "2", "--hidden", "16", "--embedding", "16"]
    word = cli_train(tmp_path, TEXT, "--tokenizer", "word", *small, name="words")
    bpe = cli_train(tmp_path, TEXT + "Café résumé naïve.\n", "--tokenizer", "bpe",
                    "--vocab-size", "300", *small, name="pieces")  # fmt: skip
    served = ServerProcess([word, bpe])
    try:
        client = openai.OpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0)
        assert {m.id for m in client.models.list().data} == {"words", "pieces"}
        for name, path in (("words", word), ("pieces", bpe)):
            run = api.load(path)
            want = run.sample("All speak", length=30, seed=4)[0]
            made = client.completions.create(model=name, prompt="All speak", max_tokens=30,
                                             seed=4, logprobs=2)  # fmt: skip
            assert made.choices[0].text == want, name
            assert len(made.choices[0].logprobs.tokens) == 30
            streamed = client.completions.create(model=name, prompt="All speak",
                                                 max_tokens=30, seed=4, stream=True)  # fmt: skip
            assert "".join(c.choices[0].text for c in streamed) == want, name
        unknown = post(served, {"model": "words", "prompt": "zyzzyva speak", "max_tokens": 3})
        assert unknown.status_code == 200  # a word model reads unknown words as <unk>
        refused = post(served, {"model": "words", "prompt": "zyzzyva", "on_unknown": "error"})
        assert refused.status_code == 400 and "zyzzyva" in refused.json()["error"]["message"]
        assert post(served, {"prompt": "a"}).json()["error"]["param"] == "model"  # which one?
    finally:
        assert served.stop() == 0, served.text
