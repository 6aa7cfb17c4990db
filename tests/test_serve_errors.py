"""Bad requests against a real `charrnn serve` process: each gets a 4xx JSON error in
OpenAI's shape naming the field at fault (never a 500, never a traceback), and the server
serves on after every one. The server runs with small limits so that each is reached by a
small request: --max-body 4096 --read-timeout 1 --max-prompt 200 --max-request-tokens 500
--max-in-flight 4."""

from __future__ import annotations

import json
import socket
import time

import pytest

from .conftest import TEXT, ServerProcess, cli_train

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

LIMITS = ["--max-body", "4096", "--read-timeout", "1", "--max-prompt", "200",
          "--max-request-tokens", "500", "--max-in-flight", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run_dir = cli_train(tmp_path_factory.mktemp("serve-errors"), TEXT, name="tiny")
    served = ServerProcess([run_dir], *LIMITS)
    yield served
    assert served.stop() == 0, served.text
    assert "Traceback" not in served.text and "ERROR" not in served.text, served.text


def raw(server, data: bytes, wait: float = 0) -> tuple[int, dict]:
    """Send bytes as they are (a request httpx would not make), and read the reply."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(data)
        time.sleep(wait)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body.strip() else {}


def request(path: str, body: bytes, *headers: str, length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             "Content-Type: application/json", *headers]  # fmt: skip
    if length is not None or not any(h.startswith("Transfer-Encoding") for h in headers):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


C = "/v1/completions"
BAD = [
    # (what, path, body: a dict (JSON) or bytes (as they are), status, param, in the message)
    ("malformed JSON", C, b'{"prompt": "a",', 400, None, "not JSON"),
    ("not UTF-8", C, b'{"prompt": "\xff\xfe"}', 400, None, "not UTF-8"),
    ("an array, not an object", C, b"[1, 2]", 400, None, "JSON object"),
    ("a string, not an object", C, b'"hello"', 400, None, "JSON object"),
    ("NaN", C, b'{"max_tokens": NaN}', 400, None, "NaN is not a JSON number"),
    ("Infinity", C, b'{"temperature": Infinity}', 400, None, "Infinity"),
    ("nested too deep", C, b"[" * 2000 + b"]" * 2000, 400, None, "nested too deep"),
    ("a huge float", C, b'{"max_tokens": 1e400}', 400, "max_tokens", "whole number"),
    ("a huge number", C, {"max_tokens": 10**30}, 400, "max_tokens", "must be in"),
    (
        "max_tokens x n past the limit",
        C,
        {"max_tokens": 400, "n": 2},
        400,
        "max_tokens",
        "--max-request-tokens",
    ),
    ("negative max_tokens", C, {"max_tokens": -1}, 400, "max_tokens", "must be in"),
    ("max_tokens as text", C, {"max_tokens": "16"}, 400, "max_tokens", "whole number"),
    ("max_tokens true", C, {"max_tokens": True}, 400, "max_tokens", "whole number"),
    ("temperature as text", C, {"temperature": "hot"}, 400, "temperature", "number"),
    ("negative temperature", C, {"temperature": -1}, 400, "temperature", "negative"),
    ("top_p 0", C, {"top_p": 0}, 400, "top_p", "(0, 1]"),
    ("top_p 1.5", C, {"top_p": 1.5}, 400, "top_p", "(0, 1]"),
    ("top_k 0", C, {"top_k": 0}, 400, "top_k", "at least 1"),
    ("n 0", C, {"n": 0}, 400, "n", "must be in"),
    ("n 1000", C, {"n": 1000}, 400, "n", "must be in"),
    ("logprobs 6", C, {"logprobs": 6}, 400, "logprobs", "[0, 5]"),
    ("logprobs true", C, {"logprobs": True}, 400, "logprobs", "whole number"),
    ("five stop sequences", C, {"stop": list("abcde")}, 400, "stop", "at most 4"),
    ("an empty stop sequence", C, {"stop": [""]}, 400, "stop", "non-empty"),
    ("stop as a number", C, {"stop": 7}, 400, "stop", "string"),
    ("a negative seed", C, {"seed": -1}, 400, "seed", "must be in"),
    ("a seed past int64", C, {"seed": 2**64}, 400, "seed", "must be in"),
    ("a fractional seed", C, {"seed": 1.5}, 400, "seed", "whole number"),
    ("prompt a number", C, {"prompt": 5}, 400, "prompt", "must be a string"),
    ("prompt an object", C, {"prompt": {}}, 400, "prompt", "must be a string"),
    ("prompt an empty array", C, {"prompt": []}, 400, "prompt", "must be a string"),
    ("a token id out of range", C, {"prompt": [99_999]}, 400, "prompt", "token id 99999"),
    ("a prompt past --max-prompt", C, {"prompt": "a" * 201}, 400, "prompt", "--max-prompt"),
    ("an unknown model", C, {"model": "nope"}, 404, "model", "this server has: tiny"),
    ("model a number", C, {"model": 5}, 400, "model", "must be a string"),
    ("a misspelt field", C, {"temprature": 1}, 400, "temprature", "'temperature'"),
    ("suffix", C, {"suffix": "x"}, 400, "suffix", "not supported"),
    ("best_of more than n", C, {"best_of": 3}, 400, "best_of", "must equal n"),
    ("logit_bias", C, {"logit_bias": {"5": 10}}, 400, "logit_bias", "not supported"),
    ("presence_penalty", C, {"presence_penalty": 1}, 400, "presence_penalty", "not supported"),
    ("stream as text", C, {"stream": "yes"}, 400, "stream", "true or false"),
    ("echo as a number", C, {"echo": 1}, 400, "echo", "true or false"),
    ("bad stream_options", C, {"stream_options": {"x": 1}}, 400, "stream_options", "include"),
    ("unknown characters", C, {"prompt": "Zü"}, 400, "prompt", "'Z' 'ü' (on_unknown skip"),
    (
        "unknown characters as <unk> in a char model",
        C,
        {"prompt": "Z", "on_unknown": "unk"},
        400,
        "on_unknown",
        "has no <unk>",
    ),
    ("a bad on_unknown", C, {"on_unknown": "maybe"}, 400, "on_unknown", "choose one of"),
    ("score without text", "/v1/score", {}, 400, "text", "must be a string"),
    ("score a number", "/v1/score", {"text": 5}, 400, "text", "must be a string"),
    ("score a misspelt field", "/v1/score", {"txt": "a"}, 400, "txt", "takes model, text"),
    ("score unknown characters", "/v1/score", {"text": "Zz"}, 400, "text", "'Z'"),
    ("score one token", "/v1/score", {"text": ""}, 400, "text", "too short"),
    ("no such route", "/v1/nowhere", {}, 404, None, "no route /v1/nowhere"),
    ("a body past --max-body", C, {"prompt": "a" * 5000}, 413, None, "--max-body"),
]


@pytest.mark.parametrize("what, path, body, status, param, needle", BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_is_a_4xx_naming_the_field(server, what, path, body, status, param, needle):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    code, reply = raw(server, request(path, data))
    assert code == status, reply
    assert_error(reply, param, needle)
    assert_serves_on(server)


def assert_error(reply: dict, param: str | None, needle: str) -> None:
    """OpenAI's error shape, naming the field, saying what is wrong in one line."""
    error = reply["error"]
    assert set(error) == {"message", "type", "param", "code"}, reply
    assert error["param"] == param and needle in error["message"], error
    assert "\n" not in error["message"] and "Traceback" not in error["message"]


def assert_serves_on(server) -> None:
    reply = httpx.post(server.url + C, json={"prompt": "First", "max_tokens": 3}, timeout=30)
    assert reply.status_code == 200 and len(reply.json()["choices"][0]["text"]) == 3


def test_the_table_is_long_enough():
    assert len(BAD) + 6 >= 25  # and the requests below: the wire, slow and dropped clients


def test_unknown_characters_with_on_unknown_skip_are_served(server):
    reply = httpx.post(server.url + C, json={"prompt": "Zü First", "on_unknown": "skip",
                                             "max_tokens": 4}, timeout=30)  # fmt: skip
    assert reply.status_code == 200 and reply.json()["usage"]["prompt_tokens"] == 6


def test_a_method_a_route_does_not_take(server):
    reply = httpx.get(server.url + C, timeout=30)
    assert reply.status_code == 405
    assert_error(reply.json(), None, "GET is not a method /v1/completions takes")
    assert_serves_on(server)


def test_a_body_too_big_for_its_content_length_is_refused_before_it_is_read(server):
    code, reply = raw(server, request(C, b"{}", length=10**9))
    assert code == 413 and "--max-body" in reply["error"]["message"]
    assert_serves_on(server)


def test_a_chunked_body_past_the_limit_is_refused(server):
    chunk = b"a" * 3000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    code, reply = raw(server, request(C, body, "Transfer-Encoding: chunked"))
    assert code == 413 and reply["error"]["code"] == "request_too_large"
    assert_serves_on(server)


def test_a_slow_client_gets_408(server):
    started = time.monotonic()
    code, reply = raw(server, request(C, b'{"prompt": ', length=40), wait=0.1)
    assert code == 408 and "--read-timeout" in reply["error"]["message"]
    assert 0.9 < time.monotonic() - started < 10
    assert_serves_on(server)


def test_dropped_clients_leave_nothing_behind(server):
    mid_body = request(C, b'{"prompt": "Fi', length=100)
    mid_completion = request(C, json.dumps({"max_tokens": 500}).encode())
    for data in (mid_body, mid_completion):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(data)
            time.sleep(0.05)
    for _ in range(200):
        health = server.get("/health")
        if health["in_flight"] == 0 and health["models"]["tiny"]["rows"] == 0:
            break
        time.sleep(0.05)
    assert health["in_flight"] == 0 and health["models"]["tiny"]["rows"] == 0
    assert_serves_on(server)


def test_past_max_in_flight_is_429_and_the_slots_come_back(server):
    slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        for s in slow:  # four requests in flight, waiting for their bodies
            s.sendall(request(C, b"{", length=50))
        while server.get("/health")["in_flight"] < 4:
            time.sleep(0.01)
        reply = httpx.post(server.url + C, json={"max_tokens": 1}, timeout=30)
        assert reply.status_code == 429 and reply.headers["retry-after"] == "1"
        assert reply.json()["error"]["type"] == "rate_limit_error"
    finally:
        for s in slow:
            s.close()
    for _ in range(100):
        if server.get("/health")["in_flight"] == 0:
            break
        time.sleep(0.05)
    assert_serves_on(server)
