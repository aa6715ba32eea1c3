"""StoreLock: at most one job writes a store at a time (an OS lock on STORE/.writer.lock)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from scalevid.outfiles import open_lock_file
from scalevid.store.errors import StoreLockedError
from scalevid.store.layout import LOCK_FILE


class StoreLock:
    """The one-writing-job lock of a store: an exclusive ``fcntl.flock`` on STORE/.writer.lock.

    `acquire` fails at once (StoreLockedError naming the holder's pid) when another process
    holds it, so a second ``extract`` or ``import`` on the same store stops before touching
    anything. The OS drops the lock when the holder exits, also on ``kill -9``: a stale lock
    never needs deleting. Under torchrun one process takes it for the whole job and the ranks
    write with ``StoreWriter(..., lock=False)``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
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
                f"{self.path} is being written by another process (pid {holder}, lock "
                f"{lock_file}); wait for it to finish, or write to another --out. Two writers "
                "on one store would store videos twice and remove each other's work",
                path=lock_file,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
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
