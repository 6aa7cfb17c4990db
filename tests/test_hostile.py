"""Hostile input, as a user who means no harm but has odd files gives it: pipes, devices,
sockets and symlink loops where a file belongs, files and folders this process may not
read or write (real permissions: as root, run without CAP_DAC_OVERRIDE under setpriv), a
full disk (a real tmpfs), a folder of the user's own files as --run-dir, damaged run
directories, sizes that cannot fit. Every case ends as a mistake of the user's does: one
line on stderr, exit code 2, no traceback, and nothing written or changed anywhere."""

import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cells import CELLS
from charrnn.cli import app

from .test_cli import TINY

runner = CliRunner()
HUGE = "99999999999999999999999"

# (command line, what the one line says, how it runs): `{name}` is a path of the `hostile`
# fixture; "proc": it would block if the file were opened, so it runs under an alarm;
# "setpriv": in a subprocess without root's override of file permissions; "disk": it needs
# the full tmpfs.
CASES = [
    # train: the corpus
    (["train", "{noperm}"], "noperm.txt: cannot read it (Permission denied; corpus)", "setpriv"),
    (["train", "{folder}"], "cannot read this folder (Permission denied; corpus)", "setpriv"),
    (["train", "{fifo}"], "fifo: a named pipe, not a regular file", "proc"),
    (["train", "{loop}"], "loop: a symbolic link that loops back on itself (corpus)", ""),
    (["train", "{dangling}"], "dangling: a symbolic link to nowhere, which does not exist", ""),
    (["train", "/dev/zero"], "/dev/zero: a character device, not a regular file", "proc"),
    (["train", "{sock}"], "sock: a socket, not a regular file", ""),
    (
        ["train", "-dash.txt"],
        "no such option: -dash.txt (a file whose name starts with '-'? put -- before it",
        "",
    ),  # fmt: skip
    # train: --run-dir
    (["train", "{corpus}", "--run-dir", "{corpus}"], "tiny.txt: a file, not a folder", ""),
    (["train", "{corpus}", "--run-dir", "{corpus}/run"], "tiny.txt is a file, not a folder", ""),
    (
        ["train", "{corpus}", "--run-dir", "/proc/charrnn/run"],
        "/proc/charrnn/run: cannot create",
        "",
    ),
    (["train", "{corpus}", "--run-dir", "{ro}/run"], "cannot create it in", "setpriv"),
    (["train", "{corpus}", "--run-dir", "{ro}"], "cannot write in this folder", "setpriv"),
    (
        ["train", "{corpus}", "--run-dir", "{own}"],
        "holds files that are not a charrnn run (metrics.jsonl, notes.txt)",
        "",
    ),  # fmt: skip
    (["train", "{corpus}", "--run-dir", "{fifo}"], "fifo: a named pipe, not a folder", ""),
    (["train", "{corpus}", "--run-dir", "{disk}/run"], "cannot create the run (No space", "disk"),
    (["train", "{corpus}", "--run-dir", "{disk}/a/b"], "cannot create the run (No space", "disk"),
    (["train", "{corpus}", "--run-dir", "{disk}/empty"], "(No space left on device)", "disk"),
    # train: sizes and numbers
    (["train", "{corpus}", "--hidden", "100000000"], "needs about", ""),
    (["train", "{corpus}", "--batch-size", "100000", "--seq-len", "100000"], "needs about", ""),
    (["train", "{corpus}", "--seed", HUGE], "--seed must be in [0, 9223372036854775807]", ""),
    (["train", "{corpus}", "--lr", "inf"], "--lr must be a finite number, not inf", ""),
    # train --resume: damaged run directories
    (["train", "--resume", "{v1}"], "config.json: no 'model' section", ""),
    (
        ["train", "--resume", "{otherdict}"],
        "trainer_state.pt: not a charrnn trainer state: no optimizer, progress",
        "",
    ),  # fmt: skip
    (
        ["train", "--resume", "{pickle}"],
        "trainer_state.pt: refused: it holds Python objects (posix.system)",
        "",
    ),  # fmt: skip
    (["train", "--resume", "{nan}"], "model.safetensors: embed.weight holds NaN", ""),
    (
        ["train", "--resume", "{nostate}"],
        "trainer_state.pt: cannot read it (Permission denied)",
        "setpriv",
    ),  # fmt: skip
    # sample
    (["sample", "{nan}"], "nan/model.safetensors: embed.weight holds NaN or infinite values", ""),
    (
        ["sample", "{run}", "--num-samples", "100000000"],
        "--num-samples 100,000,000 of --length 500 needs about",
        "",
    ),  # fmt: skip
    (["sample", "{run}", "--length", "100000000000"], "--length 100,000,000,000 needs about", ""),
    (["sample", "{run}", "--temperature", "nan"], "--temperature must be a finite number", ""),
    (["sample", "{run}", "--temperature", "inf"], "--temperature must be a finite number", ""),
    (["sample", "{run}", "--seed", HUGE], "--seed must be in [0, 9223372036854775807]", ""),
    (["sample", "{run}", "--prime-file", "{fifo}"], "a named pipe, not a regular file", "proc"),
    (["sample", "{run}", "--prime-file", "/dev/zero"], "a character device", "proc"),
    (["sample", "{run}", "--prime-file", "{noperm}"], "noperm.txt' is not readable", "setpriv"),
    (
        ["sample", "{noweights}"],
        "model.safetensors: cannot read it (Permission denied)",
        "setpriv",
    ),  # fmt: skip
    (["sample", "{weightsfifo}"], "model.safetensors: a named pipe, not a regular file", "proc"),
    (["sample", "{v1}"], "config.json: no 'model' section; not a config.json charrnn wrote", ""),
    # eval
    (["eval", "{run}", "{corpus}", "--seq-len", "0"], "--seq-len must be at least 1, not 0", ""),
    (["eval", "{run}", "{fifo}"], "fifo: a named pipe, not a regular file", "proc"),
    (["eval", "{run}", "{noperm}"], "cannot read it (Permission denied; corpus)", "setpriv"),
    (["eval", "{nan}", "{corpus}"], "embed.weight holds NaN or infinite values", ""),
    # info
    (["info", "{configfifo}"], "config.json: a named pipe, not a regular file", "proc"),
    (["info", "{configdir}"], "config.json: a folder, not a regular file", ""),
    (["info", "{noconfig}"], "config.json: cannot read it (Permission denied)", "setpriv"),
    (["info", "{tokdir}"], "tokenizer.json: a folder, not a regular file", ""),
    (["info", "{nometrics}"], "metrics.jsonl: cannot read it (Permission denied)", "setpriv"),
    (["info", "{corpus}"], "tiny.txt: a file, not a run directory", ""),
    # inspect-neurons
    (["inspect-neurons", "{run}", "--file", "{fifo}"], "a named pipe, not a regular file", "proc"),
    (
        ["inspect-neurons", "{run}", "--file", "/dev/zero"],
        "a character device, not a regular",
        "proc",
    ),
    (
        ["inspect-neurons", "{run}", "--file", "{noperm}"],
        "noperm.txt' is not readable",
        "setpriv",
    ),  # fmt: skip
    (["inspect-neurons", "{run}", "--file", "{loop}"], "loops back on itself (--file)", ""),
    (
        ["inspect-neurons", "{run}", "--max-chars", "0"],
        "--max-chars must be at least 1, not 0",
        "",
    ),  # fmt: skip
    (["inspect-neurons", "{nan}", "--text", "All"], "embed.weight holds NaN", ""),
    # bench
    (["bench", "train", "--hidden", "100000000"], "needs about", ""),
    (["bench", "sample", "--num-samples", "100000000"], "needs about", ""),
    (["bench", "train", "--corpus", "{fifo}"], "fifo: a named pipe, not a regular file", "proc"),
    (["bench", "train", "--corpus", "{noperm}"], "cannot read it (Permission denied", "setpriv"),
]


def snapshot(root: Path) -> list:
    """Every path under root with its size, mode and (for a file) mtime: what "nothing
    changed" means. A folder's own mtime is left out: making a temporary folder in it and
    removing it again, as a failed create_run does, moves it."""
    out = []
    for p in sorted(root.rglob("*")):
        s = p.lstat()
        out.append((str(p), s.st_mode, None if p.is_dir() else (s.st_size, s.st_mtime_ns)))
    return out


def nan_weights(path: Path) -> None:
    """NaN in every weight of the network (the n-gram's weight, --ngram, is left as it was)."""
    tensors = safetensors.torch.load_file(path)
    nan = {k: v if k == "ngram_weight" else v * float("nan") for k, v in tensors.items()}
    safetensors.torch.save_file(nan, path)


class Exploit:
    """Unpickled, it would create `marker`: a pickle that runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A folder of hostile things, a trained run among them; a full tmpfs at disk/."""
    from .conftest import TEXT

    root = tmp_path_factory.mktemp("hostile")
    corpus = root / "tiny.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    shutil.copy(corpus, root / "-dash.txt")
    result = runner.invoke(app, ["train", str(corpus), *TINY, "--run-dir", str(root / "run")])
    assert result.exit_code == 0, result.output
    names = {n: root / n for n in ("run", "fifo", "loop", "dangling", "sock", "own", "ro",
                                    "folder", "disk")}  # fmt: skip
    names.update(corpus=corpus, noperm=root / "noperm.txt")
    shutil.copy(corpus, names["noperm"])
    os.mkfifo(names["fifo"])
    names["loop"].symlink_to("loop")
    names["dangling"].symlink_to("nowhere")
    socket.socket(socket.AF_UNIX).bind(str(names["sock"]))
    names["own"].mkdir()
    (names["own"] / "notes.txt").write_text("mine\n")
    (names["own"] / "metrics.jsonl").write_text('{"step": 1, "mine": true}\n')
    names["ro"].mkdir()
    (names["folder"] / "sub").mkdir(parents=True)
    shutil.copy(corpus, names["folder"] / "a.txt")
    shutil.copy(corpus, names["folder"] / "sub" / "b.txt")
    for name in ("v1", "otherdict", "pickle", "nan", "nostate", "noweights", "weightsfifo",
                 "configfifo", "configdir", "noconfig", "tokdir", "nometrics"):  # fmt: skip
        names[name] = shutil.copytree(root / "run", root / name)
    (names["v1"] / "config.json").write_text('{"format_version": 1}')
    torch.save({"a": 1}, names["otherdict"] / "last" / "trainer_state.pt")
    torch.save({"x": Exploit(root / "pwned")}, names["pickle"] / "last" / "trainer_state.pt")
    nan_weights(names["nan"] / "model.safetensors")
    nan_weights(names["nan"] / "last" / "model.safetensors")
    for name, file in (("weightsfifo", "model.safetensors"), ("configfifo", "config.json")):
        (names[name] / file).unlink()
        os.mkfifo(names[name] / file)
    for name, file in (("configdir", "config.json"), ("tokdir", "tokenizer.json")):
        (names[name] / file).unlink()
        (names[name] / file).mkdir()
    unreadable = [names["noperm"], names["folder"] / "sub", names["ro"],
                  names["nostate"] / "last" / "trainer_state.pt",
                  names["noweights"] / "model.safetensors", names["noconfig"] / "config.json",
                  names["nometrics"] / "metrics.jsonl"]  # fmt: skip
    modes = {p: p.stat().st_mode for p in unreadable}
    for p in unreadable:
        p.chmod(0o555 if p == names["ro"] else 0)
    names["disk"].mkdir()
    mounted = full_disk(names["disk"])
    yield root, {k: str(v) for k, v in names.items()}, mounted
    if mounted:
        subprocess.run(["umount", str(names["disk"])], check=True)
    for p, mode in modes.items():
        p.chmod(stat.S_IMODE(mode))


def full_disk(mount: Path) -> bool:
    """A 1 MiB tmpfs at `mount`, an empty folder in it, and the rest filled; False if this
    machine lets no tmpfs be mounted (not root)."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        return False
    (mount / "empty").mkdir()
    with open(mount / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return True


def without_override() -> list[str]:
    """The prefix that runs a command with file permissions applied to it."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("as root, permission cases need setpriv (util-linux)")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def charrnn(args: list[str], how: str, cwd: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `charrnn ARGS`: under setpriv in a subprocess, else in
    this process, with an alarm for what would block (a pipe opened, /dev/zero read)."""
    if how == "setpriv":
        done = subprocess.run([*without_override(), sys.executable, "-m", "charrnn", *args],
                              cwd=cwd, capture_output=True, text=True, timeout=120)  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    def blocked(signum, frame):
        raise TimeoutError(f"charrnn {' '.join(args)} blocked")

    old_dir, old_handler = os.getcwd(), signal.signal(signal.SIGALRM, blocked)
    os.chdir(cwd)  # `-dash.txt` is a relative path
    signal.alarm(60 if how == "proc" else 0)
    try:
        result = runner.invoke(app, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        os.chdir(old_dir)
    assert not isinstance(result.exception, TimeoutError), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args, needle, how", CASES, ids=[" ".join(a) for a, _, _ in CASES])
def test_hostile_input_is_one_line_exit_2_and_changes_nothing(args, needle, how, hostile):
    root, names, mounted = hostile
    if how == "disk" and not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    args = [a.format(**names) for a in args]
    if args[0] == "train" and "--resume" not in args:  # a tiny run, but for the bad flags
        where = [] if "--run-dir" in args else ["--run-dir", str(root / "new")]
        args = ["train", *TINY, *where, *args[1:]]
    before = snapshot(root)
    code, out, err = charrnn(args, how, root)
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err and "Warning" not in err and out == ""
    assert "weights_only" not in err  # torch's advice to unpickle anyway is not repeated
    assert snapshot(root) == before  # nothing written, nothing half-written or left behind
    assert not (root / "pwned").exists()


def test_a_table_of_forty_cases_across_every_command():
    commands = {a[0] for a, _, _ in CASES}
    assert len(CASES) >= 40
    assert commands == {"train", "sample", "eval", "info", "inspect-neurons", "bench"}


def test_a_file_named_with_a_dash_trains_after_two_dashes(hostile):
    root, _, _ = hostile
    run = root / "dashed"
    code, _, err = charrnn(["train", *TINY, "--steps", "2", "--run-dir", str(run), "--",
                            "-dash.txt"], "", root)  # fmt: skip
    try:
        assert code == 0, err
        assert checkpoint.read_config(run)["corpus"]["sources"] == ["-dash.txt"]
    finally:
        shutil.rmtree(run, ignore_errors=True)


def test_a_refused_pickle_gives_no_warning(tmp_path):
    path, marker = tmp_path / "trainer_state.pt", tmp_path / "pwned"
    path.write_bytes(pickle.dumps({"x": Exploit(marker)}))  # protocol 4: torch warns of it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(checkpoint.CheckpointError, match="trainer_state.pt: refused") as e:
            checkpoint.load_trainer_state(path)
    assert caught == [] and not marker.exists()
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)


# A full disk during a run (class 8), in a real process and in fit() ----------------------


def fill(disk: Path) -> Path:
    """Fill the disk to its last byte; the file that does it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return filler


def leftovers(run: Path) -> list[str]:
    return [p.name for p in run.iterdir() if p.name.startswith(".")]


def test_a_full_disk_during_a_run_exits_3_and_says_what_the_disk_holds(small_disk, text_file):
    run = small_disk / "run"
    args = [sys.executable, "-m", "charrnn", "train", str(text_file), *TINY, "--steps", "400",
            "--hidden", "64", "--run-dir", str(run)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while checkpoint.last_dir(run) is None:  # the first evaluation is saved, last/ too
        assert proc.poll() is None and time.monotonic() < end, proc.stderr.read()
        time.sleep(0.02)
    fill(small_disk)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    last_step = torch.load(run / "last" / "trainer_state.pt", weights_only=True)["progress"]
    config = checkpoint.read_config(run)
    summary = err.splitlines()[-1]
    assert summary.startswith("the last save failed"), err
    assert f"model.safetensors of step {config['best_step']} " in summary
    assert f"(val loss {config['best_val_loss']:.4f})" in summary
    assert f"and last/ of step {last_step['step']};" in summary and last_step["step"] < 400
    assert f"best val loss {config['best_val_loss']:.4f}" in err.splitlines()[-2]
    assert leftovers(run) == []  # no .last.tmp/, no temporary files
    (small_disk / "filler").unlink()  # space again: the run carries on from what was saved
    resumed = subprocess.run([sys.executable, "-m", "charrnn", "train", "--resume", str(run)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} at step {last_step['step']}" in resumed.stderr


def test_fit_on_a_full_disk_keeps_the_saved_best_and_reports_what_is_on_disk(small_disk):
    from .test_resilience import tiny_run

    run = small_disk / "run"
    model, reports = tiny_run(run, steps=30)
    first = next(r for r in reports if r.kind == "eval")
    assert first.progress.best_step == first.saved.last_step == 5 and first.saved.failed is None
    fill(small_disk)
    rest = list(reports)
    done = rest[-1]
    assert done.kind == "done" and "No space left on device" in done.saved.failed
    assert (done.progress.best_step, done.saved.last_step) == (5, 5)  # the best moves once saved
    assert not any(r.improved for r in rest if r.kind == "eval")
    assert checkpoint.read_config(run)["best_step"] == 5
    assert torch.load(run / "last" / "trainer_state.pt", weights_only=True)["progress"]["step"] == 5
    assert leftovers(run) == []


def test_a_metrics_line_that_does_not_fit_is_cut_back_off(small_disk):
    checkpoint.append_metrics(small_disk, {"step": 1})
    filler = fill(small_disk)
    with pytest.raises(OSError):
        checkpoint.append_metrics(small_disk, {"step": 2, "pad": "x" * 10000})
    filler.unlink()
    checkpoint.append_metrics(small_disk, {"step": 3})
    assert checkpoint.read_metrics(small_disk) == [{"step": 1}, {"step": 3}]


# Sizes (class 2) --------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tie", [False, True])
def test_the_estimated_parameter_count_is_the_models(cell, tie):
    from charrnn import memory
    from charrnn.model import ModelConfig, RNNLanguageModel, count_parameters

    config = ModelConfig(70, cell=cell, layers=2, hidden=24, embedding=24 if tie else 8,
                         tie_weights=tie)  # fmt: skip
    assert memory.parameters(config) == count_parameters(RNNLanguageModel(config))
    bigger = ModelConfig(70, cell=cell, layers=3, hidden=40, embedding=8)
    assert memory.training_bytes(bigger, 2, 3) > memory.training_bytes(config, 2, 3)


def test_the_default_models_fit_with_room_to_spare():
    from charrnn import memory
    from charrnn.model import ModelConfig

    cpu, cuda = ModelConfig(100), ModelConfig(100, layers=2, hidden=1024, embedding=128)
    assert memory.training_bytes(cpu, 16, 128) < 2**27  # 128 MiB: any machine has it
    assert memory.training_bytes(cuda, 128, 128) < 2**31
    assert sum(memory.sampling_bytes(cpu, 1, 1, 500)) < 2**20
    memory.check_training(cpu, 16, 128, torch.device("cpu"))  # refuses nothing that fits


def test_what_eval_cannot_fit_is_refused():
    from charrnn import memory
    from charrnn.errors import ConfigError
    from charrnn.model import ModelConfig

    with pytest.raises(ConfigError, match="--seq-len 100,000,000,000 needs about .* available"):
        memory.check_scoring(ModelConfig(100), 10**12, 10**11, torch.device("cpu"))
    memory.check_scoring(ModelConfig(100), 10**6, 256, torch.device("cpu"))


def test_a_folder_read_as_a_corpus_skips_pipes_and_sockets(tmp_path):
    from charrnn import corpus

    (tmp_path / "a.txt").write_text("some text\n")
    os.mkfifo(tmp_path / "pipe.txt")
    socket.socket(socket.AF_UNIX).bind(str(tmp_path / "sock.txt"))
    assert corpus.find_files([str(tmp_path)]) == [tmp_path / "a.txt"]


def test_a_signal_when_the_disk_is_full_says_last_could_not_be_saved(small_disk, text_file):
    run = small_disk / "run"
    args = [sys.executable, "-m", "charrnn", "train", str(text_file), *TINY, "--steps",
            "100000", "--hidden", "64", "--run-dir", str(run)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while checkpoint.last_dir(run) is None:
        assert proc.poll() is None and time.monotonic() < end, proc.stderr.read()
        time.sleep(0.02)
    fill(small_disk)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = torch.load(run / "last" / "trainer_state.pt", weights_only=True)["progress"]["step"]
    assert err.splitlines()[-1].startswith("stopped by signal; could not save last/; ")
    assert f"and last/ of step {step}; continue with: charrnn train --resume" in err
    assert leftovers(run) == []


def test_a_failed_start_in_a_folder_that_exists_removes_only_what_it_wrote(small_disk):
    from charrnn import paths

    (small_disk / "keep.txt").write_text("mine\n")
    fill(small_disk)

    def fill_in(folder: Path) -> None:
        (folder / "new.txt").write_bytes(b"x" * 100000)  # no room for it

    with pytest.raises(OSError):
        paths.make_folder(small_disk, fill_in)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "keep.txt"]
