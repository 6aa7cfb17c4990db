"""Data-parallel training on real processes: 2 gloo ranks on the CPU, started by torchrun
(and by torch.multiprocessing for the gradient check), compared with one process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from typer.testing import CliRunner

import charrnn as charrnn_api
from charrnn import checkpoint
from charrnn import run as run_setup
from charrnn.cli import app
from charrnn.data import Streams, shard_rows
from charrnn.distributed import World
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig, RNNLanguageModel
from charrnn.tokenizers import CharTokenizer
from charrnn.training.config import TrainConfig
from charrnn.training.trainer import Trainer

from .conftest import TEXT, job, load_last

# A constant learning rate (no warmup, no decay), so that a run of 10 steps resumed for 10
# more follows the same schedule as a run of 20; no dropout, so that the ranks draw nothing;
# the weights' average kept (and carried through last/ from one number of ranks to another).
ARGS = ["--layers", "1", "--hidden", "32", "--embedding", "8", "--seq-len", "16",
        "--dropout", "0", "--seed", "3", "--lr", "3e-3", "--warmup-steps", "0",
        "--min-lr-frac", "1", "--eval-every", "5", "--average", "4", "--device", "cpu"]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the tests share a small machine
TIMEOUT = 180  # seconds for one launch on a loaded 2-core machine; they take ~10


def charrnn(ranks: int, log: Path, *args) -> subprocess.Popen:
    """`charrnn ARGS` as one process, or as `ranks` processes under torchrun."""
    launcher = [sys.executable]
    if ranks > 1:  # --standalone: a free port, so that launches can run side by side
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    return subprocess.Popen(
        [*launcher, "-m", "charrnn", *map(str, args)],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True, env=ENV,
    )  # fmt: skip


def finish(proc: subprocess.Popen, log: Path, code: int = 0) -> str:
    proc.wait(timeout=TIMEOUT)
    text = log.read_text()
    assert proc.returncode == code, text[-3000:]
    return text


def val_losses(run: Path) -> list[tuple[int, int, float, float]]:
    return [
        (m["step"], m["tokens"], m["train_loss"], m["val_loss"])
        for m in checkpoint.read_metrics(run)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 4 streams read four ways, launched side by side: "two", 2 ranks x batch 2
    for 20 steps; "one", 1 rank x batch 4 for 10 steps, then resumed on 2 ranks to step 20;
    "two_then_one", 2 ranks x batch 2 for 10 steps, then resumed on 1 rank to step 20."""
    root = tmp_path_factory.mktemp("ddp")
    corpus = root / "tiny.txt"
    corpus.write_text(TEXT * 3, encoding="utf-8")
    first = {"two": (2, 2, 20), "one": (1, 4, 10), "two_then_one": (2, 2, 10)}
    procs = {
        name: charrnn(
            ranks,
            root / f"{name}.log",
            "train",
            corpus,
            *ARGS,
            "--batch-size",
            b,
            "--steps",
            steps,
            "--run-dir",
            root / name,
        )  # fmt: skip
        for name, (ranks, b, steps) in first.items()
    }
    logs = {name: finish(proc, root / f"{name}.log") for name, proc in procs.items()}
    metrics = {name: val_losses(root / name) for name in first}  # before the resumes
    procs = {
        name: charrnn(
            ranks, root / f"{name}.resumed.log", "train", "--resume", root / name, "--steps", 20
        )  # fmt: skip
        for name, ranks in {"one": 2, "two_then_one": 1}.items()
    }
    for name, proc in procs.items():
        logs[f"{name} resumed"] = finish(proc, root / f"{name}.resumed.log")
    return root, logs, metrics


def test_two_ranks_train_a_run_that_samples_on_one_process(runs):
    root, logs, _ = runs
    first_line = logs["two"].splitlines()[0]
    assert "on 2 ranks x cpu" in first_line
    assert "--batch-size 2 per rank (2 ranks x batch 2 = 4 streams)" in first_line
    assert logs["two"].count("done: 20 steps") == 1  # rank 0 alone renders
    config = json.loads((root / "two" / "config.json").read_text())
    assert config["world_size"] == 2 and config["train"]["batch_size"] == 2
    runner = CliRunner()
    args = ["sample", str(root / "two"), "--length", "40", "--seed", "1", "--prime", "All:"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("All:")
    result = runner.invoke(app, ["info", str(root / "two"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["world_size"] == 2
    _, saved = load_last(root / "two")
    assert [s.shape for s in saved["state"]] == [(1, 4, 32)] * 2  # all 4 streams' (h, c)


def test_two_ranks_of_batch_b_follow_one_process_of_batch_2b(runs):
    root, _, metrics = runs
    one, two = metrics["one"], metrics["two"]
    assert [m[:2] for m in two] == [(5, 320), (10, 640), (15, 960), (20, 1280)]
    assert [m[:2] for m in one] == [(5, 320), (10, 640)]
    # The same sums in another order: equal to float precision, not to the bit.
    for a, b in zip(one, two):
        assert b[2:] == pytest.approx(a[2:], rel=1e-5)
    # and the network learned something (its own val loss: val_loss is the mixture with
    # the char n-gram, which knows this text from the first evaluation)
    net = [m["val_net_loss"] for m in checkpoint.read_metrics(root / "two")]
    assert net[-1] < net[0] - 0.2


@pytest.mark.parametrize("name, ranks", [("two_then_one", 1), ("one", 2)])
def test_resume_on_another_number_of_ranks_carries_on_the_same_run(runs, name, ranks):
    root, logs, metrics = runs
    log = logs[f"{name} resumed"]
    assert "resuming" in log and "at step 10" in log
    assert f"on {ranks} ranks it reads the same streams, {4 // ranks} per rank" in log
    config = json.loads((root / name / "config.json").read_text())
    assert config["world_size"] == ranks and config["train"]["batch_size"] == 4 // ranks
    resumed, whole = val_losses(root / name), metrics["two"]
    assert [m[:2] for m in resumed] == [m[:2] for m in whole]
    for a, b in zip(whole, resumed):
        assert b[2:] == pytest.approx(a[2:], rel=1e-5)


def test_two_ranks_fit_a_word_models_ngram_weight_as_one_process_does(tmp_path):
    """The trigram's weight is fitted by EM over the validation split that the ranks share
    out: every rank gets one process's weight, and the same mixture's val loss."""
    words = TEXT.split()
    rng = np.random.default_rng(0)
    corpus = tmp_path / "words.txt"
    corpus.write_text("".join(" ".join(rng.choice(words, 10)) + "\n" for _ in range(150)))
    word = ["--tokenizer", "word", "--hidden", "16", "--embedding", "16", "--seq-len", "8",
            "--dropout", "0", "--input-dropout", "0", "--seed", "3", "--lr", "5",
            "--min-lr-frac", "1", "--eval-every", "5", "--steps", "10",
            "--device", "cpu"]  # fmt: skip
    procs = {name: charrnn(ranks, tmp_path / f"{name}.log", "train", corpus, *word,
                           "--batch-size", b, "--run-dir", tmp_path / name)
             for name, (ranks, b) in {"two": (2, 2), "one": (1, 4)}.items()}  # fmt: skip
    for name, proc in procs.items():
        finish(proc, tmp_path / f"{name}.log")
    one, two = (checkpoint.read_metrics(tmp_path / n) for n in ("one", "two"))
    assert [m["step"] for m in two] == [m["step"] for m in one] == [5, 10]
    for a, b in zip(one, two):
        assert 0 < a["ngram_weight"] < 1
        for key in ("ngram_weight", "val_loss", "val_net_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key


def test_resume_refuses_ranks_that_cannot_share_the_streams(runs):
    root, _, _ = runs
    with pytest.raises(ConfigError, match="3 ranks cannot share them evenly"):
        run_setup.resume(root / "one", [], {}, torch.device("cpu"), World(0, 3))


def test_shards_are_disjoint_contiguous_and_cover_every_stream():
    ids = np.arange(27, dtype=np.int32)  # pairs (i, i+1) for i < 26: 13 columns of 2 rows
    whole = Streams.of(ids, 4)
    parts = [whole.shard(r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p.x for p in parts]), whole.x)
    assert [p.x[:, 0].tolist() for p in parts] == [[0, 6], [12, 18]]
    assert [shard_rows(16, r, 3) for r in range(3)] == [slice(0, 5), slice(5, 10), slice(10, 16)]
    assert torch.equal(whole.shard(0, 1).y, whole.y)


# The DDP gradient, in two processes, against the full batch's in this one --------------


def tiny_trainer(run_dir: Path, batch_size: int, world: World, cell: str = "lstm") -> Trainer:
    tok = CharTokenizer.fit(TEXT)
    ids = np.concatenate([[0], tok.encode(TEXT)]).astype(np.int32)
    torch.manual_seed(0)
    config = ModelConfig(tok.vocab_size, cell=cell, layers=2, hidden=24, embedding=8)
    model = RNNLanguageModel(config)
    config = TrainConfig(seq_len=16, batch_size=batch_size, steps=3, warmup_steps=0)
    return Trainer(job(model, tok, ids, config, run_dir, world=world))


def gradient_worker(rank: int, size: int, rendezvous: str, out: str, cell: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=size)
    try:
        trainer = tiny_trainer(Path(out), 2, World(rank, size, rank), cell)
        for _ in range(3):  # the carried state and the optimizer take part from step 2 on
            trainer.step()
        module = trainer.module
        grads = {k: p.grad for k, p in module.named_parameters()}
        torch.save({"grads": grads, "weights": module.state_dict()}, Path(out) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("cell", ["lstm", "peephole", "mingru"])  # PyTorch's, and charrnn's own
def test_ddp_gradients_equal_the_full_batch_gradient(tmp_path, cell):
    args = (2, str(tmp_path / "rendezvous"), str(tmp_path), cell)
    mp.spawn(gradient_worker, args=args, nprocs=2)
    reference = tiny_trainer(tmp_path, 4, World(), cell)  # one process reading all 4 streams
    for _ in range(3):
        reference.step()
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        for name, p in reference.module.named_parameters():
            torch.testing.assert_close(got["grads"][name], p.grad, msg=f"rank {rank} {name}")
        torch.testing.assert_close(got["weights"], reference.module.state_dict())


# Failures: a signal stops every rank at the same step; a killed rank ends the run -------


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def rank_pid(agent: int, rank: int) -> int:
    for pid in children(agent):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no rank {rank} under {agent}")


def wait_for(predicate, timeout=TIMEOUT):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    corpus, run, log = tmp_path / "tiny.txt", tmp_path / "run", tmp_path / "log"
    corpus.write_text(TEXT * 3, encoding="utf-8")
    proc = charrnn(2, log, "train", corpus, *ARGS, "--batch-size", 2, "--steps", 100_000,
                   "--run-dir", run)  # fmt: skip
    # the first evaluation is over when last/ is saved (its metrics line comes earlier:
    # a rank killed between the two would leave no last/, rightly, and fail the test)
    wait_for(lambda: checkpoint.last_dir(run) is not None or proc.poll() is not None)
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc, run, log


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_last_saved(tmp_path):
    proc, run, log = start_long_run(tmp_path)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to every rank
    text = finish(proc, log, code=1)  # torchrun's own exit code after a signal
    assert "stopped by signal; last/ saved" in text and "stops (" not in text
    _, saved = load_last(run)
    assert saved["progress"]["step"] >= 5


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_quickly_and_the_checkpoints_load(tmp_path):
    proc, run, log = start_long_run(tmp_path)
    os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
    killed = time.monotonic()
    proc.wait(timeout=60)
    assert time.monotonic() - killed < 60
    text = log.read_text()
    assert proc.returncode != 0, text[-3000:]
    assert "rank 0 of 2 stops" in text and "charrnn train --resume" in text
    assert "SIGKILL" in text  # torchrun's summary names the rank that died, and how
    charrnn_api.load(run)
    _, saved = load_last(run)
    assert saved["progress"]["step"] >= 5
