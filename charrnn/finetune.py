"""Fine-tuning (`charrnn train NEW_TEXT --init-from RUN`): a new run whose weights start from
another run's best model, its vocabulary grown so that every id keeps its meaning.

Owns: reading RUN for it (safely, as `charrnn.load` does, and hashing the weights it
loads), what a fine-tuned run may change (not the model's shape, not the tokenizer), the
fine-tuning defaults, and growing the vocabulary and the weights. run.create() calls it at
its hooks; nothing here reads the new text's files, writes or prints.

    base = finetune.load(RUN)                       config, tokenizer, weights: checked
    given, defaults = base.settings_for(given, device)  RUN's shape and tokenizer; defaults
    tok = base.grown_tokenizer(text, tok_cfg, documents)   RUN's ids, then the new ones
    model = base.grown_model(model_cfg, tok, train_ids)   RUN's weights, rows for new tokens

The vocabulary (ids 0 .. V-1 mean in the new run what they meant in RUN):

    char          the characters of the new text that RUN lacks follow RUN's, in
                  code-point order
    word          RUN's tokens; then the new text's commonest tokens that RUN lacks,
                  seen at least --min-count times, up to --vocab-size in all (default:
                  RUN's size + GROWTH; never fewer than RUN's); the glue re-fitted to
                  the new text, from RUN's
    bpe, unigram  RUN's sentencepiece model as it is: its byte fallback reads any text

The new rows. An embedding row is the mean of RUN's rows; a decoder row has zero weights
(tied: the embedding's mean row, u) and the bias

    c = min_t (LSE_t - u . h_t) - log(MARGIN * K / TOLERANCE)

with LSE_t the log-normaliser of RUN's logits and h_t its top layer's output at each of
(up to SAMPLE of) the new text's tokens that RUN knows, read as RUN reads them, and K the
new tokens. Adding them moves the log-probability of every old token by at most
TOLERANCE / MARGIN there, and by at most TOLERANCE on any text where LSE - u . h stays
within log(MARGIN) of its least on the new text: before the first step, the fine-tuned
model predicts as RUN did (tested on RUN's own text, the new text and random text). A new
token starts unlikely (below TOLERANCE / K), and its gradient (p - 1 where it comes next)
reaches its row from the first step. A bound for every text, from the most |h| can be,
would set the new rows far lower: a char model of WikiText-2 fine-tuned on fortunes starts
its new characters at 23 nats (3.5 after 50 steps) this way, at 95 (75 after 50 steps)
that way: each weight of a row moves by about the learning rate a step.

A word model's new rows start otherwise: the bias is

    c_w = log f_w - log mean_t exp(u . h_t - LSE_t)

with f_w the new word's share of the new text's tokens, so that, read as above, each new
word is on average as likely as the new text makes it (before the old words' mass shrinks
to make room: by the new words' share of the text, f). The fine-tuned model then predicts
the old words as RUN did less log(1 / (1 - f)) or so, not to within TOLERANCE: a word model
trains with SGD and a clipped gradient, and the bias of a new word started 23 nats or more
below the rest moved 0.4 nats on average (3.2 at most) in 944 steps (a WikiText-2 base
fine-tuned on tiny-shakespeare), so that the words the new text brings, most of what makes
it new, stayed unlearnt (1.2 times the bits per character of a model of the new text alone).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn import checkpoint, run, runconfig, settings
from charrnn.checkpoint import CheckpointError
from charrnn.corpus import Corpus
from charrnn.errors import ConfigError
from charrnn.model import ModelConfig, RNNLanguageModel, count_parameters
from charrnn.tokenizers import Tokenizer, TokenizerConfig
from charrnn.training.config import TrainConfig

# What RUN's weights fix: the shape, and the initialisation they replace (--forget-bias).
SHAPE = ("cell", "layers", "hidden", "embedding", "tie_weights", "forget_bias", "shortlist")
TOLERANCE = 1e-6  # nats: how far adding the new tokens may move an old token's log-prob,
MARGIN = 10.0  # where RUN's log-normaliser is down to log(MARGIN) below its least on the new text
SAMPLE, WINDOW = 1 << 15, 64  # the new text's tokens read to set the new rows; at a time
GROWTH = settings.default_of(TokenizerConfig, "vocab_size", ["word"])  # new words, at most
MAX_VOCAB = 2**31  # the token-id files hold int32 ids past 65,536 tokens (tokens.py)
# The fine-tuning default, measured (docs/finetune.md): a char model of WikiText-2 carried
# to 50 KB of tiny-shakespeare and of fortunes, fixed steps. Half the from-scratch peak
# learning rate did as well as all of it (1.1% worse on one, 0.5% better on the other; a
# quarter: 2% and 0.4% worse), with a wider best and at most half the overfitting after
# it. The warmup (0, 20, 50, 100 steps) mattered less; the from-scratch 50 did best.
LR_SCALE = 0.5  # the peak learning rate: this times the device's from-scratch --lr
WHAT = {"char": "characters", "word": "words"}


@dataclass(frozen=True)
class Base:
    """RUN, read for fine-tuning: its config, tokenizer, best model (on the CPU), and the
    sha256 of the model.safetensors that model was read from."""

    dir: Path
    config: runconfig.RunConfig
    tokenizer: Tokenizer
    model: RNNLanguageModel
    sha256: str

    @property
    def origin(self) -> runconfig.InitFrom:
        """What the new run's config.json records of where it began."""
        return runconfig.InitFrom(str(self.dir), self.config.best_step, self.sha256,
                            self.config.model.vocab_size)  # fmt: skip

    def settings_for(
        self, given: Mapping[str, Any], device: torch.device
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the settings of the new run, the fine-tuning defaults among them): those given,
        checked against RUN (ConfigError naming every flag that would change its model or
        its tokenizer), with RUN's shape and tokenizer, and the fine-tuning defaults of what
        was not given."""
        given = {k: v for k, v in given.items() if v is not None}
        self._check_model(given)
        tokenizer = self._tokenizer_settings(given)
        ctx = run.context(device, tokenizer["tokenizer"])
        lr = LR_SCALE * settings.default_of(TrainConfig, "lr", ctx)
        defaults = {} if "lr" in given else {"lr": lr}
        shape = {name: getattr(self.config.model, name) for name in SHAPE}
        shape["shortlist"] = self.model.head  # 0 where RUN's vocabulary was not longer
        return {**given, **defaults, **shape, **tokenizer}, defaults

    def _check_model(self, given: Mapping[str, Any]) -> None:
        model = {k: v for k, v in given.items() if k in SHAPE}
        changed = [f"{d.as_flag(new)} (RUN's: {d.as_flag(old) if old is not None else 'none'})"
                   for d, old, new in settings.changed(self.config.model, model)]  # fmt: skip
        if changed:
            raise ConfigError(
                f"--init-from {self.dir} keeps its model: {', '.join(changed)}; leave "
                f"{'them' if len(changed) > 1 else 'it'} out (--dropout and the training "
                "settings may change)"
            )

    def _tokenizer_settings(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """--tokenizer and --vocab-size of the new run: RUN's kind; a word vocabulary may
        grow to --vocab-size (RUN's size + GROWTH), a sentencepiece model stays as it is."""
        kind, size = self.tokenizer.tokenizer, self.tokenizer.vocab_size
        if given.get("tokenizer", kind) != kind:
            raise ConfigError(
                f"--tokenizer {given['tokenizer']}: --init-from {self.dir} has a {kind} "
                "vocabulary, which a fine-tuned run keeps (and grows); leave out --tokenizer"
            )
        asked = given.get("vocab_size")
        if kind in ("bpe", "unigram") and asked is not None:
            raise ConfigError(
                f"--vocab-size: --init-from {self.dir} keeps its {kind} model of {size:,} "
                "pieces as it is (its byte fallback reads any text); leave out --vocab-size"
            )
        if kind != "word":
            return {"tokenizer": kind} | ({"vocab_size": size} if kind != "char" else {})
        split = getattr(self.tokenizer, "split", "punct")  # a legacy vocabulary splits marks
        if given.get("word_split", split) != split:
            raise ConfigError(
                f"--word-split {given['word_split']}: --init-from {self.dir} splits its words "
                f"as {split}, which a fine-tuned run keeps; leave out --word-split"
            )
        if asked is not None and asked < size:
            raise ConfigError(
                f"--vocab-size {asked:,} is smaller than the {size:,} tokens of --init-from "
                f"{self.dir}, which a fine-tuned run keeps; give at least {size:,}"
            )
        if asked is not None and asked > MAX_VOCAB:
            raise ConfigError(
                f"--vocab-size {asked:,} is past the {MAX_VOCAB:,} token ids charrnn's id "
                "files hold"
            )
        return {"tokenizer": kind, "vocab_size": asked or size + GROWTH, "word_split": split}

    def grown_tokenizer(self, text: Corpus, config: TokenizerConfig, documents: str) -> Tokenizer:
        """RUN's tokenizer, grown by what the new text (cut into its documents) needs."""
        tok = self.tokenizer
        chunks = (piece for piece in text.documents(documents) if piece is not None)
        if tok.tokenizer == "char":
            return tok.grown(chunks)
        if tok.tokenizer == "word":
            return tok.grown(chunks, config.vocab_size - tok.vocab_size, config.min_count)
        return tok  # bpe, unigram: byte fallback, nothing to add

    def grown_model(self, config: ModelConfig, tok: Tokenizer, ids: np.ndarray) -> RNNLanguageModel:
        """A model of `config` (RUN's shape, the grown vocabulary, the new run's dropout)
        holding RUN's weights, and the new tokens' rows set as the module docstring says,
        from what it predicts on `ids` (the new text's)."""
        assert tok.vocab_size == config.vocab_size, "the model is built for the tokenizer"
        model, old = RNNLanguageModel(config), self.config.model.vocab_size
        weights = self.model.state_dict()
        with torch.no_grad():
            for name, tensor in model.state_dict().items():  # vocabulary rows first in each
                saved = weights.get(name)
                if saved is None:  # ngram_weight where RUN had no n-gram: fitted anew
                    continue
                assert tensor.shape[1:] == saved.shape[1:], name
                tensor[: saved.shape[0]].copy_(saved)
            if config.vocab_size > old:
                new_rows(model, old, ids, prior=tok.tokenizer == "word")
        return model

    def line(self, tok: Tokenizer, defaults: Mapping[str, Any]) -> str:
        """What the first line of `charrnn train` adds: the fine-tuning defaults taken, and
        what came from RUN."""
        shown = {d.name: d for d in settings.declared(TrainConfig)}
        flags = " ".join(shown[k].as_flag(v) for k, v in defaults.items())
        old, kind = self.config.model.vocab_size, tok.tokenizer
        n = count_parameters(self.model)
        weights = f"{n / 1e6:.1f}M weights" if n >= 100_000 else f"{n:,} weights"
        if kind in ("bpe", "unigram"):
            vocabulary = f"its {kind} model of {old:,} pieces kept (byte fallback reads any text)"
        elif tok.vocab_size > old:
            vocabulary = f"vocabulary {old:,} + {tok.vocab_size - old:,} new {WHAT[kind]}"
        else:
            vocabulary = f"vocabulary {old:,} {WHAT[kind]}, none new"
        step = self.config.best_step  # of model.safetensors, which load() read
        at = f" (step {step:,})" if step is not None else ""
        return (f"; fine-tuning defaults: {flags}" if flags else "") + (
            f"; from {self.dir}{at}: {weights}; {vocabulary}"
        )


def load(run_dir: Path) -> Base:
    """RUN read for --init-from: config.json (any format version), the tokenizer and the
    best model, each checked as `charrnn.load` checks them (safetensors only, every value
    finite); CheckpointError naming --init-from and what is wrong."""
    run_dir = Path(run_dir)
    try:
        config = runconfig.read_config(run_dir)
        tok = checkpoint.load_tokenizer(run_dir, config.model.vocab_size)
        path = checkpoint.best_path(run_dir)
        data = checkpoint.readable(path).read_bytes()  # hashed as it is loaded
        model = checkpoint.load_weights(path, config.model, "cpu", data).eval()
    except CheckpointError as e:
        raise CheckpointError(f"--init-from {e}") from None
    except OSError as e:
        raise CheckpointError(f"--init-from {run_dir}: cannot read it ({e.strerror})") from None
    return Base(run_dir, config, tok, model, hashlib.sha256(data).hexdigest())


def new_rows(model: RNNLanguageModel, old: int, ids: np.ndarray, prior: bool = False) -> None:
    """Set the rows from `old` on of `model`'s embedding and decoder (the module
    docstring's rule; `prior`: a word model's), measured on `ids` (the new text's)."""
    embed, decoder = model.embed.weight, model.decoder
    with torch.no_grad():
        embed[old:] = embed[:old].mean(0)
        if not model.config.tie_weights:
            decoder.weight[old:] = 0.0
        decoder.bias[old:] = 0.0
        widest, typical = gaps(model, old, ids)
        if prior:  # each new word as likely, on average over the text, as the text has it
            counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(decoder.bias))
            freq = torch.from_numpy(np.maximum(counts[old:], 1) / max(len(ids), 1))
            decoder.bias[old:] = (freq.log() - typical).to(decoder.bias.dtype)
            return
        k = decoder.bias.shape[0] - old
        decoder.bias[old:] = -(widest + math.log(MARGIN * k / TOLERANCE)).to(decoder.bias.dtype)


def gaps(model: RNNLanguageModel, old: int, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """([K], [K]): the most, and the log of the mean of the exp of, each new row's logit
    above the log-normaliser of the old ones (LSE_t), while `model` reads the ids of `ids`
    below `old` (up to SAMPLE of them) in up to 16 streams from a zero state, as an
    evaluation does."""
    ids = torch.from_numpy(np.asarray(ids[:SAMPLE], dtype=np.int64))
    ids = ids[ids < old]
    streams = max(1, min(16, len(ids)))
    rows = ids[: len(ids) // streams * streams].view(streams, -1)  # [B, N]
    k = model.config.vocab_size - old
    widest, total = (torch.full((k,), -math.inf, dtype=torch.float64) for _ in range(2))
    was, state = model.training, None
    model.eval()  # no dropout: as RUN predicts
    with torch.no_grad():
        for t in range(0, rows.shape[1], WINDOW):
            logits, state = model(rows[:, t : t + WINDOW], state)  # [B, W, V]
            lse = logits[..., :old].double().logsumexp(-1, keepdim=True)  # [B, W, 1]
            gap = (logits[..., old:].double() - lse).flatten(0, 1)  # [B W, K]
            widest = torch.maximum(widest, gap.amax(0))
            total = torch.logaddexp(total, gap.logsumexp(0))
    model.train(was)
    return widest, total - math.log(max(rows.numel(), 1))
