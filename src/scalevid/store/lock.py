"""StoreLock: at most one job writes a store (or trains a run folder) at a time: an OS lock on
its .writer.lock."""

from __future__ import annotations

import fcntl
import os
import weakref
from pathlib import Path

from scalevid.outfiles import open_lock_file
from scalevid.store.errors import StoreLockedError
from scalevid.store.layout import LOCK_FILE

_HELD: weakref.WeakSet[StoreLock] = weakref.WeakSet()


def _forget_in_child() -> None:
    """A forked child (a decode worker) closes its copy of every held lock: a flock lives as
    long as any copy of its descriptor, so an orphaned worker would keep a killed job's lock."""
    for lock in list(_HELD):
        if lock._fd is not None:
            os.close(lock._fd)
            lock._fd = None


os.register_at_fork(after_in_child=_forget_in_child)

STORE_REFUSAL = (
    "{path} is being written by another process (pid {pid}, lock {lock}); wait for it to "
    "finish, or write to another --out. Two writers on one store would store videos twice and "
    "remove each other's work"
)


class StoreLock:
    """The one-writing-job lock of a store: an exclusive ``fcntl.flock`` on STORE/.writer.lock.

    `acquire` fails at once (StoreLockedError naming the holder's pid) when another process
    holds it, so a second ``extract`` or ``import`` on the same store stops before touching
    anything. The OS drops the lock when the holder exits, also on ``kill -9``: a stale lock
    never needs deleting, and forked workers do not inherit it. Under torchrun one process takes
    it for the whole job and the ranks write with ``StoreWriter(..., lock=False)``. `refusal`
    is the error's text, with ``{path}``, ``{pid}`` and ``{lock}`` filled in (a run folder's
    lock says "being trained").
    """

    def __init__(self, path: str | os.PathLike[str], *, refusal: str = STORE_REFUSAL) -> None:
        self.path = Path(path)
        self.refusal = refusal
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> StoreLock:
        """Take the lock (a no-op when already held); StoreLockedError when another holds it."""
        if self._fd is not None:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        lock_file = self.path / LOCK_FILE
        fd = open_lock_file(lock_file)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                self.refusal.format(path=self.path, pid=holder, lock=lock_file), path=lock_file
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _HELD.add(self)
        return self

    def release(self) -> None:
        """Drop the lock (a no-op when not held)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
