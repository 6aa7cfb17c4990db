"""Settings declared once (charrnn/settings.py) and the options made from them
(charrnn/cli/options.py): defaults by context, checks that name the flag, groups,
and a command whose options, help and values all come from one declaration."""

from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from charrnn import settings
from charrnn.cli.app import Command, Group, command
from charrnn.cli.options import DEFAULT, opt, with_settings
from charrnn.errors import ConfigError
from charrnn.settings import SEED, at_least, option, setting, within
from charrnn.training.config import TrainConfig

runner = CliRunner()


@dataclass(frozen=True)
class Shape:
    width: int = setting(8, "Units.", by={"cuda": 16, "word": 4, "cuda word": 32},
                         check=at_least(1))  # fmt: skip
    rate: float = setting(0.5, "A rate.", check=within(0, 1))
    kind: str = setting("a", "A kind.", choices=("a", "b"))
    wide: bool = setting(False, "Wide or not.")
    steps: int | None = setting(None, "Steps.", group="how long", check=at_least(1))
    epochs: float | None = setting(1.0, "Epochs.", group="how long")

    def __post_init__(self):
        settings.validate(self)


def declared(name: str) -> settings.Declared:
    return next(d for d in settings.declared(Shape) if d.name == name)


def test_the_most_specific_context_gives_the_default():
    width = declared("width")
    assert width.default_in([]) == 8 and width.default_in(["cpu"]) == 8
    assert width.default_in(["cuda"]) == 16 and width.default_in(["word"]) == 4
    assert width.default_in(["cuda", "word"]) == 32  # "cuda word" names both
    assert settings.default_of(Shape, "width", ["cpu", "word"]) == 4


def test_a_value_is_checked_and_the_problem_names_the_rule():
    width, rate, kind = declared("width"), declared("rate"), declared("kind")
    assert width.problem(3) is None and rate.problem(1) is None  # an int is a number
    assert width.problem(0) == "must be at least 1, not 0"
    assert width.problem(True) == "must be a whole number, not True"
    assert width.problem(2.5) == "must be a whole number, not 2.5"
    assert rate.problem(float("nan")) == "must be a finite number, not nan"
    assert rate.problem(2.0) == "must be in [0, 1], not 2"
    assert kind.problem("c") == "'c': choose one of a, b"
    assert declared("steps").problem(None) is None and width.problem(None) == "needs a value"
    with pytest.raises(ConfigError, match="^--rate must be in"):
        Shape(rate=3.0)
    assert Shape(rate=1).rate == 1.0 and isinstance(Shape(rate=1).rate, float)


def test_a_group_takes_one_member_and_the_one_given_replaces_the_others():
    assert settings.resolve(Shape, {"steps": 5}).epochs is None  # given: the default goes
    assert settings.resolve(Shape, {}).epochs == 1.0
    with pytest.raises(ConfigError, match="give only one of --steps, --epochs"):
        settings.resolve(Shape, {"steps": 5, "epochs": 2.0})
    again = settings.update(Shape(steps=5, epochs=None), {"epochs": 3.0})
    assert (again.steps, again.epochs) == (None, 3.0)
    assert settings.resolve(Shape, {"width": None}, ["cuda"]).width == 16  # None: not given


def test_unknown_names_are_refused_with_the_closest_one():
    assert settings.split({"width": 2, "seq_len": 3}, Shape, TrainConfig) == [
        {"width": 2}, {"seq_len": 3}]  # fmt: skip
    with pytest.raises(ConfigError, match="unknown setting 'widht'; did you mean 'width'"):
        settings.split({"widht": 2}, Shape)


def test_describe_shows_what_depends_on_the_context_and_what_was_given():
    shape = settings.resolve(Shape, {"rate": 0.25}, ["cuda"])
    assert settings.describe(shape, ["rate"]) == ["--width 16", "--rate 0.25", "--epochs 1"]
    assert settings.flags(shape) == ["--width 16", "--rate 0.25", "--kind a", "--no-wide",
                                     "--epochs 1"]  # fmt: skip
    changed = settings.changed(shape, {"width": 16, "rate": 0.5, "kind": None})
    assert [(d.name, old, new) for d, old, new in changed] == [("rate", 0.25, 0.5)]


def test_durations_read_and_write_back():
    assert settings.parse_duration("1h30m") == 5400 and settings.parse_duration("90") == 90
    assert settings.format_duration(5400) == "1h30m0s" and settings.format_duration(59.6) == "1m0s"
    for bad in ("", "3x", "0s", "m"):
        with pytest.raises(ValueError):
            settings.parse_duration(bad)


def test_one_declaration_gives_each_command_its_default():
    assert SEED.default_in(["train"]) == 1337 and SEED.default_in(["sample"]) is None
    assert SEED.default_in(["inspect-neurons"]) == 0
    seed = next(d for d in settings.declared(TrainConfig) if d.name == "seed")
    assert seed.default == 1337 and seed.setting.help == SEED.setting.help
    assert seed.setting.check is SEED.setting.check and seed.setting.by == {}


# The options of a command ---------------------------------------------------------------

LIMIT = option("limit", int, 3, "How many.", by={"try-b": 7}, check=at_least(1))
NAME = option("name", str | None, None, "A name.", none="the first one")


def app_of(*commands) -> typer.Typer:
    app = typer.Typer(cls=Group, add_completion=False, rich_markup_mode=None)
    app.callback()(lambda: None)  # a group even with one command, as charrnn's app is
    for name, func in commands:
        command(name, summary="A test command.", parent=app)(func)
    return app


def echo(**values):
    typer.echo(repr(dict(sorted(values.items()))))


def try_a(*, limit: opt(LIMIT) = DEFAULT, name: opt(NAME) = DEFAULT):
    echo(limit=limit, name=name)


def try_b(*, limit: opt(LIMIT) = DEFAULT):
    echo(limit=limit)


@with_settings(Shape, skip=["epochs"])
def try_c(*, limit: opt(LIMIT) = DEFAULT, settings: dict):
    echo(limit=limit, **settings)


def test_own_options_take_their_command_default_and_are_checked():
    app = app_of(("try-a", try_a), ("try-b", try_b))
    assert runner.invoke(app, ["try-a"]).stdout == "{'limit': 3, 'name': None}\n"
    assert runner.invoke(app, ["try-b"]).stdout == "{'limit': 7}\n"  # its own default
    given = runner.invoke(app, ["try-a", "--limit", "5", "--name", "x"])
    assert given.stdout == "{'limit': 5, 'name': 'x'}\n"
    bad = runner.invoke(app, ["try-a", "--limit", "0"])
    assert (bad.exit_code, bad.stderr) == (2, "charrnn: error: --limit must be at least 1, not 0\n")
    word = runner.invoke(app, ["try-a", "--limit", "many"])
    assert word.exit_code == 2 and "'many' is not a whole number" in word.stderr


def test_help_states_each_commands_own_default():
    app = app_of(("try-a", try_a), ("try-b", try_b))
    a = runner.invoke(app, ["try-a", "--help"], env={"COLUMNS": "80"}).stdout
    b = runner.invoke(app, ["try-b", "--help"], env={"COLUMNS": "80"}).stdout
    assert "How many.  [default: 3]" in a and "How many.  [default: 7]" in b
    assert "A name.  [default: the first one]" in a


def test_a_config_class_gives_options_and_only_the_given_ones_reach_the_command():
    app = app_of(("try-c", try_c))
    assert runner.invoke(app, ["try-c"]).stdout == "{'limit': 3}\n"
    result = runner.invoke(app, ["try-c", "--width", "2", "--kind", "b", "--wide", "--steps", "4"])
    assert result.stdout == "{'kind': 'b', 'limit': 3, 'steps': 4, 'wide': True, 'width': 2}\n"
    assert runner.invoke(app, ["try-c", "--epochs", "2"]).exit_code == 2  # skipped: no option
    shown = runner.invoke(app, ["try-c", "--help"], env={"COLUMNS": "80"}).stdout
    assert "--width N" in shown and "[default: cpu 8, cuda 16, word 4, cuda word 32]" in shown
    assert "--kind [a|b]" in shown and "--wide / --no-wide" in shown
    order = [shown.index(flag) for flag in ("--limit", "--width", "--steps")]
    assert order == sorted(order)  # own options, then the settings in declaration order
    assert isinstance(typer.main.get_command(app).commands["try-c"], Command)
