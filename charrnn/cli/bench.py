"""`charrnn bench train|sample`: charrnn against a plain PyTorch loop, timed in one process."""

from __future__ import annotations

import json
import os
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from charrnn import corpus, tokens
from charrnn import sample as sampling
from charrnn import tokenizer as tokenizers
from charrnn.cli.common import (
    AsJson,
    Device,
    app,
    err,
    resolve_device,
    user_errors,
)
from charrnn.train import resolve_precision

# bench ---------------------------------------------------------------------------------

bench_app = typer.Typer(
    help="Measure training and sampling speed against the hardware and a plain reference.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")

BenchCell = Annotated[str, typer.Option(help="lstm | gru | rnn")]
BenchLayers = Annotated[int, typer.Option(help="Stacked recurrent layers.")]
BenchHidden = Annotated[int, typer.Option(help="Units per layer.")]
BenchEmbedding = Annotated[int, typer.Option(help="Token embedding size.")]
BenchVocab = Annotated[int, typer.Option(help="Vocabulary of the random token ids.")]
BenchWarmup = Annotated[int, typer.Option(help="Untimed steps first.")]
Threads = Annotated[
    Optional[int], typer.Option(help="CPU threads for torch (default: as train/sample do).")
]


def bench_setup(device: str, threads: int | None, default: int | None = None) -> torch.device:
    """The device, and the CPU threads: --threads, or else `default` (on a CPU, when
    OMP_NUM_THREADS is unset, as `charrnn sample` does), or else torch's choice."""
    if threads is not None and threads < 1:
        raise typer.BadParameter(f"--threads must be at least 1, not {threads}")
    dev = resolve_device(device)
    if threads is None and dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        threads = default
    if threads is not None:
        torch.set_num_threads(threads)
    return dev


@bench_app.command("train")
def bench_train(
    cell: BenchCell = "lstm",
    layers: BenchLayers = 2,
    hidden: BenchHidden = 256,
    embedding: BenchEmbedding = 64,
    vocab_size: BenchVocab = 96,
    batch_size: Annotated[int, typer.Option(help="Parallel streams of text.")] = 32,
    seq_len: Annotated[int, typer.Option(help="Tokens per BPTT window.")] = 128,
    steps: Annotated[int, typer.Option(help="Timed optimizer steps.")] = 20,
    warmup: BenchWarmup = 3,
    precision: Annotated[str, typer.Option(help="auto | fp32 | fp16 | bf16 (CUDA).")] = "auto",
    corpus_: Annotated[
        Optional[str],
        typer.Option("--corpus", help="Train on this text (default: random token ids)."),
    ] = None,
    device: Device = "auto",
    threads: Threads = None,
    as_json: AsJson = False,
):
    """Training tokens/s, model FLOP utilisation and peak memory: charrnn's step and a
    plain PyTorch loop on the same data, in this process."""
    from charrnn import bench

    dev = bench_setup(device, threads)
    with user_errors():
        ids, data = None, ""
        if corpus_ is not None:
            text = corpus.read([corpus_], "*", "strict")
            tok, _ = tokens.fit_tokenizer(text, tokenizers.TokenizerConfig("char"))
            ids, vocab_size = tokens.token_ids(text, tok, "none").ids, tok.vocab_size
            data = f"{corpus_} ({len(ids):,} char tokens, V {vocab_size})"
        config = bench.BenchConfig(
            cell, layers, hidden, embedding, vocab_size, batch_size, seq_len, steps, warmup,
            resolve_precision(precision, dev),
        )  # fmt: skip
        err.print(f"timing charrnn and the reference: {warmup} + {steps} steps each ...")
        result = bench.bench_train(config, dev, ids, data)
    render_bench(result, as_json)


@bench_app.command("sample")
def bench_sample(
    cell: BenchCell = "lstm",
    layers: BenchLayers = 2,
    hidden: BenchHidden = 256,
    embedding: BenchEmbedding = 64,
    vocab_size: BenchVocab = 96,
    batch_size: Annotated[int, typer.Option(help="Samples made together.")] = 1,
    steps: Annotated[int, typer.Option(help="Timed tokens per sample.")] = 500,
    warmup: BenchWarmup = 20,
    device: Device = "auto",
    threads: Threads = None,
    as_json: AsJson = False,
):
    """Sampling tokens/s (characters/s for a char model), MFU and peak memory: charrnn's
    sampler and a plain one-token-at-a-time loop, in this process."""
    from charrnn import bench

    dev = bench_setup(device, threads, sampling.cpu_threads(batch_size))  # as `sample` does
    with user_errors():
        config = bench.BenchConfig(
            cell, layers, hidden, embedding, vocab_size, batch_size, 1, steps, warmup
        )
        err.print(f"timing charrnn and the reference: {warmup} + {steps} tokens each ...")
        result = bench.bench_sample(config, dev)
    render_bench(result, as_json)


def render_bench(result, as_json: bool) -> None:
    """The figures to stdout: a table (or JSON), with what was measured and where."""
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    c, v = result.config, result.versions
    shape = f"--batch-size {c.batch_size}" + (
        f" --seq-len {c.seq_len} --precision {c.precision}" if result.kind == "train" else ""
    )
    out = Console(highlight=False, soft_wrap=True)
    out.print(
        f"charrnn bench {result.kind}: {c.cell} {c.layers}x{c.hidden}, embedding "
        f"{c.embedding}, V {c.vocab_size}, {shape}, {c.warmup} + {c.steps} steps; "
        f"data: {result.data}"
    )
    out.print(
        f"device: {result.device} ({result.device_name}, torch threads: {result.threads}); torch "
        f"{v['torch']}, CUDA {v['cuda'] or '-'}, cuDNN {v['cudnn'] or '-'}; {result.date}"
    )
    out.print(
        f"matmul peak {result.peak_flops / 1e12:.3f} TFLOP/s ({result.peak_how}); "
        f"{result.flops_per_token:,} model FLOPs per token; memory: {result.memory_how}"
    )
    table = Table()
    for col in ("", "tokens/s", "ms/step", "MFU", "peak memory", "loss"):
        table.add_column(col, justify="right")
    for name, m in (("charrnn", result.ours), ("reference", result.reference)):
        loss = f"{m.loss:.3f}" if m.loss is not None else "-"
        table.add_row(
            name, f"{m.tokens_per_sec:,.0f}", f"{m.seconds_per_step * 1e3:.2f}",
            f"{result.mfu(m):.2%}", f"{m.peak_memory / 2**20:,.0f} MiB", loss,
        )  # fmt: skip
    ours, ref = result.ours, result.reference
    table.add_row(
        "ratio", f"{result.ratio:.2f}x", f"{ours.seconds_per_step / ref.seconds_per_step:.2f}x",
        f"{result.ratio:.2f}x", f"{ours.peak_memory / max(ref.peak_memory, 1):.2f}x", "",
    )  # fmt: skip
    out.print(table)
