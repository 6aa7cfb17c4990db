"""`charrnn bench train|sample`: charrnn against a plain PyTorch loop, timed in one process."""

from __future__ import annotations

import json
import os
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from charrnn import bench, devices, memory
from charrnn import sample as sampling
from charrnn import settings as settings_
from charrnn.cli.app import AsJson, app, command
from charrnn.cli.options import DEFAULT, opt, with_settings
from charrnn.model import ModelConfig
from charrnn.sample import SampleConfig
from charrnn.settings import option
from charrnn.training.config import TrainConfig, resolve_precision

bench_app = typer.Typer(
    name="bench",
    help="Measure training and sampling speed against the hardware and a plain reference.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(bench_app, name="bench", help="Time training or sampling against a plain loop.")

THREADS = option("threads", int | None, None, "CPU threads for torch (default: as train and "
                 "sample choose).", check=settings_.at_least(1))  # fmt: skip
MODEL = {"layers": 2, "hidden": 256, "embedding": 64}  # the bench's shape unless told


def bench_device(device: str, threads: int | None, default: int | None = None) -> torch.device:
    """The device, and the CPU threads: --threads, or else `default` (on a CPU, when
    OMP_NUM_THREADS is unset, as `charrnn sample` does), or else torch's choice."""
    dev = devices.resolve(device)
    if threads is None and dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        threads = default
    if threads is not None:
        torch.set_num_threads(threads)
    return dev


TRAIN_FLAGS = ["cell", "batch_size", "seq_len", "precision", *MODEL]
TRAIN_DEFAULTS = {**MODEL, "batch_size": 32, "seq_len": 128, "precision": "auto"}


@command("train", summary="Time training steps against a plain PyTorch loop.", parent=bench_app)
@with_settings(ModelConfig, TrainConfig, only=TRAIN_FLAGS, defaults=TRAIN_DEFAULTS)
def bench_train(
    *,
    corpus_: Annotated[
        Optional[str],
        typer.Option(
            "--corpus", metavar="FILE", help="Train on this text (default: random token ids)."
        ),
    ] = None,
    vocab_size: opt(bench.VOCAB_SIZE) = DEFAULT,
    steps: opt(bench.STEPS) = DEFAULT,
    untimed_steps: opt(bench.UNTIMED_STEPS) = DEFAULT,
    device: opt(devices.DEVICE) = DEFAULT,
    threads: opt(THREADS) = None,
    as_json: AsJson = False,
    settings: dict,
):
    """Training tokens/s, model FLOP utilisation and peak memory: charrnn's step and a
    plain PyTorch loop on the same data, in this process."""
    dev = bench_device(device, threads)
    ids, data = None, ""
    if corpus_ is not None:
        ids, vocab_size = bench.corpus_ids(corpus_)
        data = f"{corpus_} ({len(ids):,} char tokens, V {vocab_size})"
    config = bench_config(settings, vocab_size, steps, untimed_steps, dev)
    memory.check_training(config.model, config.batch_size, config.seq_len, dev)
    typer.echo(f"timing charrnn and the reference: {untimed_steps} + {steps} steps each ...",
               err=True)  # fmt: skip
    render_bench(bench.bench_train(config, dev, ids, data), as_json)


@command("sample", summary="Time sampling against a plain one-token loop.", parent=bench_app)
@with_settings(ModelConfig, SampleConfig, only=["cell", "num_samples", *MODEL], defaults=MODEL)
def bench_sample(
    *,
    vocab_size: opt(bench.VOCAB_SIZE) = DEFAULT,
    steps: opt(bench.STEPS) = DEFAULT,
    untimed_steps: opt(bench.UNTIMED_STEPS) = DEFAULT,
    device: opt(devices.DEVICE) = DEFAULT,
    threads: opt(THREADS) = None,
    as_json: AsJson = False,
    settings: dict,
):
    """Sampling tokens/s (characters/s for a char model), MFU and peak memory: charrnn's
    sampler and a plain one-token-at-a-time loop, in this process."""
    settings_.check_values(SampleConfig, settings)
    num_samples = settings.pop("num_samples", 1)
    dev = bench_device(device, threads, sampling.cpu_threads(num_samples))  # as `sample` does
    config = bench_config({**settings, "batch_size": num_samples}, vocab_size, steps,
                          untimed_steps, dev)  # fmt: skip
    needed = memory.sampling_bytes(config.model, num_samples, 1, steps + untimed_steps)
    memory.check(f"--num-samples {num_samples:,} for {steps + untimed_steps:,} steps", dev,
                 *needed, fix="time fewer samples at a time")  # fmt: skip
    typer.echo(f"timing charrnn and the reference: {untimed_steps} + {steps} tokens each ...",
               err=True)  # fmt: skip
    render_bench(bench.bench_sample(config, dev), as_json)


def bench_config(given: dict, vocab_size: int, steps: int, untimed: int, dev) -> bench.BenchConfig:
    """The settings as train checks them (the same flags, the same messages)."""
    model_given = {k: v for k, v in given.items() if k in ("cell", *MODEL)}
    model = settings_.resolve(ModelConfig, model_given, vocab_size=vocab_size)
    precision = resolve_precision(given.get("precision", "auto"), dev)
    settings_.check_values(TrainConfig, {k: v for k, v in given.items() if k != "precision"})
    return bench.BenchConfig(model, given["batch_size"], given.get("seq_len", 1), steps,
                             untimed, precision)  # fmt: skip


def render_bench(result, as_json: bool) -> None:
    """The figures to stdout: a table (or JSON), with what was measured and where."""
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    c, m, v = result.config, result.config.model, result.versions
    shape = f"--batch-size {c.batch_size}" + (
        f" --seq-len {c.seq_len} --precision {c.precision}" if result.kind == "train" else ""
    )
    out = Console(highlight=False, soft_wrap=True)
    out.print(
        f"charrnn bench {result.kind}: {m.cell} {m.layers}x{m.hidden}, embedding "
        f"{m.embedding}, V {m.vocab_size}, {shape}, {c.untimed_steps} + {c.steps} steps; "
        f"data: {result.data}"
    )
    out.print(
        f"device: {result.device} ({result.device_name}, torch threads: {result.threads}); torch "
        f"{v['torch']}, CUDA {v['cuda'] or '-'}, cuDNN {v['cudnn'] or '-'}; {result.date}"
    )
    out.print(
        f"matmul peak {result.peak_flops / 1e12:.3f} TFLOP/s ({result.peak_how}); "
        f"{result.flops_per_token:,} model FLOPs per token (the reference "
        f"{result.reference_flops_per_token:,}); memory: {result.memory_how}"
    )
    table = Table()
    for col in ("", "tokens/s", "ms/step", "MFU", "peak memory", "loss"):
        table.add_column(col, justify="right")
    for name, r in (("charrnn", result.ours), ("reference", result.reference)):
        loss = f"{r.loss:.3f}" if r.loss is not None else "-"
        table.add_row(
            name, f"{r.tokens_per_sec:,.0f}", f"{r.seconds_per_step * 1e3:.2f}",
            f"{result.mfu(r):.2%}", f"{r.peak_memory / 2**20:,.0f} MiB", loss,
        )  # fmt: skip
    ours, ref = result.ours, result.reference
    table.add_row(
        "ratio", f"{result.ratio:.2f}x", f"{ours.seconds_per_step / ref.seconds_per_step:.2f}x",
        f"{result.ratio:.2f}x", f"{ours.peak_memory / max(ref.peak_memory, 1):.2f}x", "",
    )  # fmt: skip
    out.print(table)
