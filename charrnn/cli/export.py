"""`charrnn export`: a run's one-token step as an ONNX graph, with its tokenizer beside it
(charrnn/export.py), checked in onnxruntime against PyTorch before it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charrnn import api
from charrnn import export as exporting
from charrnn.cli.app import RunDir, command, err
from charrnn.errors import ConfigError


@command(summary="Write a run's one-token step as an ONNX graph, with its tokenizer.")
def export(
    run_dir: RunDir,
    *,
    onnx: Annotated[
        Path,
        typer.Option(
            metavar="FILE", help="The .onnx file to write; the tokenizer's files go beside it."
        ),  # fmt: skip
    ] = None,
):
    """Write a run's one-token step, (ids, state) -> (logits, state), as an ONNX graph,
    the tokenizer's files beside it; it is checked in onnxruntime against PyTorch over
    100 steps first. The contract: docs/export.md."""
    if onnx is None:
        raise ConfigError("give --onnx FILE: the .onnx file to write")
    run = api.load(run_dir, "cpu")
    done = exporting.export(run, onnx)
    beside = ", ".join(p.name for p in done.tokenizer_files)
    err.print(f"wrote {done.path} ({', '.join(done.inputs)} -> {', '.join(done.outputs)}) and "
              f"{beside}; onnxruntime agrees with PyTorch within {done.max_difference:.1e} "
              f"over {done.steps} steps", markup=False)  # fmt: skip
    if run.model.ngram is not None:
        order = run.model.ngram.order
        err.print(f"the graph is the network alone: the run's n-gram (--ngram {order}) is "
                  "not in it (docs/export.md)", markup=False)  # fmt: skip
