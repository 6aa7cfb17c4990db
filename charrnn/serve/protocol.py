"""OpenAI's completions protocol, as far as charrnn can speak it: a request's JSON body
checked field by field into a `Completion`, and the JSON of replies and errors.

Owns: what each field may be, and the one error of a bad request, `RequestError`
(HTTP status, message, `param`: the field, `code`), which the app turns into OpenAI's
error shape `{"error": {"message", "type", "param", "code"}}`. It knows nothing of HTTP,
models or threads.

Fields, by what charrnn does with them (docs/serving.md has the table):

    done as OpenAI does     model prompt max_tokens temperature top_p n stream
                            stream_options.include_usage logprobs (0..5) echo stop seed
    charrnn's own (as vLLM  top_k, on_unknown (error, skip, unk: prompt symbols the model
    and llama.cpp add)      never saw)
    accepted, ignored       user
    only their defaults     best_of (= n), suffix, logit_bias, presence_penalty,
                            frequency_penalty: any other value is refused, naming it
    anything else           refused, naming the closest field
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from charrnn import settings
from charrnn.sample import SampleConfig
from charrnn.settings import SEED
from charrnn.tokenizers import ON_UNKNOWN

MAX_LOGPROBS = 5  # as OpenAI: the five likeliest tokens at each step
MAX_STOP = 4  # stop sequences a request may give, as OpenAI
MAX_N = 128  # choices per prompt, as OpenAI
DEFAULT_MAX_TOKENS = 16  # as OpenAI

KNOWN = (
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options",
    "logprobs", "echo", "stop", "seed", "top_k", "on_unknown", "user", "best_of", "suffix",
    "logit_bias", "presence_penalty", "frequency_penalty",
)  # fmt: skip
DEFAULTS_ONLY = {"suffix": (None, ""), "logit_bias": (None, {}), "presence_penalty": (None, 0),
                 "frequency_penalty": (None, 0)}  # fmt: skip


class RequestError(Exception):
    """A request the server will not serve: HTTP `status`, a message that says what to
    do, the field at fault (`param`, None for the whole request) and OpenAI's `code`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 code: str | None = None, kind: str = "invalid_request_error"):  # fmt: skip
        super().__init__(message)
        self.message, self.param, self.status, self.code, self.kind = (
            message,
            param,
            status,
            code,
            kind,
        )

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}  # fmt: skip


def http_message(message: str) -> str:
    """A charrnn error's message as a client reads it: `--on-unknown skip` is the field
    `on_unknown`, `--temperature` is `temperature` (a flag and its field are one name)."""
    return re.sub(r"(?<![\w-])--([a-z][a-z-]*)", lambda m: m[1].replace("-", "_"), message)


def parse_json(body: bytes) -> dict:
    """The body as a JSON object; NaN and Infinity are not JSON, and are refused."""

    def constant(name: str):
        raise RequestError(f"the body is not JSON: {name} is not a JSON number", code="bad_json")

    try:
        data = json.loads(body.decode("utf-8"), parse_constant=constant)
    except UnicodeDecodeError as e:
        raise RequestError(f"the body is not UTF-8 ({e.reason} at byte {e.start})",
                           code="bad_json") from None  # fmt: skip
    except json.JSONDecodeError as e:
        raise RequestError(f"the body is not JSON: {e.msg} at line {e.lineno} column "
                           f"{e.colno}", code="bad_json") from None  # fmt: skip
    except RecursionError:
        raise RequestError("the body is not JSON a server reads: nested too deep",
                           code="bad_json") from None  # fmt: skip
    if not isinstance(data, dict):
        raise RequestError(f"the body must be a JSON object, not {type(data).__name__}")
    return data


# Fields ---------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return {bool: "a boolean", str: "a string", list: "an array", dict: "an object",
            type(None): "null"}.get(type(value), repr(value))  # fmt: skip


def whole(data: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    """An integer field in [low, high] (a float that is a whole number counts)."""
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"{name} must be a whole number, not {_shown(value)}", name)
    if not low <= value <= high:
        raise RequestError(f"{name} must be in [{low}, {high}], not {value}", name)
    return value


def flag(data: dict, name: str) -> bool:
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false, not {_shown(value)}", name)
    return value


def declared(data: dict, name: str, declaration: settings.Declared) -> Any:
    """A field that is one of charrnn's own settings (temperature, top_p, top_k, seed,
    on_unknown): checked by its declaration, so it means what the flag means."""
    value = data.get(name)
    if value is None:
        return None
    if declaration.base_type in (int, float) and isinstance(value, str):
        raise RequestError(f"{name} must be a number, not {_shown(value)}", name)
    problem = declaration.problem(value)
    if problem is not None:
        raise RequestError(f"{name} {problem}", name)
    return float(value) if declaration.base_type is float else value


SAMPLE = {d.name: d for d in settings.declared(SampleConfig)}


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_known(data: dict) -> None:
    for name in data:
        if name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RequestError(f"unknown field {name!r}{hint}", name, code="unknown_field")
    for name, allowed in DEFAULTS_ONLY.items():
        if name in data and data[name] not in allowed:
            raise RequestError(f"{name} is not supported by charrnn; leave it out", name,
                               code="unsupported")  # fmt: skip


def model_name(data: dict, served: list[str]) -> str:
    """The run asked for by `model`; with one run served, `model` may be left out."""
    name = data.get("model")
    if name is None and len(served) == 1:
        return served[0]
    if not isinstance(name, str):
        raise RequestError(f"model must be a string, one of: {', '.join(served)}", "model")
    if name not in served:
        raise RequestError(f"no model {_shown(name)}; this server has: {', '.join(served)}",
                           "model", 404, "model_not_found")  # fmt: skip
    return name


def prompts(data: dict, vocab_size: int, max_chars: int) -> list[str | list[int]]:
    """`prompt`: a string, an array of strings (a completion each), or token ids of the
    model's own tokenizer (an array, or an array of them)."""
    value = data.get("prompt", "")
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, list) and value and all(_is_id(v) for v in value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RequestError("prompt must be a string, an array of strings or an array of token "
                           f"ids, not {_shown(data.get('prompt'))}", "prompt")  # fmt: skip
    for p in value:
        if isinstance(p, str):
            if len(p) > max_chars:
                raise RequestError(f"prompt has {len(p):,} characters; this server takes at most "
                                   f"{max_chars:,} (--max-prompt)", "prompt", 400,
                                   "prompt_too_long")  # fmt: skip
        elif isinstance(p, list) and all(_is_id(v) for v in p):
            bad = next((v for v in p if not 0 <= v < vocab_size), None)
            if bad is not None:
                raise RequestError(f"prompt has token id {bad}; the model's ids are 0.."
                                   f"{vocab_size - 1}", "prompt")  # fmt: skip
            if len(p) > max_chars:
                raise RequestError(f"prompt has {len(p):,} tokens; this server takes at most "
                                   f"{max_chars:,} (--max-prompt)", "prompt", 400,
                                   "prompt_too_long")  # fmt: skip
        else:
            raise RequestError("prompt must be a string, an array of strings or an array of "
                               f"token ids; it holds {_shown(p)}", "prompt")  # fmt: skip
    return value


def _is_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def stops(data: dict) -> tuple[str, ...]:
    value = data.get("stop")
    if value is None:
        return ()
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise RequestError("stop must be a string or an array of non-empty strings", "stop")
    if len(value) > MAX_STOP:
        raise RequestError(f"stop takes at most {MAX_STOP} sequences, not {len(value)}", "stop")
    return tuple(value)


@dataclass(frozen=True)
class Sampling:
    """How one prompt's choices are made: what each row of the batch carries."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    logprobs: int | None = None  # the top-k tokens to report at each step, if any
    stop: tuple[str, ...] = ()
    echo: bool = False
    stream: bool = False


@dataclass(frozen=True)
class Completion:
    """A checked completions request."""

    model: str
    prompts: list[str | list[int]]
    n: int
    sampling: Sampling
    on_unknown: str | None
    include_usage: bool


def completion(data: dict, served: dict[str, int], max_chars: int, max_tokens: int) -> Completion:
    """The request in `data`, checked (RequestError naming the first bad field).
    `served`: each model's name and vocabulary size."""
    check_known(data)
    model = model_name(data, list(served))
    n = whole(data, "n", 1, 1, MAX_N)
    best_of = whole(data, "best_of", n, 1, MAX_N)
    if best_of != n:
        raise RequestError("best_of must equal n: charrnn returns every choice it makes",
                           "best_of", code="unsupported")  # fmt: skip
    asked = whole(data, "max_tokens", DEFAULT_MAX_TOKENS, 0, 2**63 - 1)
    found = prompts(data, served[model], max_chars)
    if asked * n * len(found) > max_tokens:
        raise RequestError(f"max_tokens {asked:,} x n {n} x {len(found)} prompts asks for more "
                           f"than the {max_tokens:,} tokens this server makes for one request "
                           "(--max-request-tokens)", "max_tokens", 400,
                           "too_many_tokens")  # fmt: skip
    options = data.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise RequestError('stream_options must be {"include_usage": true or false}',
                           "stream_options")  # fmt: skip
    sampling = Sampling(
        max_tokens=asked,
        temperature=_or(declared(data, "temperature", SAMPLE["temperature"]), 1.0),
        top_p=_or(declared(data, "top_p", SAMPLE["top_p"]), 1.0),
        top_k=declared(data, "top_k", SAMPLE["top_k"]),
        seed=declared(data, "seed", SEED),
        logprobs=whole(data, "logprobs", None, 0, MAX_LOGPROBS),
        stop=stops(data), echo=flag(data, "echo"), stream=flag(data, "stream"),
    )  # fmt: skip
    on_unknown = declared(data, "on_unknown", ON_UNKNOWN)
    include_usage = bool(options and flag(options, "include_usage"))
    if data.get("user") is not None and not isinstance(data["user"], str):
        raise RequestError("user must be a string", "user")
    return Completion(model, found, n, sampling, on_unknown, include_usage)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def score(data: dict, served: list[str], max_chars: int) -> tuple[str, str, str | None]:
    """(model, text, on_unknown) of a /v1/score request."""
    for name in data:
        if name not in ("model", "text", "on_unknown"):
            raise RequestError(f"unknown field {name!r}; /v1/score takes model, text and "
                               "on_unknown", name, code="unknown_field")  # fmt: skip
    model = model_name(data, served)
    text = data.get("text")
    if not isinstance(text, str):
        raise RequestError(f"text must be a string, not {_type_name(text)}", "text")
    if len(text) > max_chars:
        raise RequestError(f"text has {len(text):,} characters; this server scores at most "
                           f"{max_chars:,} (10 x --max-prompt)", "text", 400,
                           "text_too_long")  # fmt: skip
    return model, text, declared(data, "on_unknown", ON_UNKNOWN)
