"""The feature store's errors: one base class, one subclass per kind of problem.

Every error names the offending file or folder in ``.path`` and says how to fix it;
`scalevid.store.check.check_store` turns them into a list of `StoreProblem` instead of raising.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class StoreError(Exception):
    """Base of all feature-store errors. ``path`` names the offending file or directory."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class StoreNotFoundError(StoreError):
    """No store at the path: the directory or its manifest.json is missing."""


class StoreFormatError(StoreError):
    """manifest.json is unreadable, lacks a key, or has an unknown format version."""


class CorruptShardError(StoreError):
    """A shard file is missing, truncated, has the wrong shape/dtype, or fails its checksum."""


class StoreDataError(StoreError):
    """Invalid values: NaN/Inf features, boxes out of range, bad labels, duplicate video ids."""


class IncompatibleStoreError(StoreError):
    """A writer's manifest disagrees with the manifest already in the store."""


class StoreLockedError(StoreError):
    """Another process (another `extract` or `import` job) is writing the store."""


@dataclass(frozen=True)
class StoreProblem:
    """One problem found by `check_store`: the file it concerns and what is wrong + the fix."""

    path: Path
    message: str
    kind: str  # the StoreError subclass name, e.g. "CorruptShardError"
