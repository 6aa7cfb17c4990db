"""Many runs, one table: what `charrnn compare` plans, trains into, and reads back.

    DIR/
      compare.json      format_version, the plan (what the command asked), each run's
                        status and results, and each cell's summary over its seeds
      compare.png       val bits/char over training (plots.compare_figure)
      lstm-seed0/       ordinary run directories, one per cell and seed
      gru-seed0/ ...

A Plan is the command: the corpus, the cells, the number of seeds (0 .. N-1) and the train
settings given, plus the device type and number of ranks (the defaults of a run depend on
them). Every run of a plan gets the same settings but its cell and seed, so the runs read
the same text for the same budget. The runs go seed by seed (every cell's seed 0, then
every cell's seed 1, ...), so a comparison cut short has one run of each cell first.

Carrying a comparison on: a run compare.json records as finished (done or diverged) is
skipped; one with a last/ is resumed from it (run.resume); one with a directory but no
last/ (stopped before its first evaluation) is started again; the others are new. A DIR
made by another plan is refused. This module reads and writes files; it never prints and
never trains (the caller runs each Request with runner.Session).
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from charrnn import checkpoint, finetune, memory, plots, run, runconfig, runner, settings
from charrnn.cells import CELLS
from charrnn.corpus import CorpusConfig
from charrnn.distributed import SINGLE, World
from charrnn.errors import ConfigError
from charrnn.settings import at_least, option

FILE = "compare.json"
PICTURE = "compare.png"
FORMAT_VERSION = 1  # of compare.json
FINISHED = ("done", "diverged")  # a run in one of these states is not trained again


def _check_cells(text: str) -> str | None:
    try:
        parse_cells(text)
    except ConfigError as e:
        return str(e)
    return None


# Every run's settings unless given: the networks are compared, without an n-gram (--ngram),
# which would carry the same share of every run's predictions and narrow the gaps between
# the cells (given, it mixes one into each run). The command's --help states them
# (cli/compare.py); a plan holds only what was given otherwise.
RUN_DEFAULTS = {"ngram": 0}
CELLS_COMPARED = "lstm,gru,rnn"  # --cells when not given (with --init-from: RUN's cell)
CELL_LIST = option(
    "cells", str | None, None, f"Cells to compare, comma-separated: any of {', '.join(CELLS)}.",
    check=_check_cells, metavar="CELL,...", none=f"{CELLS_COMPARED}; with --init-from, RUN's",
)  # fmt: skip
SEEDS = option("seeds", int, 2, "Runs per cell, seeded 0 to N-1.", check=at_least(1))


def parse_cells(text: str) -> tuple[str, ...]:
    """'lstm, gru' -> ('lstm', 'gru'); a message naming the bad cell otherwise (the flag's
    name is added by the caller)."""
    cells = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        shown = f"{', '.join(map(repr, unknown))} is not a cell" if unknown else "names no cell"
        raise ConfigError(f"{text!r}: {shown}; choose from {', '.join(CELLS)}")
    twice = sorted({c for c in cells if cells.count(c) > 1})
    if twice:
        raise ConfigError(f"{text!r} names {', '.join(twice)} twice")
    return cells


@dataclass(frozen=True)
class Planned:
    """One run of a plan."""

    cell: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.cell}-seed{self.seed}"


@dataclass(frozen=True)
class Plan:
    """What a `charrnn compare` command asks: the same of everything, but cell and seed."""

    sources: tuple[str, ...]
    cells: tuple[str, ...]
    seeds: int
    settings: Mapping[str, Any]  # the train settings given (not None), cell and seed excepted
    device: str  # the device type: a run's defaults depend on it
    world_size: int
    init_from: str | None = None  # every run fine-tuned from this run (--init-from)

    def runs(self) -> list[Planned]:
        return [Planned(cell, seed) for seed in range(self.seeds) for cell in self.cells]

    def given(self, item: Planned) -> dict[str, Any]:
        """The settings of one run, as run.create takes them."""
        return {**RUN_DEFAULTS, **self.settings, "cell": item.cell, "seed": item.seed}

    def to_json(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "cells": list(self.cells), "seeds": self.seeds,
                "settings": dict(self.settings), "device": self.device,
                "world_size": self.world_size, "init_from": self.init_from}  # fmt: skip


def plan(
    sources: Sequence[str], cells: str | None, seeds: int, given: Mapping[str, Any],
    device: torch.device, world: World = SINGLE, init_from: Path | None = None,
) -> Plan:  # fmt: skip
    """A checked plan: every setting given is checked as run.create checks it, for every
    cell, before anything is read or written; with `init_from`, against that run too
    (whose cell is then the one compared, unless `cells` names others, which it refuses)."""
    # a setting at compare's own default is not kept as given: a plan made before it holds none
    given = {k: v for k, v in given.items()
             if v is not None and not (k in RUN_DEFAULTS and RUN_DEFAULTS[k] == v)}  # fmt: skip
    assert not {"cell", "seed"} & set(given), "compare sets the cell and seed of each run"
    base = finetune.load(init_from) if init_from is not None else None
    cells = cells or (base.config.model.cell if base else CELLS_COMPARED)
    try:
        chosen = parse_cells(cells)
    except ConfigError as e:
        raise ConfigError(f"--cells {e}") from None
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, not {seeds}")
    for cell in chosen:  # what run.create checks before it reads the corpus
        asked = {**RUN_DEFAULTS, **given, "cell": cell}
        asked = base.settings_for(asked, torch.device(device))[0] if base else asked
        run.resolve_settings(asked, torch.device(device))
    return Plan(tuple(sources), chosen, seeds, given, torch.device(device).type, world.size,
                str(init_from) if init_from is not None else None)  # fmt: skip


# The comparison's directory -----------------------------------------------------------


def read_state(out: Path) -> dict | None:
    """compare.json of DIR, or None if there is none."""
    path = Path(out) / FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: not a compare.json this charrnn wrote (format_version 1)")
    return state


def statuses(plan: Plan, out: Path) -> dict[str, str]:
    """Each planned run's status as DIR records it ({} for a new DIR); ConfigError for a
    DIR that holds something else, or a comparison made by another command."""
    out = Path(out)
    state = read_state(out)
    if state is None:  # a new DIR; or one whose first run was set up, then killed
        names = {item.name for item in plan.runs()}
        if out.exists() and (not out.is_dir() or {p.name for p in out.iterdir()} - names):
            raise ConfigError(
                f"--out {out} is not empty and holds no {FILE}: give a new or empty folder"
            )
        return {}
    differences = plan_differences(state.get("plan") or {}, plan.to_json())
    if differences:
        raise ConfigError(
            f"--out {out} holds a comparison made by another command ({'; '.join(differences)}); "
            "run that command again to carry it on, or give another --out"
        )
    return {r["run"]: r["status"] for r in state.get("runs", []) if "run" in r and "status" in r}


def plan_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two plans, as flags: '--hidden 64 here, 128 there'."""
    flags = {d.name: d for cls in runconfig.SECTIONS.values() for d in settings.declared(cls)}
    flags.update({d.name: d for d in settings.declared(CorpusConfig)})
    out = []
    for key in ("sources", "cells", "seeds", "device", "world_size", "init_from"):
        if old.get(key) != new.get(key):
            name = {"sources": "CORPUS", "device": "--device (type)", "world_size": "ranks",
                    "init_from": "--init-from"}.get(key, f"--{key}")  # fmt: skip
            out.append(f"{name} {_shown(new.get(key))} here, {_shown(old.get(key))} there")
    old_set, new_set = old.get("settings") or {}, new.get("settings") or {}
    for key in sorted(set(old_set) | set(new_set)):
        if old_set.get(key) != new_set.get(key):
            d = flags.get(key)
            flag, text = (d.flag, d.text) if d else (f"--{key.replace('_', '-')}", _shown)
            here = text(new_set[key]) if key in new_set else "not given"
            there = text(old_set[key]) if key in old_set else "not given"
            out.append(f"{flag} {here} here, {there} there")
    return out


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def action(out: Path, item: Planned, status: str | None) -> str:
    """What a run needs: skip (finished), resume (it has a last/), restart (a directory
    with no last/: stopped before its first evaluation) or new."""
    path = Path(out) / item.name
    if status in FINISHED and (path / checkpoint.CONFIG).exists():
        return "skip"
    if checkpoint.last_dir(path) is not None:
        return "resume"
    if not path.exists():
        return "new"
    if not (path / checkpoint.CONFIG).exists() and any(path.iterdir()):
        raise ConfigError(f"{path} is in the way: it holds no run; move it or give another --out")
    return "restart"


def request(plan: Plan, item: Planned, what: str, out: Path,
            world: World = SINGLE) -> runner.Request:  # fmt: skip
    """The training job of one run: resumed from its last/, or made anew (a run started
    again loses its directory first; it had no checkpoint)."""
    path = Path(out) / item.name
    if what == "resume":
        return runner.Request(plan.sources, plan.given(item), resume=path)
    if what == "restart" and world.is_main:
        shutil.rmtree(path)
    world.barrier()  # no rank sets up before the old directory is gone
    init_from = Path(plan.init_from) if plan.init_from is not None else None
    return runner.Request(plan.sources, plan.given(item), run_dir=path, init_from=init_from)


# Results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """One run of a comparison, from its run directory. The val figures are those of its
    best evaluation (the model that model.safetensors holds)."""

    run: str  # the run directory's name in DIR
    cell: str
    seed: int
    status: str  # pending | done | diverged
    parameters: int | None = None
    steps: int | None = None
    tokens: int | None = None
    elapsed: float | None = None  # seconds of training, evaluations not counted
    tokens_per_sec: float | None = None  # tokens / elapsed
    best_val_loss: float | None = None
    best_val_bpc: float | None = None
    best_step: int | None = None


def run_result(out: Path, item: Planned, status: str) -> RunResult:
    path = Path(out) / item.name
    metrics = checkpoint.read_metrics(path) if path.is_dir() else []
    if not metrics:
        return RunResult(item.name, item.cell, item.seed, status)
    config = runconfig.read_config(path)
    parameters = memory.parameters(config.model)
    best = min(metrics, key=lambda m: m.get("val_loss", float("inf")))
    best = next((m for m in metrics if m["step"] == config.best_step), best)
    last = metrics[-1]
    speed = last["tokens"] / last["elapsed"] if last.get("elapsed") else None
    return RunResult(
        item.name, item.cell, item.seed, status, parameters, last["step"], last["tokens"],
        last.get("elapsed"), speed, best.get("val_loss"), best.get("val_bpc"), best["step"],
    )  # fmt: skip


@dataclass(frozen=True)
class Spread:
    """A figure over seeds: the mean and the sample standard deviation (n - 1; None for
    one seed)."""

    mean: float
    sd: float | None
    n: int


def spread(values: Sequence[float]) -> Spread | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    sd = statistics.stdev(values) if len(values) > 1 else None
    return Spread(statistics.fmean(values), sd, len(values))


@dataclass(frozen=True)
class CellSummary:
    """One cell over its finished (done) seeds."""

    cell: str
    done: int  # runs finished
    diverged: int
    planned: int
    val_loss: Spread | None
    val_bpc: Spread | None
    parameters: int | None
    tokens_per_sec: Spread | None
    steps: Spread | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cell": self.cell, "done": self.done, "diverged": self.diverged,
                               "planned": self.planned, "parameters": self.parameters}  # fmt: skip
        for name in ("val_loss", "val_bpc", "tokens_per_sec", "steps"):
            s = getattr(self, name)
            out[f"{name}_mean"], out[f"{name}_sd"] = (s.mean, s.sd) if s else (None, None)
        return out


def summarize(plan: Plan, results: Sequence[RunResult]) -> list[CellSummary]:
    out = []
    for cell in plan.cells:
        mine = [r for r in results if r.cell == cell]
        done = [r for r in mine if r.status == "done"]
        out.append(CellSummary(
            cell, len(done), sum(r.status == "diverged" for r in mine), plan.seeds,
            spread([r.best_val_loss for r in done]), spread([r.best_val_bpc for r in done]),
            next((r.parameters for r in mine if r.parameters is not None), None),
            spread([r.tokens_per_sec for r in done]), spread([r.steps for r in done]),
        ))  # fmt: skip
    return out


@dataclass(frozen=True)
class Comparison:
    """Everything compare.json holds."""

    plan: Plan
    runs: list[RunResult]
    cells: list[CellSummary]

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "plan": self.plan.to_json(),
                "runs": [asdict(r) for r in self.runs],
                "cells": [c.to_json() for c in self.cells]}  # fmt: skip


def record(plan: Plan, out: Path, states: Mapping[str, str]) -> Comparison:
    """Read every run of the plan back and write compare.json (atomically): the caller
    does so before each run and after it (rank 0 alone)."""
    results = [run_result(out, item, states.get(item.name, "pending")) for item in plan.runs()]
    comparison = Comparison(plan, results, summarize(plan, results))
    Path(out).mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(Path(out) / FILE, comparison.to_json())
    return comparison


def draw(plan: Plan, out: Path) -> Path:
    """DIR/compare.png: every run's val bits/char over training time (with a time budget)
    or over tokens (with --steps or --epochs). plots.MissingExtra without matplotlib."""
    plots.need_matplotlib("compare")
    by_count = any(plan.settings.get(k) is not None for k in ("steps", "epochs"))
    path = Path(out) / PICTURE
    plots.compare_figure(curves(plan, out), "bpc", "tokens" if by_count else "time", path)
    return path


def curves(plan: Plan, out: Path) -> dict[str, list[list[dict]]]:
    """Each cell's metrics.jsonl records, one list per seed that has any: what
    compare.png draws."""
    found: dict[str, list[list[dict]]] = {cell: [] for cell in plan.cells}
    for item in plan.runs():
        records = checkpoint.read_metrics(Path(out) / item.name)
        if records:
            found[item.cell].append(records)
    return found
