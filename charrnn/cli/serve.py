"""`charrnn serve`: runs over HTTP (OpenAI's completions API, /v1/score, a page at /), on
uvicorn, until Ctrl-C or SIGTERM. The server is charrnn/serve/; this module loads the
runs, binds the port (so a port in use is one line, not a log), starts uvicorn and stops
it cleanly: requests in flight finish, or are cancelled after --shutdown-timeout."""

from __future__ import annotations

import importlib.util
import signal
import socket
from pathlib import Path
from typing import Annotated

import typer

from charrnn import api, devices, settings
from charrnn.cli.app import command, err
from charrnn.cli.options import DEFAULT, opt, with_settings
from charrnn.errors import CharrnnError, ConfigError
from charrnn.serve.config import HOST, PORT, Limits

EXTRA = ("starlette", "uvicorn")
# uvicorn's log, access lines included, on stderr (stdout carries nothing here).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s: %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
    },  # fmt: skip
    "loggers": {
        name: {"handlers": ["stderr"], "level": "INFO", "propagate": False}
        for name in ("uvicorn", "uvicorn.access", "charrnn.serve")
    },  # fmt: skip
}


@command(summary="Serve runs over HTTP: OpenAI's completions API, and a page to write with.")
@with_settings(Limits)
def serve(
    runs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN", help="Run directories; each is served by its folder's name."
        ),  # fmt: skip
    ],
    *,
    host: opt(HOST) = DEFAULT,
    port: opt(PORT) = DEFAULT,
    device: opt(devices.DEVICE) = DEFAULT,
    settings: dict,
):
    """Serve runs over HTTP until Ctrl-C or SIGTERM: POST /v1/completions (OpenAI's
    completions API, streamed or not), POST /v1/score, GET /v1/models, GET /health, and
    a page at / to write with a model."""
    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise CharrnnError(f"charrnn serve needs {' and '.join(missing)}: pip install "
                           "'charrnn[serve]'")  # fmt: skip
    import uvicorn

    from charrnn.serve.app import make_app

    limits = settings_of(settings)
    loaded = load(runs, devices.resolve(device))
    sock = bind(host, port)
    stopped: list[int] = []
    config = uvicorn.Config(make_app(loaded, limits), log_config=LOGGING, lifespan="on",
                            timeout_graceful_shutdown=limits.shutdown_timeout)  # fmt: skip
    where = f"http://{_url_host(host)}:{sock.getsockname()[1]}"
    err.print(f"serving {', '.join(loaded)} at {where}/ (the page), {where}/v1 (the API); "
              "Ctrl-C stops", markup=False)  # fmt: skip
    for sig in (signal.SIGINT, signal.SIGTERM):  # what uvicorn raises again once stopped
        signal.signal(sig, lambda number, frame: stopped.append(number))
    uvicorn.Server(config).run(sockets=[sock])
    if stopped:
        err.print(f"stopped ({signal.Signals(stopped[0]).name})", style="dim")


def settings_of(given: dict) -> Limits:
    return settings.resolve(Limits, given)


def load(runs: list[Path], device) -> dict[str, api.Run]:
    """Each run by its folder's name; two of one name are refused."""
    loaded: dict[str, api.Run] = {}
    for path in runs:
        name = path.resolve().name
        if name in loaded:
            raise ConfigError(f"two runs named {name!r}: each run is served by its folder's "
                              "name; rename one")  # fmt: skip
        loaded[name] = api.load(path, device)
    return loaded


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is a clear refusal."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
                          "pick another --port, or stop what uses it") from None  # fmt: skip
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
