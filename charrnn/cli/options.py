"""Typer options made from the settings' declarations (charrnn/settings.py): a setting's
flag, metavar, choices, help and defaults are written there once and read here.

A command's own options stand in its signature, each typed by `opt()` from its
declaration; `= DEFAULT` takes the declaration's default for that command (see
Declared.default_in: a declaration may give one command another default):

    Device = opt(DEVICE)

    @command(summary="...")
    @with_settings(ModelConfig, TrainConfig)
    def train(sources: ..., *, run_dir: ..., device: Device = DEFAULT, settings: dict): ...

`with_settings` adds one option per setting of the config classes it names, after the
command's own options; they reach the command as one dict, `settings`, of those given on
the command line (the library fills in the rest). `command()` (app.py) resolves DEFAULT
and checks every own option's value against its declaration, naming the flag.
"""

from __future__ import annotations

import enum
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Optional

import typer

from charrnn import settings as declarations
from charrnn.errors import ConfigError
from charrnn.settings import Declared

METAVARS = {int: "N", float: "X", str: "TEXT"}


def _number(kind: type, name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {name}") from None

    return parse


NUMBERS = {int: _number(int, "a whole number"), float: _number(float, "a number")}
LONGEST_CHOICE_METAVAR = 24  # longer lists of choices go in the help, behind a NAME


def declared_of(classes: Iterable[type]) -> list[Declared]:
    """The command-line settings of config classes, in order."""
    return [d for cls in classes for d in declarations.declared(cls) if d.setting.cli]


def default_text(d: Declared, default: Any = inspect.Parameter.empty) -> str:
    """' [default: cpu 512, cuda 1024]': the defaults as --help states them."""
    if d.base_type is bool:
        show = lambda v: d.flag if v else "--no-" + d.flag[2:]  # noqa: E731
    else:
        show = d.text
    if default is not inspect.Parameter.empty:
        parts = [show(default)] if default is not None else [d.setting.none or ""]
    elif d.setting.fitted:
        parts = [d.setting.fitted]
    else:
        by = d.setting.by
        label = "cpu " if any("cuda" in key for key in by) and "cpu" not in by else ""
        parts = [f"{label}{show(d.default)}"] if d.default is not None else []
        parts += [f"{key} {show(value)}" for key, value in d.setting.by.items()]
    parts = [p for p in parts if p]
    return f"  [default: {', '.join(parts)}]" if parts else ""


def metavar(d: Declared) -> str:
    if d.setting.metavar:
        return d.setting.metavar
    choices = "|".join(d.setting.choices)
    if choices and len(choices) + 2 <= LONGEST_CHOICE_METAVAR:
        return f"[{choices}]"
    return "NAME" if choices else METAVARS[d.base_type]


def parameter(d: Declared, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """The Typer parameter of a setting; None as its value means "not given"."""
    text = d.setting.help
    if d.setting.choices and metavar(d) == "NAME":
        text += f" One of: {', '.join(d.setting.choices)}."
    text += default_text(d, default)
    kind: Any = d.base_type
    extra: dict[str, Any] = {}
    if d.base_type is bool:
        decls = [f"{d.flag}/--no-{d.flag[2:]}"]
    else:
        decls, extra["metavar"] = [d.flag], metavar(d)
    if d.setting.choices:
        kind = enum.Enum(d.name, {c: c for c in d.setting.choices}, type=str)
    elif d.setting.parse is not None or kind in NUMBERS:
        extra["parser"] = _parser(d.setting.parse or NUMBERS[kind])
    info = typer.Option(*decls, help=text, show_default=False, **extra)
    value = None if default is inspect.Parameter.empty else default
    return inspect.Parameter(
        d.name, inspect.Parameter.KEYWORD_ONLY, default=value,
        annotation=Annotated[Optional[kind], info],
    )  # fmt: skip


def _parser(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parser(text: Any) -> Any:
        if not isinstance(text, str):  # Typer parses the default too: it is a value already
            return text
        try:
            return parse(text)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None

    return parser


def _is_argument(p: inspect.Parameter) -> bool:
    metadata = getattr(p.annotation, "__metadata__", ())
    return any(isinstance(m, typer.models.ArgumentInfo) for m in metadata)


def with_settings(
    *classes: type, defaults: Mapping[str, Any] | None = None, skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
):  # fmt: skip
    """Add an option for every setting of the config `classes` to a command, but those in
    `skip` (or those not in `only`); `defaults` overrides what this command defaults them
    to. They reach the command as one dict, `settings`, of the ones given."""
    defaults, skip = dict(defaults or {}), set(skip)
    found = [d for d in declared_of(classes)
             if d.name not in skip and (only is None or d.name in only)]  # fmt: skip

    def decorate(func):
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values()
               if p.name != "settings"]  # fmt: skip
        added = [parameter(d, defaults.get(d.name, inspect.Parameter.empty)) for d in found]
        args = [p for p in own if _is_argument(p)]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if not _is_argument(p)]

        @functools.wraps(func)
        def wrapper(*a, **kwargs):
            given = {d.name: _plain(kwargs.pop(d.name, None)) for d in found}
            kwargs["settings"] = {k: v for k, v in given.items() if v is not None}
            return func(*a, **kwargs)

        params = [*args, *rest, *added]  # arguments, the command's own options, settings
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # Typer reads the signature above, not func's
        return wrapper

    return decorate


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()  # an own option's default: its declaration's, for this command


def opt(d: Declared) -> Any:
    """The type of a command's own option, from its declaration: `top: Top = DEFAULT`."""
    return Annotated[parameter(d).annotation, d]


def own_options(func, command: str):
    """`func` with its own options' DEFAULT resolved for `command` (their help saying so),
    and each value given checked against its declaration: ConfigError naming the flag."""
    signature = inspect.signature(func, eval_str=True)
    declared = {p.name: d for p in signature.parameters.values()
                if (d := _declared(p)) is not None}  # fmt: skip
    if not declared:
        return func
    params = []
    for p in signature.parameters.values():
        d = declared.get(p.name)
        if d is not None:
            default = d.default_in([command]) if p.default is DEFAULT else p.default
            shown = default if p.default is DEFAULT else inspect.Parameter.empty
            p = parameter(d, shown).replace(default=default, kind=p.kind)
        params.append(p)

    @functools.wraps(func)
    def wrapper(*a, **kwargs):
        for name, d in declared.items():
            kwargs[name] = value = _plain(kwargs.get(name))
            if value is not None and (problem := d.problem(value)) is not None:
                raise ConfigError(f"{d.flag} {problem}")
        return func(*a, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__
    return wrapper


def _declared(p: inspect.Parameter) -> Declared | None:
    return next((m for m in getattr(p.annotation, "__metadata__", ())
                 if isinstance(m, Declared)), None)  # fmt: skip


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value
