"""`charrnn serve`: trained runs over HTTP, as OpenAI's completions API speaks, with a
page to write with them.

    config.py    the command's settings: --host, --port and the limits (no web stack)
    protocol.py  the request fields, checked; OpenAI's error shape
    engine.py    the batching engine: one worker thread per model, every request's
                 choices stepped together as rows of one batch
    choices.py   one row's text as it is made: decoding, stop sequences, logprobs
    reply.py     a request's reply, whole or streamed as server-sent events
    app.py       the Starlette app: routes, limits, errors
    page.html    the page at / (page.py serves it)

Only config.py may be imported without the `serve` extra (starlette, uvicorn).
"""
