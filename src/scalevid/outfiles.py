"""Creating the files scalevid writes, never through a link at their path.

A symbolic link planted where an output file goes (``RUN/curves.png -> ~/.bashrc``) must not
make a command write outside its output folder. Every writer therefore either replaces the file
by rename (a new temporary file, created with ``O_EXCL``, then ``os.replace`` over the path:
the rename replaces a link itself, never its target) or opens it with ``O_NOFOLLOW`` (logs that
grow by appending, lock files). A full disk is reported as such, naming the file, and a
half-written temporary file is removed.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceError(OSError):
    """The disk (or quota) is full while writing a file; names the file."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            errno.ENOSPC,
            f"{path}: no space left on device while writing it (nothing half-written was kept); "
            "free some space and re-run the same command to continue",
        )
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.strerror)


class LinkedOutputError(OSError):
    """An output path is a symbolic link: scalevid never writes through one."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            errno.ELOOP,
            f"{path} is a symbolic link; scalevid never writes through a link at an output "
            "path: remove the link (or choose another output folder)",
        )
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.strerror)


def _open_fd(path: Path, flags: int, mode: str) -> BinaryIO | TextIO:
    """`os.open` without following a link at `path`, wrapped as a file object."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LinkedOutputError(path) from None
        raise
    return _file(fd, mode, path)


def _file(fd: int, mode: str, path: Path) -> BinaryIO | TextIO:
    """The one place a descriptor becomes a file object (tests put a full disk here)."""
    return os.fdopen(fd, mode)


def is_full(err: BaseException) -> bool:
    """Whether `err` is a full disk (or quota)."""
    return isinstance(err, OSError) and err.errno in _NO_SPACE


def reraise_if_full(err: BaseException, path: Path) -> None:
    """Raise NoSpaceError naming `path` when `err` is a full disk (or quota)."""
    if is_full(err):
        raise NoSpaceError(path) from None


def make_folder(path: Path) -> Path:
    """A folder inside an output folder (created with its parents if missing); a link planted
    in its place is refused, since everything written into it would land where it points."""
    path = Path(path)
    if path.is_symlink():
        raise LinkedOutputError(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_new(path: Path) -> BinaryIO:
    """A new file opened for binary writing; fails if anything (a link too) is at `path`."""
    return _open_fd(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, "wb")  # type: ignore[return-value]


def open_append(path: Path) -> TextIO:
    """A text log opened for appending (created if missing), never through a link."""
    return _open_fd(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a")  # type: ignore[return-value]


def open_truncate(path: Path) -> TextIO:
    """A text file opened for writing from empty (created if missing), never through a link."""
    return _open_fd(Path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "w")  # type: ignore[return-value]


def open_lock_file(path: Path) -> int:
    """A lock file's descriptor (created if missing, never through a link, not inherited)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LinkedOutputError(Path(path)) from None
        raise


def replace_file(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` as a whole: `write(f)` fills a new temporary file in the same folder,
    which is fsynced and renamed over `path`. A reader, a crash or a full disk leaves the old
    file or the new one, never half of one, and a link at `path` is replaced, not followed."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0o600 would hide results from the user's group
        with _file(fd, "wb", tmp) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        reraise_if_full(e, path)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """`replace_file` with UTF-8 text."""
    return replace_file(path, lambda f: f.write(text.encode()))


def write_bytes(path: Path, data: bytes) -> Path:
    """`replace_file` with bytes."""
    return replace_file(path, lambda f: f.write(data))


def save_npy(f: BinaryIO, array: np.ndarray) -> None:
    """np.save into an open binary file, in chunks through ``f.write`` (numpy's own fast path
    reports a full disk as a bare short write, without errno or file name)."""

    class _Sink:
        def write(self, data: bytes) -> None:
            f.write(data)

    np.lib.format.write_array(_Sink(), np.asanyarray(array), allow_pickle=False)  # type: ignore[arg-type]
