"""Settings, each declared once, beside the code that uses it.

A setting is a field of a frozen config dataclass (ModelConfig in model.py, TrainConfig in
train.py, TokenizerConfig in tokenizer.py, CorpusConfig in corpus.py, SampleConfig in
sample.py), declared with `setting()`:

    hidden: int = setting(512, "Units per recurrent layer.", by={"cuda": 1024}, check=at_least(1))

or, for an option that belongs to no config, a standalone `option()`. From that one
declaration come the command-line option (`--hidden N`: cli/options.py builds the Typer
options from it, with the defaults of each device in its help), the check of a value (an
error that names the flag), the key in config.json (the field name), the description of a run
(`describe`) and whether a resumed run may change it. The field name is the one name of the
concept: `seq_len` is `--seq-len` is `"seq_len"` in JSON and in the docs.

Defaults may depend on the context a run is made in: `by` maps a context to its default, where
a context is a device type (`cuda`), a tokenizer (`word`) or both (`"cuda word"`); the most
specific one that applies wins, and the field's own default is the one for a CPU and a
character model. Nothing here knows about Typer or files.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from charrnn.errors import ConfigError

SETTING = "charrnn.setting"  # the key of a Setting in a dataclass field's metadata


@dataclass(frozen=True)
class Setting:
    """What a setting is, besides its name, type and default (the dataclass field's)."""

    help: str  # one sentence, shown by --help
    by: Mapping[str, Any] = field(default_factory=dict)  # context -> its default
    choices: tuple[str, ...] = ()  # the values it can take, if a fixed few
    check: Callable[[Any], str | None] | None = None  # what is wrong with a value, or None
    metavar: str | None = None  # how --help names the value (default: from the type)
    parse: Callable[[str], Any] | None = None  # command-line text -> value (a duration)
    show: Callable[[Any], str] | None = None  # value -> text, for --help and describe()
    on_resume: str = "keep"  # keep: a resumed run refuses a change; change: it applies it
    group: str | None = None  # settings of one group exclude each other (--steps | --epochs)
    cli: bool = True  # False: charrnn derives it (a model's vocab_size), it is not a flag
    announce: bool = False  # describe() shows it even when its default depends on nothing
    none: str | None = None  # what a default of None means, for --help ("a new one")
    fitted: str | None = None  # the default is fitted to the text (fitting.py): how, for --help


def setting(default: Any, help: str, **kwargs) -> Any:
    """A dataclass field that is a setting (see Setting for the keyword arguments)."""
    return field(default=default, metadata={SETTING: Setting(help, **kwargs)})


@dataclass(frozen=True)
class Declared:
    """A setting with its name, type and default: all that is known of it."""

    name: str
    type: Any  # int, float, str, bool, or X | None
    default: Any  # for a CPU and a character model
    setting: Setting

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def base_type(self) -> type:
        """int, float, str or bool: the type without its `| None`."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        return args[0] if args else self.type

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.type)

    def default_in(self, context: Iterable[str] = ()) -> Any:
        """The default where every word of `context` holds ("cuda", "word", ...)."""
        context, best, value = set(context), 0, self.default
        for key, candidate in self.setting.by.items():
            words = set(key.split())
            if words <= context and len(words) > best:
                best, value = len(words), candidate
        return value

    def field(self, context: str) -> Any:
        """This declaration as the field of a config dataclass, its default the one for
        `context` (a setting that a command's option and a config share: --seed)."""
        one = dataclasses.replace(self.setting, by={})
        return field(default=self.default_in([context]), metadata={SETTING: one})

    def text(self, value: Any) -> str:
        """A value as --help and the description of a run write it."""
        if self.setting.show is not None and value is not None:
            return self.setting.show(value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:g}" if isinstance(value, float) else str(value)

    def as_flag(self, value: Any) -> str:
        """The command-line words that give this value: `--hidden 512`, `--no-tie-weights`."""
        if self.base_type is bool:
            return self.flag if value else "--no-" + self.flag[2:]
        return f"{self.flag} {self.text(value)}"

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this setting (the flag not included), or None."""
        if value is None:
            return None if self.optional else "needs a value"
        kind = self.base_type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"must be {TYPE_NAMES.get(kind, kind.__name__)}, not {value!r}"
        if kind is float and not math.isfinite(value):
            return f"must be a finite number, not {value}"
        if self.setting.choices and value not in self.setting.choices:
            return f"{value!r}: choose one of {', '.join(self.setting.choices)}"
        return self.setting.check(value) if self.setting.check else None


TYPE_NAMES = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}


def option(name: str, type: Any, default: Any, help: str, **kwargs) -> Declared:
    """A setting that belongs to no config dataclass (a command's own option). Its `by` may
    name commands too: `by={"sample": "cpu"}` is the default of `charrnn sample`."""
    return Declared(name, type, default, Setting(help, **kwargs))


@functools.cache
def declared(cls: type) -> tuple[Declared, ...]:
    """The settings of a config dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    return tuple(
        Declared(f.name, hints[f.name], f.default, f.metadata[SETTING])
        for f in dataclasses.fields(cls)
        if SETTING in f.metadata
    )


def default_of(cls: type, name: str, context: Iterable[str] = ()) -> Any:
    """The default of one setting of `cls` in a context."""
    return next(d for d in declared(cls) if d.name == name).default_in(context)


def check_values(cls: type, values: Mapping[str, Any]) -> None:
    """Check some settings of `cls` without making one; ConfigError naming the first bad
    one's flag (for a command that takes a few of a config's settings)."""
    for d in declared(cls):
        if d.name in values and (problem := d.problem(values[d.name])) is not None:
            raise ConfigError(f"{d.flag} {problem}")


def validate(config: Any) -> None:
    """Check every setting of a config dataclass; ConfigError naming the first bad one's flag.
    A whole number given for a number (`lr=1`) becomes a float, so JSON reads it back alike."""
    for d in declared(type(config)):
        value = getattr(config, d.name)
        problem = d.problem(value)
        if problem is not None:
            raise ConfigError(f"{d.flag} {problem}")
        if d.base_type is float and isinstance(value, int):
            object.__setattr__(config, d.name, float(value))


def resolve(cls: type, given: Mapping[str, Any], context: Iterable[str] = (), **fixed) -> Any:
    """A config of `cls`: the settings `given` (None: not given) over the defaults of the
    context, plus `fixed` fields (derived ones). Of a group, one given excludes the others."""
    values = {d.name: d.default_in(tuple(context)) for d in declared(cls)}
    return cls(**{**_apply(cls, values, given), **fixed})


def update(config: Any, given: Mapping[str, Any]) -> Any:
    """`config` with the settings `given` (None: not given) changed; of a group, one given
    replaces the member that was set."""
    return type(config)(**_apply(type(config), dataclasses.asdict(config), given))


def _apply(cls: type, values: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    given = {k: v for k, v in given.items() if v is not None}
    for group in {d.setting.group for d in declared(cls)} - {None}:
        members = [d for d in declared(cls) if d.setting.group == group]
        chosen = [d for d in members if d.name in given]
        if len(chosen) > 1:
            raise ConfigError(f"give only one of {', '.join(d.flag for d in members)}")
        if chosen:
            values.update({d.name: None for d in members})
    return {**values, **given}


def split(settings: Mapping[str, Any], *classes: type) -> list[dict[str, Any]]:
    """Share out keyword settings among config classes (the Python API's `**settings`);
    ConfigError for a name none of them declares, with the closest one."""
    known = [[d.name for d in declared(cls) if d.setting.cli] for cls in classes]
    out: list[dict[str, Any]] = [{} for _ in classes]
    for name, value in settings.items():
        owner = next((i for i, names in enumerate(known) if name in names), None)
        if owner is None:
            every = [n for names in known for n in names]
            close = difflib.get_close_matches(name, every, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown setting {name!r}{hint}")
        out[owner][name] = value
    return out


def to_json(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def describe(config: Any, given: Iterable[str] = ()) -> list[str]:
    """`--flag value` for each setting whose default depends on the context, that is marked
    `announce`, or that was given: what the first line of `charrnn train` says."""
    given = set(given)
    return [
        d.as_flag(getattr(config, d.name))
        for d in declared(type(config))
        if d.setting.cli
        and getattr(config, d.name) is not None
        and (d.setting.by or d.setting.announce or d.setting.group or d.name in given)
    ]


def flags(config: Any) -> list[str]:
    """Every setting of a config as the flags that give it (`--hidden 512`)."""
    return [
        d.as_flag(getattr(config, d.name))
        for d in declared(type(config))
        if d.setting.cli and getattr(config, d.name) is not None
    ]


def changed(old: Any, new_values: Mapping[str, Any]) -> list[tuple[Declared, Any, Any]]:
    """(setting, old value, new value) of each given setting that differs from `old`."""
    given = {k: v for k, v in new_values.items() if v is not None}
    return [
        (d, getattr(old, d.name), given[d.name])
        for d in declared(type(old))
        if d.name in given and given[d.name] != getattr(old, d.name)
    ]


def parse_duration(text: str) -> float:
    """'90' or '90s' -> 90.0, '3m' -> 180.0, '1h30m' -> 5400.0 seconds; ValueError if not."""
    units = {"h": 3600, "m": 60, "s": 1, "": 1}
    number = r"(\d+(?:\.\d+)?)\s*([hms]?)"
    if not re.fullmatch(rf"\s*(?:{number}\s*)+", text or ""):
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 3m, 1h30m)")
    seconds = sum(float(n) * units[u] for n, u in re.findall(number, text))
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def off_or(kind: type, off: Any) -> Callable[[str], Any]:
    """A command-line parser for a number that may be `off` (meaning `off`, the value that
    turns the setting off: `--patience off` is 0)."""

    def parse(text: str) -> Any:
        if text.strip().lower() == "off":
            return off
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {TYPE_NAMES[kind]} or off") from None

    return parse


def shown_off(off: Any) -> Callable[[Any], str]:
    """The text of such a value: `off` for the value that turns it off."""
    return lambda v: "off" if v == off else (f"{v:g}" if isinstance(v, float) else str(v))


def format_duration(seconds: float) -> str:
    """180.0 -> '3m0s', 5400 -> '1h30m0s'."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m or h else "") + f"{s}s"


# Checks: each returns what is wrong with a value, or None ------------------------------


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def at_least(low: float) -> Callable[[float], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}, not {v}"


def positive(v: float) -> str | None:
    return None if v > 0 else f"must be positive, not {v}"


def not_negative(v: float) -> str | None:
    return None if v >= 0 else f"cannot be negative, not {v}"


def within(low: float, high: float, low_open: bool = False, high_open: bool = False):
    """A check for low <= v <= high (or < where open), written as the interval."""
    interval = f"{'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"

    def check(v: float) -> str | None:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return None if above and below else f"must be in {interval}, not {_num(v)}"

    return check


# Settings that several parts share -----------------------------------------------------

SEED = option(
    "seed", int | None, None, "Seed for everything random: the same seed, the same result.",
    by={"train": 1337, "inspect-neurons": 0, "inspect-gradients": 0},
    check=within(0, 2**63 - 1), none="a new one, said on stderr",
)  # fmt: skip
