"""A corpus as token ids on disk: the tokenizer fitted, the text encoded as it streams
past, and the ids written to a file that is memory-mapped, all cached by content hash.

Owns the cache folder ($CHARRNN_CACHE, else $XDG_CACHE_HOME/charrnn or ~/.cache/charrnn):

    fit-<key>/       a tokenizer's files, key = sha256 of (text sha256, tokenizer config,
                     --documents)
    ids-<key>/       ids.bin (uint16, or int32 past 65,536 tokens) + meta.json, key =
                     sha256 of (text sha256, --documents, --on-unknown, the tokenizer's files)

so a second run on the same text skips both fitting and encoding. Entries are built in a
temporary folder and renamed into place: a killed run leaves no half-written entry.
The ids never exist as a Python list: each chunk of text is encoded to a NumPy array
and appended to the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn import tokenizers
from charrnn.corpus import Corpus
from charrnn.corpus import split_documents as corpus_documents
from charrnn.tokenizers import Tokenizer, TokenizerConfig

# How the tokenizers encode, where a tokenizer file alone does not say it: cached ids of
# an older way are encoded again (2: a word tokenizer spells a run of blanks it lacks by
# the longest runs it has, not one blank at a time).
ENCODING = 2
FLUSH_TOKENS = 1 << 20  # write the ids in pieces of about a million tokens


def cache_dir() -> Path:
    if os.environ.get("CHARRNN_CACHE"):
        return Path(os.environ["CHARRNN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn"


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _files_digest(files: dict[str, bytes]) -> str:
    return _key(*sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files.items()))


def _publish(build, entry: Path) -> None:
    """Make `entry` by calling build(tmp_folder), then renaming; a lost race is harmless."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        build(tmp)
        os.replace(tmp, entry)
    except OSError:
        if not entry.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fit_tokenizer(
    corpus: Corpus, config: TokenizerConfig, documents: str = "none"
) -> tuple[Tokenizer, bool]:
    """(tokenizer fitted on the corpus's documents, whether it came from the cache).

    Fitted on the documents, not the raw text: with --documents lines, the newlines
    become <eos> and are not in the vocabulary.
    """
    key = _key(corpus.sha256, config.to_dict(), documents, tokenizers.fit_version(config))
    entry = cache_dir() / f"fit-{key}"
    if entry.exists():
        try:
            return tokenizers.load(entry), True
        except ValueError:
            shutil.rmtree(entry, ignore_errors=True)  # damaged: fit again
    pieces = (piece for piece in corpus.documents(documents) if piece is not None)
    tok = tokenizers.fit(config, pieces)

    def build(tmp: Path) -> None:
        for name, data in tok.files().items():
            (tmp / name).write_bytes(data)

    _publish(build, entry)
    return tokenizers.load(entry), False  # the published one: the same in every process


@dataclass(frozen=True)
class TokenIds:
    """A corpus's token ids: <eos> first, and one after every document."""

    ids: np.ndarray  # [N] memory-mapped, uint16 or int32
    cached: bool  # read from the cache, not encoded now
    seconds: float  # time spent encoding (0 when cached)
    unknown: int  # tokens that were not in the vocabulary (mapped to <unk>)


def token_ids(corpus: Corpus, tok: Tokenizer, documents: str, unknown: str = "unk") -> TokenIds:
    """The ids of the corpus under `tok`, from the cache or encoded into it.

    `unknown` says what to do with text the tokenizer has no token for (tokenizer.encode):
    a word model maps rare words to <unk>; a char model fitted on this text has none.
    """
    key = _key(corpus.sha256, documents, unknown, _files_digest(tok.files()), ENCODING)
    entry = cache_dir() / f"ids-{key}"
    cached, t0 = (entry / "meta.json").exists(), time.perf_counter()
    if not cached:
        _publish(lambda tmp: _encode(corpus, tok, documents, unknown, tmp), entry)
    meta = json.loads((entry / "meta.json").read_text())
    seconds = 0.0 if cached else time.perf_counter() - t0
    return TokenIds(_open(entry, meta), cached, seconds, meta["unknown"])


def _open(entry: Path, meta: dict) -> np.ndarray:
    # copy-on-write: writable for torch.from_numpy, yet nothing is ever written back
    return np.memmap(entry / "ids.bin", dtype=meta["dtype"], mode="c", shape=(meta["tokens"],))


def _encode(corpus: Corpus, tok: Tokenizer, documents: str, unknown: str, out: Path) -> None:
    dtype = np.dtype("<u2" if tok.vocab_size <= 1 << 16 else "<i4")
    eos = np.array([tok.eos_id], dtype=dtype)
    tokens = unknowns = 0
    with open(out / "ids.bin", "wb") as f:
        pending, size = [eos], 1
        for piece in corpus.documents(documents):
            ids = eos if piece is None else tok.encode(piece, unknown).astype(dtype)
            if tok.unk_id is not None and piece is not None:
                unknowns += int(np.count_nonzero(ids == tok.unk_id))
            pending.append(ids)
            size += ids.size
            if size >= FLUSH_TOKENS:
                np.concatenate(pending).tofile(f)
                tokens, pending, size = tokens + size, [], 0
        if pending:
            np.concatenate(pending).tofile(f)
        tokens += size
        f.flush()
        os.fsync(f.fileno())
    meta = {"tokens": tokens, "dtype": dtype.str, "unknown": unknowns, "chars": corpus.chars}
    (out / "meta.json").write_text(json.dumps(meta))


def encode(
    corpus: Corpus, config: TokenizerConfig, documents: str, tok: Tokenizer | None = None
) -> tuple[Tokenizer, np.ndarray, str]:
    """(tokenizer, token ids, a line that says how they were made) of a corpus, under `tok`
    or else one fitted on it; from the cache when this text was seen before."""
    if tok is None:
        tok, _ = fit_tokenizer(corpus, config, documents)
    encoded = token_ids(corpus, tok, documents)
    if encoded.cached:
        how = f"token ids from the cache in {cache_dir()}"
    else:
        mb = corpus.chars / 1e6
        how = (
            f"encoded {mb:,.1f}M chars in {encoded.seconds:.1f}s "
            f"({mb / max(encoded.seconds, 1e-9):,.1f}M chars/s), cached in {cache_dir()}"
        )
    if encoded.unknown:
        share = encoded.unknown / len(encoded.ids)
        how += f"; {encoded.unknown:,} tokens ({share:.2%}) are <unk>"
    return tok, encoded.ids, how


def ids_of_text(
    tok: Tokenizer, text: str, documents: str = "none", on_unknown: str = "error"
) -> tuple[np.ndarray, int]:
    """(ids, how many are <unk>) of a text in memory, cut into documents as a corpus is:
    <eos> first, and one after each document."""
    parts, unknowns = [np.array([tok.eos_id], dtype=np.int32)], 0
    for piece in corpus_documents([text], documents):
        ids = np.array([tok.eos_id], dtype=np.int32) if piece is None else tok.encode(
            piece, on_unknown)  # fmt: skip
        if tok.unk_id is not None and piece is not None:
            unknowns += int(np.count_nonzero(ids == tok.unk_id))
        parts.append(ids)
    return np.concatenate(parts), unknowns
