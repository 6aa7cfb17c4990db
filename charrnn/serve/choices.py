"""One choice of a completion as the batch makes it: its text, decoded a token at a time
(sample.Pieces), cut at a stop sequence, its log-probabilities, and why it ended.

Owns: `Choice`, what a row of the batch carries besides its state (the engine owns the
state), and `Delta`, what a choice has ready to send. Text that could be the start of a
stop sequence is held back until the next tokens show it is not (then it is sent) or that
it is (then it is cut): a stream never sends text a non-streamed reply would not have.
Nothing here touches a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from charrnn.sample import Pieces
from charrnn.serve.protocol import Sampling


@dataclass
class Logprobs:
    """OpenAI's `logprobs` of a choice: one entry per token, in four lists. text_offset
    counts characters from the start of the prompt (OpenAI's convention, echo or not)."""

    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def add(self, token: str, logprob: float | None, top: dict | None, offset: int) -> None:
        self.tokens.append(token)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(top)
        self.text_offset.append(offset)

    def since(self, start: int, end: int | None = None) -> Logprobs:
        part = slice(start, end)
        return Logprobs(self.tokens[part], self.token_logprobs[part], self.top_logprobs[part],
                        self.text_offset[part])  # fmt: skip

    def json(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top_logprobs, "text_offset": self.text_offset}  # fmt: skip


@dataclass
class Delta:
    """What a choice has ready: new text, its tokens' logprobs, and its finish_reason once
    it has ended."""

    index: int
    text: str
    logprobs: Logprobs | None
    finish_reason: str | None


class Choice:
    """One row: choice `index` of a request, made after `prime` (ids, <eos> first) whose
    text is `prompt` (the length text_offset starts the completion at; echoed if asked)."""

    def __init__(self, index: int, sampling: Sampling, tokenizer, prime: list[int], prompt: str):
        self.index, self.sampling, self.tokenizer = index, sampling, tokenizer
        self.pieces = Pieces(tokenizer, prime)
        self.base = len(prompt)  # where the completion's text starts, for text_offset
        self.text = prompt if sampling.echo else ""
        self.start = len(self.text)  # the completion's first character in self.text
        self.made = 0  # tokens made
        self.logprobs = Logprobs() if sampling.logprobs is not None else None
        self.ends: list[int] = []  # per logprobs entry: where its token's text ends in text
        self.sent, self.sent_logprobs = 0, 0
        self.finish: str | None = None
        self.longest_stop = max(map(len, sampling.stop), default=0)
        if sampling.max_tokens == 0:
            self.finish = "length"

    def echo_logprobs(self, entries: list[tuple[str, float | None, dict | None, int]]) -> None:
        """The prompt's own tokens, when echo and logprobs are both asked for."""
        if self.logprobs is not None and self.sampling.echo:
            for token, logprob, top, offset in entries:
                self.logprobs.add(token, logprob, top, offset)
                self.ends.append(self.start)

    def add(self, token: int, eos: bool, logprob: float | None = None,
            top: dict | None = None) -> None:  # fmt: skip
        """The token just made (its log-probability and the top ones, if asked for)."""
        if eos:  # the model ended the text itself
            self._end("stop", self.pieces.rest())
            return
        self.made += 1
        before = len(self.text)
        self.text += self.pieces.add(token)
        if self.logprobs is not None:
            offset = self.base + before - self.start
            self.logprobs.add(self.tokenizer.token_text(token), logprob, top, offset)
            self.ends.append(len(self.text))
        if not self._cut(before) and self.made >= self.sampling.max_tokens:
            self._end("length", self.pieces.rest())

    def _end(self, reason: str, rest: str) -> None:
        before = len(self.text)
        self.text += rest
        if not self._cut(before):
            self.finish = reason

    def _cut(self, before: int) -> bool:
        """Cut the text at the first stop sequence in it, if one has just appeared."""
        if not self.longest_stop:
            return False
        look = max(self.start, before - self.longest_stop + 1)
        found = [i for s in self.sampling.stop if (i := self.text.find(s, look)) >= 0]
        if not found:
            return False
        self.text, self.finish = self.text[: min(found)], "stop"
        return True

    def take(self) -> Delta | None:
        """What is ready to send since the last take (None if nothing): all of it once
        the choice has ended, else all but what may be the start of a stop sequence."""
        end = len(self.text)
        if self.finish is None and self.longest_stop:
            end = max(self.sent, end - self.longest_stop + 1)
        logprobs = None
        if self.logprobs is not None:
            # A token is sent with the text it ends in; once the choice has ended, every
            # token that starts before the end (none past a stop sequence's cut).
            starts = [o - self.base + self.start for o in self.logprobs.text_offset]
            upto = sum(e <= end or (self.finish is not None and s < end)
                       for s, e in zip(starts, self.ends))  # fmt: skip
            logprobs = self.logprobs.since(self.sent_logprobs, upto)
            self.sent_logprobs = upto
        if end == self.sent and self.finish is None and not (logprobs and logprobs.tokens):
            return None
        text, self.sent = self.text[self.sent : end], end
        return Delta(self.index, text, logprobs, self.finish)

    def result(self) -> Delta:
        """The whole choice, for a reply that is not streamed."""
        self.sent, self.sent_logprobs = 0, 0
        return self.take()
