"""One completions request on its way back: its jobs in the engine, and the reply made of
what they deliver, whole (JSON) or as it is made (server-sent events, as OpenAI streams:
one `data: {chunk}` per choice's new text, then `data: [DONE]`).

Owns: `Reply` (the request's jobs, their checks, the usage, the JSON of a reply or a chunk)
and `EventStream` (the streamed reply, an ASGI response that also watches the client: when
it goes, the request's rows leave the batch). The app (app.py) owns the routes and limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from charrnn import memory, version
from charrnn.api import Run
from charrnn.errors import CharrnnError
from charrnn.sample import prime_ids
from charrnn.serve.choices import Choice, Delta
from charrnn.serve.engine import Engine, Job
from charrnn.serve.protocol import Completion, RequestError, http_message
from charrnn.tokenizers import on_unknown_or_default

FINGERPRINT = f"charrnn-{version.__version__}"
GONE = (None, None)  # put in a reply's queue when its client has gone
SHUTDOWN = RequestError(
    "the server is shutting down; this request was cancelled (past --shutdown-timeout)",
    None, 503, "shutting_down", "server_error",
)  # fmt: skip


class Reply:
    """A checked request's jobs (one per prompt, each with its n choices), submitted to
    `engine` once every prompt has passed its checks."""

    def __init__(self, req: Completion, run: Run, engine: Engine):
        self.req, self.engine, self.name = req, engine, req.model
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        self.queue: asyncio.Queue = asyncio.Queue()
        self.jobs: list[Job] = []
        for p, prompt in enumerate(req.prompts):
            prime, text = self._prime(run, prompt)
            choices = [Choice(p * req.n + j, req.sampling, run.tokenizer, prime, text)
                       for j in range(req.n)]  # fmt: skip
            self.jobs.append(Job(prime, choices, req.sampling, inbox=self.queue))
        self.total = len(self.jobs) * req.n  # choices to wait for
        for job in self.jobs:
            engine.submit(job)

    def _prime(self, run: Run, prompt: str | list[int]) -> tuple[list[int], str]:
        """<eos> and the prompt's ids, and its text; RequestError for symbols the model
        never saw, or a request that needs more memory than there is."""
        tok, s = run.tokenizer, self.req.sampling
        try:
            on_unknown_or_default(tok, self.req.on_unknown)
        except CharrnnError as e:
            raise RequestError(http_message(str(e)), "on_unknown") from None
        try:
            if isinstance(prompt, str):
                prime, text = prime_ids(tok, prompt, self.req.on_unknown, "prompt"), prompt
            else:
                prime, text = [tok.eos_id, *prompt], tok.decode(prompt)
        except CharrnnError as e:
            raise RequestError(http_message(str(e)), "prompt", code="unknown_symbols") from None
        on_device, on_host = memory.sampling_bytes(run.config.model, self.req.n, len(prime),
                                                   s.max_tokens)  # fmt: skip
        try:
            memory.check(f"n {self.req.n} x max_tokens {s.max_tokens:,} after a prompt of "
                         f"{len(prime) - 1:,} tokens", run.device, on_device, on_host,
                         "ask for fewer or shorter choices")  # fmt: skip
        except CharrnnError as e:
            raise RequestError(str(e), "max_tokens", 400, "insufficient_memory") from None
        return prime, text

    def close(self) -> None:
        """Let the rows go (the client has gone, or the reply is done)."""
        for job in self.jobs:
            self.engine.cancel(job)

    def gone(self) -> None:
        self.close()
        self.queue.put_nowait(GONE)

    async def deltas(self) -> AsyncIterator[list[Delta]]:
        """What the engine delivers, until every choice has ended or the client has gone;
        an engine's failure is raised."""
        ended = 0
        while ended < self.total:
            job, payload = await self.queue.get()
            if job is None:
                return
            if isinstance(payload, BaseException):
                raise payload
            ended += sum(d.finish_reason is not None for d in payload)
            yield payload

    def usage(self) -> dict:
        prompt = sum(len(job.prime) - 1 for job in self.jobs)
        made = sum(c.made for job in self.jobs for c in job.choices)
        return {"prompt_tokens": prompt, "completion_tokens": made, "total_tokens": prompt + made}

    def head(self) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.name, "system_fingerprint": FINGERPRINT}  # fmt: skip

    async def whole(self, receive) -> dict:
        """The reply, once every choice has ended (or {} if the client has gone first)."""
        watch = asyncio.ensure_future(until_gone(receive, self))
        try:
            found = [d async for deltas in self.deltas() for d in deltas]
        finally:
            watch.cancel()
        if len(found) < self.total:
            return {}
        return {**self.head(), "choices": [choice_json(d) for d in sorted(found, key=_index)],
                "usage": self.usage()}  # fmt: skip

    async def events(self) -> AsyncIterator[bytes]:
        """The server-sent events of a streamed reply."""
        try:
            async for deltas in self.deltas():
                for d in deltas:
                    yield event({**self.head(), "choices": [choice_json(d)]})
        except Exception as e:  # an engine's failure, after the 200 has gone out
            yield event(RequestError(str(e), None, 500, "server_error", "server_error").body())
            return
        if self.req.include_usage:
            yield event({**self.head(), "choices": [], "usage": self.usage()})
        yield b"data: [DONE]\n\n"


def _index(d: Delta) -> int:
    return d.index


def choice_json(d: Delta) -> dict:
    return {"text": d.text, "index": d.index,
            "logprobs": d.logprobs.json() if d.logprobs is not None else None,
            "finish_reason": d.finish_reason}  # fmt: skip


def event(data: dict) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


async def until_gone(receive, reply: Reply) -> None:
    """Wait for the client to go (the body has been read: what comes next is its end)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    reply.gone()


class EventStream(StreamingResponse):
    """A streamed reply; `done()` is called when it ends, however it ends."""

    def __init__(self, reply: Reply, done):
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(iter(()), 200, headers, "text/event-stream")
        self.reply, self.done = reply, done

    async def __call__(self, scope, receive, send) -> None:
        watch = asyncio.ensure_future(until_gone(receive, self.reply))
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})  # fmt: skip
            async for chunk in self.reply.events():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the connection broke while a chunk was sent
            pass
        except asyncio.CancelledError:  # shutting down, past --shutdown-timeout: cut short
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": event(SHUTDOWN.body()),
                            "more_body": False})  # fmt: skip
        finally:
            watch.cancel()
            self.reply.close()
            self.done()
