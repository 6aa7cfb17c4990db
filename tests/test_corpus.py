"""Reading corpora: streaming in chunks, documents, the token cache, and downloads
(against a real HTTP server on 127.0.0.1)."""

import hashlib
import http.server
import threading
from dataclasses import replace

import numpy as np
import pytest

from charrnn import corpus, tokens
from charrnn.corpus import SHAKESPEARE, CorpusError
from charrnn.tokenizers import TokenizerConfig

from .conftest import SHARED


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def test_chunks_join_into_the_text_and_end_at_newlines(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 64)  # many blocks, some cutting a character
    text = ("naïve café ☃ line\n" * 40) + "no newline at the end 𝄞"
    c = corpus.read([write(tmp_path / "a.txt", text.encode())])
    chunks = list(c.chunks())
    assert "".join(chunks) == text and len(chunks) > 5
    assert all(chunk.endswith("\n") for chunk in chunks[:-1])
    assert c.chars == len(text) and c.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_bad_bytes_are_found_at_their_offset_past_the_first_block(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 1000)
    data = "é".encode() * 1500  # 3000 bytes; the bad byte sits in the third block
    bad = data[:2500] + b"\xff" + data[2500:]
    with pytest.raises(CorpusError, match="invalid UTF-8 at byte offset 2500;"):
        corpus.read([write(tmp_path / "bad.txt", bad)])
    with pytest.raises(CorpusError, match="NUL byte at offset 2100"):
        corpus.read([write(tmp_path / "nul.txt", data[:2100] + b"\x00")])
    replaced = corpus.read([str(tmp_path / "bad.txt")], encoding_errors="replace")
    assert replaced.text == "é" * 1250 + "\ufffd" + "é" * 250


def documents(c, mode):
    """The documents as whole strings (documents() may hand one over in several pieces)."""
    out, current = [], []
    for piece in c.documents(mode):
        if piece is None:
            out.append("".join(current))
            current = []
        else:
            current.append(piece)
    return out


def test_documents_lines_paragraphs_files(tmp_path):
    a = write(tmp_path / "a.txt", b"Anna\nBob\r\n\n  \nCleo\n")
    b = write(tmp_path / "b.txt", b"one\ntwo\n\nthree")
    c = corpus.read([a, b])
    assert documents(c, "lines") == ["Anna", "Bob", "Cleo", "one", "two", "three"]
    assert documents(c, "paragraphs") == ["Anna\nBob", "Cleo\none\ntwo", "three"]
    assert documents(c, "files") == ["Anna\nBob\r\n\n  \nCleo\n", "one\ntwo\n\nthree"]
    assert "".join(c.documents("none")) == c.text


def test_token_ids_are_a_memory_map_cached_by_content(tmp_path):
    path = write(tmp_path / "names.txt", b"anna\nbob\ncleo\n" * 50)
    c = corpus.read([path])
    tok, cached = tokens.fit_tokenizer(c, TokenizerConfig("char"), "lines")
    assert not cached and "\n" not in tok.symbols  # newlines became <eos>
    first = tokens.token_ids(c, tok, "lines")
    assert isinstance(first.ids, np.memmap) and first.ids.dtype == np.uint16
    assert not first.cached and int((first.ids == tok.eos_id).sum()) == 150 + 1
    assert tok.decode(first.ids[:9]) == "annabob"
    again = tokens.token_ids(corpus.read([path]), tokens.fit_tokenizer(c, TokenizerConfig(
        "char"), "lines")[0], "lines")  # fmt: skip
    assert again.cached and np.array_equal(again.ids, first.ids)
    (tmp_path / "names.txt").write_bytes(b"anna\nbob\n")  # new content, new entry
    assert not tokens.token_ids(corpus.read([path]), tok, "lines").cached


class Server:
    """A real HTTP server on 127.0.0.1 serving `body` at any path, counting requests."""

    def __init__(self, body: bytes):
        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/tinyshakespeare/input.txt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def shakespeare_bytes() -> bytes:
    path = SHARED / "tinyshakespeare.txt"
    if not path.exists():
        pytest.skip("../shared/corpora/tinyshakespeare.txt is not here")
    return path.read_bytes()


def test_shakespeare_is_fetched_once_and_verified(tmp_path, shakespeare_bytes):
    server = Server(shakespeare_bytes)
    try:
        download = replace(SHAKESPEARE, url=server.url)
        path = corpus.fetch(download, tmp_path)
        assert path == tmp_path / "shakespeare.txt" and path.read_bytes() == shakespeare_bytes
        assert corpus.fetch(download, tmp_path) == path and server.requests == 1  # once
    finally:
        server.close()


def test_a_tampered_download_is_refused_and_nothing_is_saved(tmp_path, shakespeare_bytes):
    server = Server(shakespeare_bytes[:-1] + b"?")
    try:
        with pytest.raises(CorpusError, match="sha256 .*nothing was saved"):
            corpus.fetch(replace(SHAKESPEARE, url=server.url), tmp_path)
        assert list(tmp_path.iterdir()) == []
    finally:
        server.close()


def test_offline_the_error_says_where_to_put_the_file(tmp_path):
    server = Server(b"")
    url = server.url
    server.close()  # nothing listens there now
    with pytest.raises(CorpusError) as e:
        corpus.fetch(replace(SHAKESPEARE, url=url), tmp_path)
    message = str(e.value)
    assert "could not download" in message and str(tmp_path / "shakespeare.txt") in message
    assert SHAKESPEARE.sha256 in message and "\n" not in message
    (tmp_path / "shakespeare.txt").write_text("not it")
    with pytest.raises(CorpusError, match="not the shakespeare corpus"):
        corpus.fetch(SHAKESPEARE, tmp_path)


def test_train_shakespeare_by_name(tmp_path, monkeypatch, shakespeare_bytes):
    from typer.testing import CliRunner

    from charrnn.cli import app

    server = Server(shakespeare_bytes)
    monkeypatch.setattr(corpus, "SHAKESPEARE", replace(SHAKESPEARE, url=server.url))
    monkeypatch.setenv("CHARRNN_CORPORA", str(tmp_path / "corpora"))
    try:
        args = ["train", "shakespeare", "--steps", "2", "--hidden", "16", "--embedding", "8",
                "--batch-size", "4", "--seq-len", "64", "--val-frac", "0.01",
                "--run-dir", tmp_path / "run"]  # fmt: skip
        args = list(map(str, args))
        result = CliRunner().invoke(app, args)
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    assert "1,115,394 chars" in result.stderr
    assert (tmp_path / "corpora" / "shakespeare.txt").read_bytes() == shakespeare_bytes
