"""Shared fixtures: tiny hermetic texts, written into pytest's tmp_path, and a token
cache of the session's own (never the user's ~/.cache)."""

import os
import re
import subprocess
from pathlib import Path

# Tiny models gain nothing from a second thread, and on a busy 2-core machine two OpenMP
# threads per process wait on each other: one thread, here and in every subprocess.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 12


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory):
    """Point the token cache (and downloads) at the session's tmp dir; subprocesses inherit it."""
    saved = {k: os.environ.get(k) for k in ("CHARRNN_CACHE", "CHARRNN_CORPORA")}
    os.environ["CHARRNN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["CHARRNN_CORPORA"] = str(tmp_path_factory.mktemp("corpora"))
    yield Path(os.environ["CHARRNN_CACHE"])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# Run directories and training jobs for models built in a test ---------------------------


def start_run(run_dir: Path, model, tok) -> None:
    """A run directory as run.create() starts one, for a model and tokenizer a test made."""
    from charrnn import checkpoint
    from charrnn.corpus import CorpusConfig
    from charrnn.runconfig import RunConfig
    from charrnn.tokenizers import TokenizerConfig
    from charrnn.training.config import TrainConfig

    config = RunConfig(model.config, TrainConfig(steps=1), TokenizerConfig(tok.tokenizer),
                       CorpusConfig(), (), 0, 0, "")  # fmt: skip
    checkpoint.create_run(run_dir, config.to_json(), tok)


def job(model, tok, ids, config, run_dir, device="cpu", resume=None, world=None, val=300):
    """What fit() and Trainer take: the last `val` ids validate, the rest train."""
    from charrnn.distributed import SINGLE
    from charrnn.training.trainer import Job

    return Job(model, tok, ids[:-val], ids[-val:], config, torch.device(device), Path(run_dir),
               world or SINGLE, resume)  # fmt: skip


def load_last(run_dir: Path):
    """(model, trainer state) of a run's last/."""
    from charrnn import checkpoint
    from charrnn.runconfig import read_config

    return checkpoint.load_last(run_dir, read_config(run_dir).model)


# A tiny run trained through the command line --------------------------------------------

TINY = ["--steps", "20", "--eval-every", "10", "--layers", "1", "--hidden", "32",
        "--embedding", "8", "--batch-size", "4", "--seq-len", "16"]  # fmt: skip


def cli_train(root: Path, text: str = TEXT, *args: str, name: str = "run") -> Path:
    """Write `text` to root/NAME.txt and train a tiny run on it into root/NAME, in process
    (`charrnn train ... --run-dir`; `args` come after TINY's flags, so they win)."""
    from typer.testing import CliRunner

    from charrnn.cli import app

    corpus = root / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(corpus), *TINY, *args, "--run-dir",
                                      str(root / name)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return root / name


# Pictures -----------------------------------------------------------------------------


def colour_pixels(path: Path, colour: str, tol: float = 0.02) -> int:
    """How many pixels of the picture are `colour` (a matplotlib colour name)."""
    from matplotlib.colors import to_rgb

    rgb = plots_image(path)[..., :3]
    return int((np.abs(rgb - np.array(to_rgb(colour))).max(axis=-1) < tol).sum())


def plots_image(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)  # [height, width, RGBA] floats in [0, 1]


def assert_picture(path: Path, colours: list[str]) -> None:
    """A PNG of plots.WIDTH x plots.HEIGHT with many distinct colours and, for each of
    `colours`, the pixels of a curve."""
    from charrnn import plots

    image = plots_image(path)
    assert image.shape == (plots.HEIGHT, plots.WIDTH, 4)
    distinct = np.unique((image[..., :3] * 255).round().reshape(-1, 3), axis=0)
    assert len(distinct) > 50  # antialiased curves, text and grid, not a blank canvas
    for colour in colours:
        assert colour_pixels(path, colour) > 300, colour  # a curve, not a legend swatch


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB tmpfs (a disk that fills), skipped where it cannot be mounted (not root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


# A real server process ------------------------------------------------------------------


class ServerProcess:
    """`python -m charrnn serve RUN... --port 0 ARGS` in a process of its own; `url` once
    it listens (the port it said on stderr). `stop()` sends SIGTERM and returns the exit
    code; what it wrote on stderr is in `log`."""

    def __init__(self, runs: list[Path], *args: str, cwd: Path | None = None):
        import sys
        import threading

        command = [sys.executable, "-m", "charrnn", "serve", *map(str, runs), "--port", "0", *args]
        self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.log: list[str] = []
        found = threading.Event()

        def drain():  # the access log fills a pipe nobody reads
            for line in self.process.stderr:
                self.log.append(line)
                found.set() if line.startswith("serving ") else None

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(60):
            self.process.kill()
            raise AssertionError("the server did not start:\n" + "".join(self.log))
        self.url = re.search(r"http://\S+?:\d+", self.log[-1])[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def get(self, path: str) -> dict:
        import httpx

        return httpx.get(self.url + path, timeout=30).json()

    def stop(self, timeout: float = 60) -> int:
        import signal

        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process.stdout.close()
        return code

    @property
    def text(self) -> str:
        return "".join(self.log)
