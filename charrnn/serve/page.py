"""The page at `/`: page.html, this package's data, one self-contained file (inline CSS
and JavaScript, nothing fetched but the server's own API: its Content-Security-Policy,
sent as a header and in the page, allows no other origin)."""

from __future__ import annotations

import functools
from importlib import resources

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}  # fmt: skip


@functools.cache
def template() -> str:
    return resources.files("charrnn.serve").joinpath("page.html").read_text(encoding="utf-8")


# A <meta> policy cannot say frame-ancestors (the header does).
META_CSP = CSP.replace("; frame-ancestors 'none'", "")


def html() -> str:
    """The page; it asks /v1/models for the models itself."""
    return template().replace("__CSP__", META_CSP)
