"""The package a user installs: an sdist and a wheel built from a copy of the source, the
wheel built from the sdist, installed (not editable) in a fresh virtual environment, and
the commands run there, away from the source tree."""

import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "checkpoints", "corpora",
)  # fmt: skip


def package_files() -> set[str]:
    """Every module and package data file of the source tree, as paths in the wheel."""
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "charrnn").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def run(*args, cwd=None, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, **kw
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist, the wheel built from it) of a copy of the source tree."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=LEFT_OUT)
    run(sys.executable, "-m", "build", "--sdist", "--outdir", tmp / "out", src)
    (sdist,) = (tmp / "out").glob("charrnn-*.tar.gz")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "out", sdist)
    (wheel,) = (tmp / "out").glob("charrnn-*.whl")
    return sdist, wheel


@pytest.mark.slow
def test_the_sdist_and_the_wheel_hold_every_module_and_data_file(built):
    sdist, wheel = built
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    expected = package_files()
    assert "charrnn/cli/app.py" in expected and "charrnn/neurons/page.html" in expected
    assert expected - in_sdist == set()
    assert expected - in_wheel == set()


@pytest.mark.slow
def test_the_installed_wheel_trains_and_samples_in_a_fresh_environment(built, tmp_path):
    _, wheel = built
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    torch_version = torch.__version__.split("+")[0]  # the build here: no CUDA download
    run(python, "-m", "pip", "install", "-q", f"torch=={torch_version}", wheel)
    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny.txt").write_text("To be, or not to be: that is the question.\n" * 40)
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "CHARRNN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    where = run(python, "-c", "import charrnn; print(charrnn.__file__)", cwd=work, env=env)
    assert str(env_dir) in where.stdout  # the installed package, not the source tree
    assert "train" in run(env_dir / "bin" / "charrnn", "--help", cwd=work, env=env).stdout
    assert "sample" in run(python, "-m", "charrnn", "--help", cwd=work, env=env).stdout
    run(env_dir / "bin" / "charrnn", "train", "tiny.txt", "--steps", "20", "--eval-every", "10",
        "--hidden", "32", "--embedding", "8", "--batch-size", "4", "--seq-len", "16",
        "--run-dir", "run", cwd=work, env=env)  # fmt: skip
    out = run(env_dir / "bin" / "charrnn", "sample", "run", "--length", "40", "--seed", "1",
              "--prime", "To", cwd=work, env=env)  # fmt: skip
    assert out.stdout.startswith("To") and len(out.stdout) == len("To") + 40 + 1
    extras = [(["serve", "run"], "serve"), (["export", "run", "--onnx", "m.onnx"], "export")]
    for command, extra in extras:
        bare = subprocess.run([env_dir / "bin" / "charrnn", *command], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert bare.returncode == 2 and bare.stderr.count("\n") == 1, bare.stderr
        assert f"pip install 'charrnn[{extra}]'" in bare.stderr  # not installed with the wheel
