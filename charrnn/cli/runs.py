"""`charrnn info` and `charrnn eval`: what a run is, and how well it scores any text."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from charrnn import api, devices, settings
from charrnn.cli.app import AsJson, RunDir, command
from charrnn.cli.options import DEFAULT, opt, with_settings
from charrnn.corpus import CorpusConfig
from charrnn.metrics import EVAL_SEQ_LEN
from charrnn.tokenizers import ON_UNKNOWN


@command(summary="Show a run's settings, size, progress and vocabulary.")
def info(run_dir: RunDir, as_json: AsJson = False):
    """Show a run's settings (as the flags that made it), size, progress and vocabulary."""
    run = api.load(run_dir)
    summary = api.describe(run)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    c = run.config
    table = Table(show_header=False, box=None, title=str(run_dir), title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("model", " ".join(settings.flags(c.model)))
    table.add_row("parameters", f"{summary['parameters']:,}")
    ranks = f"; {c.world_size} ranks, --batch-size per rank" if c.world_size > 1 else ""
    table.add_row("training", " ".join(settings.flags(c.train)) + ranks)
    ended = ""
    if c.ended == "patience":
        ended = (f" (ended early: no better val loss in {c.train.patience} evaluations, "
                 f"--patience)")  # fmt: skip
    table.add_row("steps", f"{c.step}{ended}")
    if c.best_val_loss is not None:
        bpc, ppl = summary["best_val_bpc"], summary["best_val_word_perplexity"]
        bpc = (f", {bpc:.4f} bits/char" if bpc else "") + (f", {ppl:.2f} ppl/word" if ppl else "")
        averaged = " (the averaged weights, --average)" if summary["best_averaged"] else ""
        table.add_row("best val loss", f"{c.best_val_loss:.4f} nats/token{bpc} at step "
                      f"{c.best_step}{averaged}")  # fmt: skip
    g = summary["gradient"]
    if g:
        table.add_row("gradient", f"norm before clipping at the last evaluation: mean "
                      f"{g['grad_norm_mean']:.3g}, max {g['grad_norm_max']:.3g}, "
                      f"{g['clipped_frac']:.0%} of steps clipped")  # fmt: skip
    table.add_row("tokens", " ".join(settings.flags(c.tokenizer)) + "; " + vocabulary(run))
    if c.init_from is not None:
        table.add_row("init from", began(run))
    sources = ", ".join(c.sources) or "python"
    table.add_row("corpus", f"{sources}: {c.files} files, {c.chars:,} chars; "
                  + " ".join(settings.flags(c.corpus)))  # fmt: skip
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in c.versions.items()))
    Console(highlight=False).print(table)


def began(run) -> str:
    """Where a fine-tuned run began: RUN, its step, its weights' sha256, the tokens added."""
    origin, size = run.config.init_from, run.tokenizer.vocab_size
    step = f" at step {origin.step:,}" if origin.step is not None else ""
    return (
        f"{origin.run}{step} (model.safetensors sha256 {origin.sha256[:12]}...); its "
        f"{origin.vocab_size:,} tokens, {size - origin.vocab_size:,} added"
    )


def vocabulary(run) -> str:
    tok = run.tokenizer
    first = [tok.token_text(i) for i in range(0, min(tok.vocab_size, 80))]
    if tok.tokenizer == "char":
        return f"{tok.vocab_size:,} tokens: {''.join(first)!r}"
    more = " ..." if tok.vocab_size > 24 else ""
    return f"{tok.vocab_size:,} tokens: " + " ".join(map(repr, first[:24])) + more


@command("eval", summary="Score a run's best model on any text.")
@with_settings(CorpusConfig, skip=["documents"])
def eval_(
    run_dir: RunDir,
    sources: Annotated[list[str], typer.Argument(metavar="CORPUS", help="Files or folders.")],
    *,
    seq_len: opt(EVAL_SEQ_LEN) = DEFAULT,
    on_unknown: opt(ON_UNKNOWN) = None,
    device: opt(devices.DEVICE) = DEFAULT,
    as_json: AsJson = False,
    settings: dict,
):
    """Score a run's best model on any text: loss, bits per character and perplexity."""
    run = api.load(run_dir, devices.resolve(device))
    read = settings_of(settings)
    metrics, unk, skipped = run.score_files(sources, *read, on_unknown, seq_len)
    result = {"run_dir": str(run_dir), **asdict(metrics), "unk_tokens": unk}
    if skipped:
        result["skipped_chars"] = skipped
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    extra = "".join(f", {v:,} {k.replace('_', ' ')}" for k in ("unk_tokens", "skipped_chars")
                    if (v := result.get(k)))  # fmt: skip
    typer.echo(
        f"loss {metrics.loss:.4f} nats/token  bits/char {metrics.bpc:.4f}  perplexity "
        f"{metrics.word_perplexity:.2f} per word, {metrics.token_perplexity:.3f} per token  "
        f"({metrics.tokens:,} tokens, {metrics.chars:,} chars, {metrics.words:,} words{extra})"
    )


def settings_of(given: dict) -> tuple[str, str]:
    config = CorpusConfig(**given)
    return config.glob, config.encoding_errors
