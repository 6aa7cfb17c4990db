"""The `charrnn` command: a thin Typer adapter over the library, and the only package that
prints.

stdout carries only the product: sampled text, the report `info`, `eval` and
`inspect-neurons` exist to print, or JSON when asked; the progress and tables of
training go to stderr. A user's mistake ends in one line on stderr and exit code 2, with
nothing half-written (app.py is that boundary). Settings become options in options.py.

One module per command (train, sample, runs: info and eval, neurons: inspect-neurons,
bench, serve, export), each registering itself on the shared `app` of app.py.
"""

import importlib

from charrnn.cli.app import app

# Each command registers itself on `app` when its module is imported; --help lists them
# in this order.
for _module in (
    "train",
    "sample",
    "neurons",
    "gradients",
    "runs",
    "compare",
    "plot",
    "bench",
    "serve",
    "export",
):
    importlib.import_module(f"charrnn.cli.{_module}")

__all__ = ["app"]
