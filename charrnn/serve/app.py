"""The HTTP server of `charrnn serve`: a Starlette app over the runs it serves.

Routes:

    GET  /                  the page to write with a model (page.html, this package's data)
    GET  /health            {"status": "ok", "in_flight": N, "models": {name: {"rows",
                            "steps", "tokens"}}}: rows in the batch now; model steps and
                            tokens made so far (tokens / steps: the mean batch)
    GET  /v1/models         the runs served, by name (the run directory's name)
    GET  /v1/models/{name}
    POST /v1/completions    OpenAI's completions (protocol.py), streamed as server-sent
                            events when asked, each request's rows in its model's batch
    POST /v1/score          loss, bits per character and perplexity of a text

Every request is checked before any work: the body's size (Content-Length, then what
arrives) and how long it takes to come (read_timeout), the number of requests in
flight (429 past max_in_flight), every field (protocol.py), the prompt's symbols, the
tokens asked for and the memory that needs (memory.py). A refusal is a 4xx in OpenAI's
error shape naming the field; only a bug is a 500, whose traceback goes to the log, not
to the client. A client that goes away (a dropped connection, a stream closed
mid-way) has its rows dropped from the batch at the next step. Nothing here prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from charrnn.api import Run
from charrnn.errors import CharrnnError
from charrnn.serve import page, protocol
from charrnn.serve.config import Limits
from charrnn.serve.engine import Engine
from charrnn.serve.protocol import RequestError, http_message
from charrnn.serve.reply import SHUTDOWN, EventStream, Reply

log = logging.getLogger("charrnn.serve")


class Server:
    """The served runs, their engines, and the requests in flight."""

    def __init__(self, runs: dict[str, Run], limits: Limits):
        self.runs, self.limits = runs, limits
        self.engines: dict[str, Engine] = {}
        self.in_flight = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    # Life --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.loop = asyncio.get_running_loop()
        self.engines = {name: Engine(run, self._deliver) for name, run in self.runs.items()}
        try:
            yield
        finally:
            for engine in self.engines.values():
                engine.close()

    def _deliver(self, items) -> None:
        """From an engine's thread: hand what a step made to the requests' queues."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
            self.loop.call_soon_threadsafe(_dispatch, items)

    def acquire(self) -> None:
        """Count a request in flight; RequestError 429 past max_in_flight."""
        if self.in_flight >= self.limits.max_in_flight:
            raise RequestError(f"the server is busy: {self.in_flight} requests in flight "
                               "(--max-in-flight); try again", None, 429,
                               "too_many_requests", "rate_limit_error")  # fmt: skip
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    @contextlib.contextmanager
    def slot(self):
        self.acquire()
        try:
            yield
        finally:
            self.release()

    async def body(self, request: Request) -> dict:
        """The request's JSON object, within max_body bytes and read_timeout seconds."""
        limit = self.limits.max_body
        length = request.headers.get("content-length", "0")
        if not length.isdigit():
            raise RequestError("Content-Length is not a number of bytes")
        if int(length) > limit:
            raise _too_large(int(length), limit)
        chunks, size = [], 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(size, limit)
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), self.limits.read_timeout)
        except ClientDisconnect:  # nobody reads the answer; the log says 400
            raise RequestError("the client went away before its body was read") from None
        except asyncio.TimeoutError:
            wait = self.limits.read_timeout
            raise RequestError(f"the body took more than {wait:g} s to arrive (--read-timeout)",
                               None, 408, "timeout") from None  # fmt: skip
        return protocol.parse_json(b"".join(chunks))

    # Routes ------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        models = {name: {"rows": e.busy, "steps": e.steps, "tokens": e.tokens}
                  for name, e in self.engines.items()}  # fmt: skip
        return JSONResponse({"status": "ok", "in_flight": self.in_flight, "models": models})

    async def models(self, request: Request) -> Response:
        cards = [model_card(name, run) for name, run in self.runs.items()]
        return JSONResponse({"object": "list", "data": cards})

    async def model(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.runs:
            raise RequestError(f"no model {name!r}; this server has: {', '.join(self.runs)}",
                               "model", 404, "model_not_found")  # fmt: skip
        return JSONResponse(model_card(name, self.runs[name]))

    async def page(self, request: Request) -> Response:
        return HTMLResponse(page.html(), headers=page.HEADERS)

    async def score(self, request: Request) -> Response:
        with self.slot():
            data = await self.body(request)
            name, text, on_unknown = protocol.score(data, list(self.runs), self.limits.max_score)
            run = self.runs[name]
            try:  # in a thread of its own: the model's forward is safe beside the engine's
                metrics = await asyncio.to_thread(run.score, text, on_unknown=on_unknown)
            except CharrnnError as e:
                raise RequestError(http_message(str(e)), "text") from None
            return JSONResponse({"object": "score", "model": name, **asdict(metrics)})

    async def completions(self, request: Request) -> Response:
        self.acquire()  # released when the reply is done: a stream's, when it ends
        try:
            data = await self.body(request)
            served = {name: run.config.model.vocab_size for name, run in self.runs.items()}
            req = protocol.completion(data, served, self.limits.max_prompt,
                                      self.limits.max_request_tokens)  # fmt: skip
            reply = Reply(req, self.runs[req.model], self.engines[req.model])
        except BaseException:
            self.release()
            raise
        if req.sampling.stream:
            return EventStream(reply, self.release)
        try:
            return JSONResponse(await reply.whole(request.receive))
        except asyncio.CancelledError:  # shutting down, past --shutdown-timeout
            return await _refused(request, SHUTDOWN)
        finally:
            reply.close()
            self.release()

    def app(self) -> Starlette:
        routes = [
            Route("/", self.page),
            Route("/health", self.health),
            Route("/v1/models", self.models),
            Route("/v1/models/{name:path}", self.model),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/score", self.score, methods=["POST"]),
        ]
        handlers = {RequestError: _refused, HTTPException: _http_error, Exception: _bug}
        return Starlette(routes=routes, exception_handlers=handlers, lifespan=self.lifespan)


def make_app(runs: dict[str, Run], limits: Limits) -> Starlette:
    """The app serving `runs` (name -> loaded run) within `limits`."""
    return Server(runs, limits).app()


async def _refused(request: Request, error: RequestError) -> Response:
    headers = {"Retry-After": "1"} if error.status == 429 else None
    return JSONResponse(error.body(), error.status, headers)


async def _http_error(request: Request, error: HTTPException) -> Response:
    """Starlette's own refusals (no such route, a method a route does not take)."""
    words = {404: f"no route {request.url.path}; see /v1/models, /v1/completions, "
             "/v1/score, /health", 405: f"{request.method} is not a method {request.url.path} "
             "takes"}  # fmt: skip
    message = words.get(error.status_code, str(error.detail))
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
    return await _refused(request, RequestError(message, None, error.status_code, code))


async def _bug(request: Request, error: Exception) -> Response:
    """A bug: its traceback goes to the log, and the client gets a plain 500."""
    log.error("a bug in charrnn serving %s", request.url.path, exc_info=error)
    return await _refused(request, RequestError("the server failed (a bug in charrnn; its "
                                                "log has the traceback)", None, 500,
                                                "server_error", "server_error"))  # fmt: skip


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(f"the body has {size:,} bytes or more; this server takes at most "
                        f"{limit:,} (--max-body)", None, 413, "request_too_large")  # fmt: skip


def _dispatch(items) -> None:
    for job, payload in items:
        job.inbox.put_nowait((job, payload))


def model_card(name: str, run: Run) -> dict:
    """A run as /v1/models lists it: OpenAI's fields, and what the model is."""
    c = run.config
    created = int((run.dir / "model.safetensors").stat().st_mtime)
    return {"id": name, "object": "model", "created": created, "owned_by": "charrnn",
            "charrnn": {"cell": c.model.cell, "layers": c.model.layers, "hidden": c.model.hidden,
                        "tokenizer": run.tokenizer.tokenizer, "vocab_size": c.model.vocab_size,
                        "documents": c.corpus.documents, "step": c.step}}  # fmt: skip
