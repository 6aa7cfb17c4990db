"""Paths as the operating system has them: what a path is (a file, a folder, a pipe, a
symbolic link that loops), whether this process may read it or make a folder there, a
folder made whole or not at all, and a file object that keeps a failed write's OSError.

The checks return what is wrong in words, or None; corpus.py and checkpoint.py put that
in their errors, with the path and the flag. Nothing here knows about text or runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

KINDS = (
    (stat.S_ISREG, "file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)  # fmt: skip


def kind(mode: int) -> str:
    """What a path with this st_mode is, in words."""
    return next((name for test, name in KINDS if test(mode)), "special file")


def read_problem(path: Path) -> str | None:
    """What stops this process reading `path` as a regular file, in words, or None. A
    pipe, a socket or a device is refused: reading one can wait forever or never end."""
    try:
        mode = os.stat(path).st_mode  # follows symbolic links
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
        return "no such file"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link that loops back on itself"
        return f"cannot read it ({e.strerror})"
    if not stat.S_ISREG(mode):
        return f"a {kind(mode)}, not a regular file; charrnn reads only regular files"
    try:  # the permission as this process has it (root without CAP_DAC_OVERRIDE included)
        os.close(os.open(path, os.O_RDONLY))
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    return None


def what_is(path: Path) -> str:
    """'file', 'folder', 'named pipe', ..., 'symbolic link that loops' or 'broken symbolic
    link' (one to nothing)."""
    try:
        return kind(os.stat(path).st_mode)
    except OSError as e:
        return "symbolic link that loops" if e.errno == errno.ELOOP else "broken symbolic link"


def folder_problem(path: Path) -> str | None:
    """What stops this process making a folder at `path` (which does not exist yet), or
    starting one in it (an empty folder), in words, or None."""
    path = Path(path)
    if path.is_dir():
        ok = os.access(path, os.W_OK | os.X_OK)
        return None if ok else "cannot write in this folder (permission denied)"
    if os.path.lexists(path):
        return f"a {what_is(path)}, not a folder"
    parent = next(p for p in path.absolute().parents if os.path.lexists(p))
    if not parent.is_dir():
        return f"{parent} is a {what_is(parent)}, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create it in {parent} (permission denied)"
    return None


def reason(e: OSError) -> str:
    """An OS error as the cause of a failed write."""
    if isinstance(e, FileNotFoundError) and e.filename:  # mkdir where no folder may be: /proc
        return f"the filesystem of {Path(e.filename).parent} lets no folder be made there"
    return e.strerror or str(e)


def make_folder(path: Path, fill: Callable[[Path], None]) -> None:
    """Make the folder `path` holding what `fill(folder)` writes, whole or not at all.

    A new folder is filled under a temporary name beside it, then renamed into place; a
    folder that exists (an empty one, a mount point say) is filled where it is. If
    anything fails (OSError: a full disk, a read-only or virtual filesystem), what was
    made is removed, the parent folders made for it included (and in a folder that
    existed, only what fill() wrote), and the error raised.
    """
    path = Path(path)
    made = [p for p in reversed(path.absolute().parents) if not os.path.lexists(p)]
    existing = path.is_dir()
    there = set(os.listdir(path)) if existing else set()  # left alone, whatever happens
    target = path if existing else path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        for folder in [*made, *([] if existing else [target])]:
            os.mkdir(folder)
        fill(target)
        if not existing:
            os.rename(target, path)
    except BaseException:
        if existing:  # remove what fill() wrote, and only that
            with contextlib.suppress(OSError):
                for child in target.iterdir():
                    if child.name not in there:
                        _remove(child)
        else:
            shutil.rmtree(target, ignore_errors=True)
        for folder in reversed(made):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    fsync_dir(path.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in folder `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Sink:
    """A file object on a descriptor whose write() writes all it is given or raises, and
    keeps the OSError: for writers that turn a failed write into an error of their own
    (torch.save's zip writer raises a RuntimeError when the disk is full)."""

    def __init__(self, fd: int):
        self.fd, self.error = fd, None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as e:
            self.error = self.error or e
            raise
        return done

    def flush(self) -> None:
        pass
