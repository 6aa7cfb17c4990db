"""The one runner: every training job (a new run, a resumed one, each run of a comparison,
a run started from Python) is set up and run here, and nowhere else.

    request = runner.Request(["input.txt"], {"hidden": 256, "steps": 500}, run_dir=...)
    with runner.Session(request) as session:      # world, device, set-up, notes
        for report in session.reports():          # determinism, stop flag, fit()
            ...                                   # the caller renders (only cli/ prints)
        session.last                              # how it ended: done, stopped, diverged...

A Session owns what every caller would otherwise have to remember: the ranks (a process
group under torchrun, joined here unless the caller holds one for several jobs), the
device, PyTorch's deterministic algorithms for the length of the job (--deterministic),
SIGINT/SIGTERM (the first one saves last/ and ends the job with a "stopped" report that
names the signal; a second one stops at once), a rank whose collective fails (a "failed"
report instead of a traceback), divergence (a "diverged" report: the checkpoints on disk
are intact), and freeing the job's DistributedDataParallel before the group goes.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from charrnn import devices, distributed, finetune, run
from charrnn.distributed import World
from charrnn.errors import ConfigError
from charrnn.training.config import TrainConfig
from charrnn.training.loop import fit
from charrnn.training.reports import Progress, Report
from charrnn.training.trainer import Job

ENDINGS = ("done", "stopped", "diverged", "failed")  # the kinds of a job's last report


@dataclass(frozen=True)
class Request:
    """A training job, as a caller asks for it."""

    sources: Sequence[str] = ()  # files, folders or a built-in name; none: python
    settings: Mapping[str, Any] = field(default_factory=dict)  # given (None: the default)
    run_dir: Path | None = None  # a new run's directory (None: checkpoints/NAME-CELL-TIME)
    resume: Path | None = None  # carry on this run instead
    device: str = "auto"
    collective_timeout: float = distributed.COLLECTIVE_TIMEOUT.default
    init_from: Path | None = None  # fine-tune: a new run from this run's best model


class StopFlag:
    """Set by SIGINT/SIGTERM: training saves last/ at the next step and ends. A second
    signal stops at once (exit 128 + its number)."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def handle(self, signum, frame):
        if self.signum is not None:
            raise SystemExit(128 + signum)
        self.signum = signum

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Handle the signals for the block; off the main thread (a server's worker) Python
        lets no one install handlers, and the job runs without them."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@contextmanager
def ranks(device: str, timeout: float) -> Iterator[tuple[World, torch.device]]:
    """(this process's World, its device) for the block: the process group joined under
    torchrun, nothing to join on one process. A caller that runs several jobs in one group
    (compare) holds this around them and gives each Session the world."""
    world = distributed.from_env()
    dev = distributed.rank_device(world, devices.resolve(device), device)
    with distributed.group(world, dev, timeout) as world:
        yield world, dev


class Session:
    """One training job: set up on entering (bad input raises CharrnnError before anything is
    written), trained by iterating reports(), cleaned up on leaving."""

    def __init__(self, request: Request, world: World | None = None,
                 device: torch.device | None = None):  # fmt: skip
        if request.resume is not None and request.run_dir not in (None, request.resume):
            raise ConfigError("--resume names the run directory; leave out --run-dir")
        if request.resume is not None and request.init_from is not None:
            raise ConfigError(
                "--init-from starts a new run; a resumed run carries on from its own weights "
                "(it knows where it began): leave out --init-from"
            )
        self.request, self.world, self.device = request, world, device
        self.job: Job | None = None
        self.run_dir: Path | None = None  # once set up
        self.config: TrainConfig | None = None  # the job's training settings, once set up
        self.last: Report | None = None
        self.stop = StopFlag()
        self._stack = ExitStack()

    def __enter__(self) -> Session:
        try:
            if self.world is None:
                self.world, self.device = self._stack.enter_context(
                    ranks(self.request.device, self.request.collective_timeout)
                )
            self.job = self._set_up()
            self.run_dir, self.config = self.job.run_dir, self.job.config
        except BaseException:
            self._stack.close()
            raise
        return self

    def _set_up(self) -> Job:
        r, world = self.request, self.world
        if r.resume is not None:
            return run.resume(Path(r.resume), list(r.sources), r.settings, self.device, world)
        run_dir = Path(r.run_dir) if r.run_dir is not None else None
        base = finetune.load(Path(r.init_from)) if r.init_from is not None else None
        return run.create(list(r.sources), r.settings, self.device, run_dir, world, base)

    @property
    def notes(self) -> list[tuple[str, str]]:
        """(level, text) of what set-up has to say: the first line, the corpus, warnings."""
        return self.job.notes

    def reports(self) -> Iterator[Report]:
        """Train, yielding fit()'s reports; the last one (also in `last`) says how it ended:
        done, stopped (report.signal), diverged, or failed (a rank's collective failed)."""
        job, world = self.job, self.world
        with deterministic(job.config.deterministic), self.stop.installed():
            try:
                for report in fit(job, self.stop):
                    if report.kind == "stopped":
                        report.signal = self.stop.signum or signal.SIGTERM  # another rank's
                    self.last = report
                    yield report
            except RuntimeError as e:  # gloo's lost peer is a bare RuntimeError, NCCL's too
                if world.size == 1:
                    raise  # one process has no peers to lose: a bug keeps its traceback
                progress = self.last.progress if self.last else Progress()
                message = rank_failure(world, e, job.run_dir)
                self.last = Report("failed", progress, None, 0.0, message=message)
                yield self.last

    def __exit__(self, *exc) -> None:
        # The job's DDP sits in reference cycles: free it here, on every rank at once, while
        # the group is up. Left to a later collection (mid-run, or after the group is gone)
        # it aborted a rank now and then ("terminate called without an active exception").
        self.job = None
        if self.world is not None and self.world.size > 1:
            gc.collect()
        self._stack.close()


def rank_failure(world: World, error: Exception, run_dir: Path) -> str:
    """What a rank says when a collective failed (most often because another rank died, or
    waited past --collective-timeout). Rank 0 alone writes, atomically, so the saved
    checkpoints are intact."""
    lines = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {lines[0][:300] if lines else ''}"
    return (
        f"rank {world.rank} of {world.size} stops ({reason}); if another rank died, its error "
        f"or torchrun's summary says why. The checkpoints saved so far are intact: continue "
        f"with charrnn train --resume {run_dir}"
    )


@contextmanager
def deterministic(on: bool) -> Iterator[None]:
    """PyTorch's deterministic algorithms for the block (see docs/reliability.md for what
    they promise), then the process's settings as they were."""
    if not on:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)  # fmt: skip
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it before use
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]
