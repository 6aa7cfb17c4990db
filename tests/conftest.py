"""Shared fixtures: tiny hermetic texts, written into pytest's tmp_path, and a token
cache of the session's own (never the user's ~/.cache)."""

import os
from pathlib import Path

# Tiny models gain nothing from a second thread, and on a busy 2-core machine two OpenMP
# threads per process wait on each other: one thread, here and in every subprocess.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
