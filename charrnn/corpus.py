"""Finding and reading text: files, folders, built-in corpus names, and bad-input checks.

Owns the path from what the user typed (`charrnn train notes/ poems.txt`) to text, and
every way that can go wrong. Nothing here knows about tokens or tensors.

A corpus is read exactly: the bytes are decoded as UTF-8 with no normalisation, and
anything that is not text (NUL bytes, UTF-16/32, invalid UTF-8) is refused with a
`CorpusError` that says which file, where, and what to do about it. Text is read in
chunks of a few MB cut at newlines, so a corpus of any size streams through; `read()`
checks every file once and hashes the text, and `Corpus.chunks()` / `documents()` read
it again whenever it is needed.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import sysconfig
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from charrnn import paths, settings
from charrnn.errors import CharrnnError
from charrnn.settings import setting

# Folders of the standard library that are not the library itself: its test suites
# (large, and full of deliberately odd encodings) and third-party installs.
_STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}

_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32-LE",
    b"\x00\x00\xfe\xff": "UTF-32-BE",
    b"\xff\xfe": "UTF-16-LE",
    b"\xfe\xff": "UTF-16-BE",
}

CHUNK_BYTES = 1 << 22  # read 4 MB at a time
DOCUMENTS = ("none", "lines", "paragraphs", "files")


class CorpusError(CharrnnError):
    """A corpus that cannot be read as text: the message says which file and what to do."""


@dataclass(frozen=True)
class CorpusConfig:
    """How a corpus is read: which files of a folder, what to do with bad UTF-8, and what a
    document is (`<eos>` follows each one, so that a model learns where they end)."""

    glob: str = setting("*", "Which files to read from folders.")
    encoding_errors: str = setting(
        "strict", "Invalid UTF-8: stop, or read it as U+FFFD.",
        choices=("strict", "replace"),
    )  # fmt: skip
    documents: str = setting(
        "none", "What a document is: <eos> follows each one.", choices=DOCUMENTS
    )

    def __post_init__(self):
        settings.validate(self)

    def to_dict(self) -> dict:
        return settings.to_json(self)


@dataclass(frozen=True)
class Download:
    """A public corpus fetched once into corpora/ and checked against its sha256."""

    name: str
    url: str
    sha256: str
    chars: int
    filename: str


SHAKESPEARE = Download(
    name="shakespeare",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    chars=1_115_394,
    filename="shakespeare.txt",
)
BUILTIN = ("python", "shakespeare")


@dataclass(frozen=True)
class Corpus:
    """Where a corpus's text is, checked: every file decodes under `encoding_errors`."""

    files: tuple[Path, ...]  # every file read, in the order read
    glob: str  # which files were read from folders
    encoding_errors: str
    chars: int
    sha256: str  # of the UTF-8 text: a resumed run checks it is training on the same text

    def chunks(self, files: Iterable[Path] | None = None) -> Iterator[str]:
        """The text, files joined as they are, in chunks that end at a newline."""
        blocks = (b for f in (files or self.files) for b in _read(f, self.encoding_errors))
        return _at_newlines(blocks)

    @property
    def text(self) -> str:
        """All of the text at once: for small corpora (tests, `eval` of a short file)."""
        return "".join(self.chunks())

    def documents(self, mode: str) -> Iterator[str | None]:
        """The text as pieces, with None at the end of each document (split_documents);
        files: each file is a document."""
        if mode != "files":
            yield from split_documents(self.chunks(), mode)
            return
        for f in self.files:
            yield from self.chunks([f])
            yield None


def split_documents(chunks: Iterable[str], mode: str) -> Iterator[str | None]:
    """Text chunks (each ending at a newline) as pieces, with None at the end of each
    document. none: one document, no boundaries. lines: each non-blank line (its newline
    becomes the boundary). paragraphs: runs of lines between blank lines. files (of a
    text in memory): all of it, then one boundary."""
    if mode in ("none", "files"):
        yield from chunks
        if mode == "files":
            yield None
    elif mode == "lines":
        for line in _lines(chunks):
            if line.strip():
                yield line
                yield None
    elif mode == "paragraphs":
        paragraph: list[str] = []
        for line in [*_lines(chunks), ""]:
            if line.strip():
                paragraph.append(line)
            elif paragraph:
                yield "\n".join(paragraph)
                yield None
                paragraph = []
    else:
        raise AssertionError(f"unknown --documents {mode!r}")  # CorpusConfig checks it


def _lines(chunks: Iterable[str]) -> Iterator[str]:
    """Lines without their \\n (or \\r\\n); chunks end at newlines, so none is cut."""
    for chunk in chunks:
        for line in chunk.split("\n")[: -1 if chunk.endswith("\n") else None]:
            yield line.removesuffix("\r")


def _at_newlines(blocks: Iterable[str], most: int = 16 * CHUNK_BYTES) -> Iterator[str]:
    """Re-cut text blocks so each piece ends at a newline (no token spans one), unless a
    single line runs past `most` characters."""
    carry = ""
    for block in blocks:
        cut = block.rfind("\n") + 1
        if cut == 0 and len(carry) + len(block) < most:
            carry += block
            continue
        cut = cut or len(block)
        yield carry + block[:cut]
        carry = block[cut:]
    if carry:
        yield carry


def _blocks(path: Path) -> Iterator[bytes]:
    """The bytes of one file in blocks of CHUNK_BYTES, then b""; an OS error (no permission,
    a failing disk) is the file's, named, not a crash."""
    try:
        with open(path, "rb") as f:
            while block := f.read(CHUNK_BYTES):
                yield block
    except OSError as e:
        raise CorpusError(f"{path}: cannot read it ({e.strerror})") from None
    yield b""


def _read(path: Path, encoding_errors: str) -> Iterator[str]:
    """Decode one file as UTF-8 in blocks, refusing what is not UTF-8 text."""
    decoder = codecs.getincrementaldecoder("utf-8")(encoding_errors)
    offset = 0
    for block in _blocks(path):
        if offset == 0:
            check_bom(block, str(path))
        check_nul(block, str(path), offset)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
            raise CorpusError(
                f"{path}: invalid UTF-8 at byte offset {offset - pending + e.start}; fix "
                "the file or pass --encoding-errors replace to read it with U+FFFD in "
                "place of bad bytes"
            ) from None
        if text:
            yield text
        offset += len(block)


def check_bom(data: bytes, name: str) -> None:
    for bom, encoding in _BOMS.items():
        if data.startswith(bom):
            _refuse_wide(name, encoding)


# Where the NUL bytes of mostly-ASCII text fall in UTF-16/32 without a byte-order mark
# (Python's utf-16-le codec, and others, write none): (name, width, NUL positions).
_WIDE = (
    ("UTF-32-LE", 4, {1, 2, 3}),
    ("UTF-32-BE", 4, {0, 1, 2}),
    ("UTF-16-LE", 2, {1}),
    ("UTF-16-BE", 2, {0}),
)


def check_nul(data: bytes, name: str, offset: int = 0) -> None:
    """Refuse data with a NUL byte: as UTF-16/32 when the NULs fall where those put
    them (at the start of a file), else as binary."""
    nul = data.find(b"\x00")
    if nul < 0:
        return
    sample = data[: 4096 // 4 * 4] if offset == 0 else b""
    for encoding, width, zeros in _WIDE if len(sample) >= 8 else ():
        column = [sample[i::width].count(0) / (len(sample) // width) for i in range(width)]
        if all(c > 0.8 if i in zeros else c < 0.2 for i, c in enumerate(column)):
            _refuse_wide(name, encoding)
    raise CorpusError(f"{name}: binary file (NUL byte at offset {offset + nul}), not text")


def _refuse_wide(name: str, encoding: str):
    raise CorpusError(
        f"{name}: looks like {encoding}, not UTF-8; convert it first, for example "
        f"`iconv -f {encoding} -t UTF-8 {name} > {Path(name).stem}.utf8.txt`"
    )


def decode(data: bytes, name: str, encoding_errors: str = "strict") -> str:
    """UTF-8 bytes -> str, refusing binary and non-UTF-8 data with a message that helps."""
    check_bom(data, name)
    check_nul(data, name)
    try:
        return data.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{name}: invalid UTF-8 at byte offset {e.start}; fix the file or pass "
            "--encoding-errors replace to read it with U+FFFD in place of bad bytes"
        ) from None


def check_file(path: Path, what: str) -> None:
    """CorpusError unless `path` is a regular file this process can read, saying what it is
    instead (paths.read_problem); `what` names it in the message (a flag, or "corpus")."""
    problem = paths.read_problem(path)
    if problem is not None:  # "cannot read it (Permission denied; corpus)": one aside
        aside = f"{problem[:-1]}; {what})" if problem.endswith(")") else f"{problem} ({what})"
        raise CorpusError(f"{path}: {aside}")


def read_file(path: Path, what: str) -> str:
    """One text file, whole, checked as a corpus file is (regular, UTF-8, not binary)."""
    check_file(Path(path), what)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read it ({e.strerror}; {what})") from None
    return decode(data, str(path))


def python_sources() -> list[Path]:
    """The running interpreter's own standard-library .py files, in a stable order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(
        p for p in root.rglob("*.py") if not _STDLIB_SKIP.intersection(p.relative_to(root).parts)
    )


def corpora_dir() -> Path:
    """Where downloaded corpora live: $CHARRNN_CORPORA, else corpora/ of a source checkout,
    else ~/.cache/charrnn/corpora."""
    if os.environ.get("CHARRNN_CORPORA"):
        return Path(os.environ["CHARRNN_CORPORA"])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout / "corpora"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "charrnn" / "corpora"


def fetch(download: Download, folder: Path | None = None) -> Path:
    """The downloaded corpus's file, fetched on first use and verified by sha256 every time."""
    path = (folder or corpora_dir()) / download.filename
    where = (
        f"put tiny-{download.name} ({download.chars:,} chars, sha256 {download.sha256}) "
        f"at {path}, or set CHARRNN_CORPORA to a folder that holds {download.filename}"
    )
    if not path.exists():
        try:
            _download(download, path)
        except OSError as e:
            raise CorpusError(
                f"{download.name}: could not download {download.url} ({e}); {where}"
            ) from None
    if _sha256(path) != download.sha256:
        raise CorpusError(f"{path}: not the {download.name} corpus (sha256 differs); {where}")
    return path


def _download(download: Download, path: Path) -> None:
    """Fetch into a temporary file beside `path`, check the sha256, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(download.url, timeout=60) as response, open(tmp, "wb") as f:
            while block := response.read(1 << 16):
                digest.update(block)
                f.write(block)
        if digest.hexdigest() != download.sha256:
            raise OSError(
                f"the file served has sha256 {digest.hexdigest()[:16]}..., not "
                f"{download.sha256[:16]}...; nothing was saved"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def find_files(sources: list[str], glob: str = "*") -> list[Path]:
    """Expand CORPUS arguments (files, folders, built-in names) into a list of files.

    Folders are read recursively, keeping the regular files whose name matches `glob`;
    hidden files and folders (.git, .venv) are skipped, and so are pipes, sockets and
    devices. A path named directly must be a folder or a regular file this process can
    read: anything else is refused, saying what it is.
    """
    if not sources:
        sources = ["python"]
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if source in BUILTIN and not os.path.lexists(path):
            files.extend(python_sources() if source == "python" else [fetch(SHAKESPEARE)])
        elif path.is_dir():
            files.extend(_folder_files(path, glob))
        elif os.path.lexists(path):  # a file, or something that is not one: check_file says
            check_file(path, "corpus")
            files.append(path)
        else:
            names = ", ".join(BUILTIN)
            raise CorpusError(f"{source}: no such file or folder (built-in corpora: {names})")
    return files


def _folder_files(folder: Path, glob: str) -> list[Path]:
    """The regular files under `folder` whose name matches `glob`, hidden ones left out;
    CorpusError naming a folder or a file inside that cannot be read (a folder no one may
    list would otherwise leave its text out without a word)."""

    def unreadable(e: OSError):
        raise CorpusError(f"{e.filename}: cannot read this folder ({e.strerror}; corpus)")

    for _, dirs, _ in os.walk(folder, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    found = sorted(
        p
        for p in folder.rglob(glob)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not found:
        raise CorpusError(f"{folder}: no files matching --glob {glob!r} in this folder")
    for path in found:
        check_file(path, "corpus")
    return found


def read(sources: list[str], glob: str = "*", encoding_errors: str = "strict") -> Corpus:
    """Check every file of a corpus (one streaming pass) and hash its text."""
    files = find_files(sources, glob)
    python = not sources or sources == ["python"]
    kept, chars, digest = [], 0, hashlib.sha256()
    for path in files:
        blocks = _read(path, encoding_errors)
        if python:
            # The interpreter's own sources are not the user's input: a file that is
            # not clean UTF-8 is left out rather than stopping a first run.
            try:
                blocks = list(blocks)
            except CorpusError:
                continue
        for block in blocks:
            chars += len(block)
            digest.update(block.encode("utf-8", errors="surrogatepass"))
        kept.append(path)
    if not chars:
        where = ", ".join(sources) if sources else "python"
        raise CorpusError(f"{where}: the corpus is empty; give a file or folder with some text")
    return Corpus(tuple(kept), glob, encoding_errors, chars, digest.hexdigest())
