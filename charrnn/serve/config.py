"""The settings of `charrnn serve`: where it listens, and the limits every request is
checked against before any work is done. Declared once here (settings.py), so the
command's flags, their help and the checks of their values come from these lines.

Nothing here imports the server's web stack: `charrnn --help` and `charrnn serve --help`
work without the `serve` extra.
"""

from __future__ import annotations

from dataclasses import dataclass

from charrnn import settings
from charrnn.settings import at_least, option, positive, setting, within

HOST = option(
    "host", str, "127.0.0.1", "The address to listen on (0.0.0.0: every interface; mind "
    "that the server has no authentication).", metavar="ADDRESS",
)  # fmt: skip
PORT = option(
    "port", int, 8000, "The TCP port to listen on (0: a free one, said on stderr).",
    check=within(0, 65535),
)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many may be served at once. A request past
    a limit is refused (4xx, naming the field) before any of its work is done."""

    max_prompt: int = setting(
        16_384, "Characters a prompt (or a text to score: ten times this) may have.",
        check=at_least(1),
    )  # fmt: skip
    max_request_tokens: int = setting(
        16_384, "Tokens one request may ask for: max_tokens x n (x the prompts).",
        check=at_least(1),
    )  # fmt: skip
    max_body: int = setting(
        1 << 20, "Bytes a request's body may have.", check=at_least(1024), metavar="BYTES"
    )
    max_in_flight: int = setting(
        64, "Requests served at once; more get 429 (too many requests).", check=at_least(1)
    )
    read_timeout: float = setting(
        10.0, "Seconds a client may take to send its request's body; slower gets 408.",
        check=positive,
    )  # fmt: skip
    shutdown_timeout: float = setting(
        10.0, "On Ctrl-C or SIGTERM, seconds to let requests in flight finish before "
        "they are cancelled.", check=positive,
    )  # fmt: skip

    def __post_init__(self):
        settings.validate(self)

    @property
    def max_score(self) -> int:
        """Characters a text to score may have."""
        return 10 * self.max_prompt
