"""`charrnn info` and `charrnn eval`: what a run is, and how well it scores any text."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from charrnn import checkpoint, corpus, tokens
from charrnn import tokenizer as tokenizers
from charrnn.cli.common import (
    AsJson,
    Device,
    EncodingErrors,
    Glob,
    Run,
    UsageError,
    app,
    check_encoding_errors,
    resolve_device,
    user_errors,
)
from charrnn.model import count_parameters
from charrnn.train import evaluate

# info and eval -------------------------------------------------------------------------


@app.command()
def info(run: Run, as_json: AsJson = False):
    """Show a run's configuration, size, progress and vocabulary."""
    with user_errors():
        model, tok, config = checkpoint.load_best(run)
    metrics = checkpoint.read_metrics(run)
    summary = {
        "run_dir": str(run),
        "parameters": count_parameters(model),
        "step": config.get("step"),
        "best_val_loss": config.get("best_val_loss"),
        "best_step": config.get("best_step"),
        "best_val_bpc": next(
            (m["val_bpc"] for m in metrics if m["step"] == config.get("best_step")), None
        ),
        "evaluations": len(metrics),
        "vocab_size": tok.vocab_size,
        "model": config["model"],
        "train": config["train"],
        "world_size": config.get("world_size", 1),
        "tokenizer": config["tokenizer"],
        "corpus": {k: v for k, v in config["corpus"].items() if k != "sha256"},
        "versions": config.get("versions", {}),
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    out = Console(highlight=False)
    table = Table(show_header=False, box=None, title=str(run), title_justify="left")
    m = config["model"]
    table.add_row("model", f"{m['cell']} {m['layers']}x{m['hidden']}, embedding {m['embedding']}, "
                  f"dropout {m['dropout']:g}{', tied' if m['tie_weights'] else ''}")  # fmt: skip
    table.add_row("parameters", f"{summary['parameters']:,}")
    table.add_row("steps", f"{summary['step']}")
    if summary["best_val_loss"] is not None:
        bpc = f", {summary['best_val_bpc']:.4f} bits/char" if summary["best_val_bpc"] else ""
        table.add_row(
            "best val loss",
            f"{summary['best_val_loss']:.4f} nats/token{bpc} at step {summary['best_step']}",
        )
    first = [tok.decode([i]) or "<eos>" for i in range(0, min(tok.vocab_size, 80))]
    sample_vocab = "".join(first) if tok.kind == "char" else " ".join(map(repr, first[:24]))
    table.add_row(
        "vocabulary",
        f"{tok.vocab_size:,} tokens ({config['tokenizer']['type']}): "
        + (repr(sample_vocab) if tok.kind == "char" else sample_vocab)
        + (" ..." if tok.kind != "char" and tok.vocab_size > 24 else ""),
    )
    c = config["corpus"]
    table.add_row(
        "corpus",
        f"{', '.join(c['sources']) or 'python'}: {c['files']} files, {c['chars']:,} chars"
        + (f", --documents {c['documents']}" if c.get("documents", "none") != "none" else ""),
    )
    t = config["train"]
    ranks = (
        f"{summary['world_size']} ranks, batch_size per rank; " if summary["world_size"] > 1 else ""
    )
    table.add_row("training", ranks + ", ".join(f"{k} {v}" for k, v in t.items() if v is not None))
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in summary["versions"].items()))
    out.print(table)


@app.command("eval")
def eval_(
    run: Run,
    sources: Annotated[
        list[str], typer.Argument(metavar="CORPUS...", help="Files or folders to score.")
    ],
    glob: Glob = "*",
    encoding_errors: EncodingErrors = "strict",
    seq_len: Annotated[int, typer.Option(help="Tokens per window.")] = 256,
    on_unknown: Annotated[
        Optional[str],
        typer.Option(help="Symbols the model never saw: error | skip | unk (word models: unk)."),
    ] = None,
    device: Device = "auto",
    as_json: AsJson = False,
):
    """Score a run's best model on any text: loss, bits per character, perplexity."""
    check_encoding_errors(encoding_errors)
    dev = resolve_device(device)
    with user_errors():
        model, tok, config = checkpoint.load_best(run, dev)
        on_unknown = on_unknown or ("error" if tok.unk_id is None else "unk")
        if on_unknown not in tokenizers.ON_UNKNOWN or (on_unknown == "unk" and tok.unk_id is None):
            raise UsageError(f"--on-unknown {on_unknown}: choose error or skip for this model")
        text = corpus.read(sources, glob, encoding_errors)
        documents = config["corpus"].get("documents", "none")
        if on_unknown == "error":
            unknown = sorted({s for chunk in text.chunks() for s in tok.unknown(chunk)})
            if unknown:
                shown = " ".join(repr(c) for c in unknown[:20])
                raise UsageError(
                    f"the text has {len(unknown)} symbols the model has never seen: {shown} "
                    "(--on-unknown skip leaves them out of the score)"
                )
        encoded = tokens.token_ids(text, tok, documents, on_unknown)
        if len(encoded.ids) < 2:
            raise UsageError("the text is too short to score")
        metrics = evaluate(model, encoded.ids, seq_len, tok.count_chars, dev)
    result = {"run_dir": str(run), **asdict(metrics), "unk": encoded.unknown}
    if on_unknown == "skip" and documents == "none":  # what the skipped symbols took up
        result["skipped_chars"] = text.chars - metrics.chars
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(
            f"loss {metrics.loss:.4f} nats/token  bits/char {metrics.bpc:.4f}  "
            f"perplexity {metrics.perplexity:.3f}  "
            f"({metrics.tokens:,} tokens, {metrics.chars:,} chars"
            + "".join(f", {v:,} {k.replace('_', ' ')}" for k in ("unk", "skipped_chars")
                      if (v := result.get(k)))
            + ")"
        )  # fmt: skip
