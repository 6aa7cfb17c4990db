"""Finding and reading text: files, folders, built-in corpus names, and bad-input checks.

Owns the path from what the user typed (`charrnn train notes/ poems.txt`) to one string
of text, and every way that can go wrong. Nothing here knows about tokens or tensors.

A corpus is read exactly: the bytes are decoded as UTF-8 with no normalisation, and
anything that is not text (NUL bytes, UTF-16/32, invalid UTF-8) is refused with a
`CorpusError` that says which file, where, and what to do about it.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# Folders of the standard library that are not the library itself: its test suites
# (large, and full of deliberately odd encodings) and third-party installs.
_STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}

BUILTIN = ("python",)

_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32-LE",
    b"\x00\x00\xfe\xff": "UTF-32-BE",
    b"\xff\xfe": "UTF-16-LE",
    b"\xfe\xff": "UTF-16-BE",
}


class CorpusError(ValueError):
    """Bad input the user can fix: the message says what, where, and what to do."""


@dataclass(frozen=True)
class Corpus:
    """The text of a corpus and where it came from."""

    text: str
    files: tuple[Path, ...]  # every file read, in the order read
    sha256: str  # of the UTF-8 text: a resumed run checks it is training on the same text

    @property
    def chars(self) -> int:
        return len(self.text)


def python_sources() -> list[Path]:
    """The running interpreter's own standard-library .py files, in a stable order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(
        p for p in root.rglob("*.py") if not _STDLIB_SKIP.intersection(p.relative_to(root).parts)
    )


def find_files(sources: list[str], glob: str = "*") -> list[Path]:
    """Expand CORPUS arguments (files, folders, built-in names) into a list of files.

    Folders are read recursively, keeping files whose name matches `glob`; hidden files
    and folders (.git, .venv) are skipped. Files named directly are always kept.
    """
    if not sources:
        sources = ["python"]
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if source in BUILTIN and not path.exists():
            files.extend(python_sources())
        elif path.is_dir():
            found = sorted(
                p
                for p in path.rglob(glob)
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise CorpusError(f"{source}: no files matching --glob {glob!r} in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            names = ", ".join(BUILTIN)
            raise CorpusError(f"{source}: no such file or folder (built-in corpora: {names})")
    return files


def decode(data: bytes, name: str, encoding_errors: str = "strict") -> str:
    """UTF-8 bytes -> str, refusing binary and non-UTF-8 files with a message that helps."""
    for bom, encoding in _BOMS.items():
        if data.startswith(bom):
            raise CorpusError(
                f"{name}: looks like {encoding}, not UTF-8; convert it first, for example "
                f"`iconv -f {encoding} -t UTF-8 {name} > {Path(name).stem}.utf8.txt`"
            )
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{name}: binary file (NUL byte at offset {nul}), not text")
    try:
        return data.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{name}: invalid UTF-8 at byte offset {e.start}; fix the file or pass "
            "--encoding-errors replace to read it with U+FFFD in place of bad bytes"
        ) from None


def read(sources: list[str], glob: str = "*", encoding_errors: str = "strict") -> Corpus:
    """Read every file of a corpus into one string; files are joined as they are."""
    files = find_files(sources, glob)
    parts = []
    builtin = not sources or all(s in BUILTIN for s in sources)
    for path in files:
        data = path.read_bytes()
        if builtin:
            # The interpreter's own sources are not the user's input: a file that is not
            # clean UTF-8 is left out rather than stopping a first run.
            try:
                parts.append(decode(data, str(path)))
            except CorpusError:
                continue
        else:
            parts.append(decode(data, str(path), encoding_errors))
    text = "".join(parts)
    if not text:
        where = ", ".join(sources) if sources else "python"
        raise CorpusError(f"{where}: the corpus is empty; give a file or folder with some text")
    sha = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
    return Corpus(text=text, files=tuple(files), sha256=sha)
