"""manifest.json: what every shard of a store shares, and the list of committed shards.

`Manifest` is the parsed file. A writer creates it once (`write_manifest_if_absent`) and
commits each finished shard to its shard list (`update_manifest_shards`); every reader starts
with `read_manifest`.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalevid import __version__
from scalevid.outfiles import create_new, open_lock_file, reraise_if_full
from scalevid.store.errors import StoreFormatError, StoreNotFoundError
from scalevid.store.files import fsync_path
from scalevid.store.layout import COMMIT_LOCK_FILE, MANIFEST_FILE

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: manifest.json lists the committed shards; 1 is still read
READABLE_VERSIONS = (1, 2)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """What every shard of a store shares; saved as manifest.json.

    ``sampling`` says how clips were drawn, e.g. ``{"mode": "train", "passes": 1}`` or
    ``{"mode": "test", "temporal_views": 4, "spatial_views": 3}``. An empty ``class_names``
    means the class names are unknown (labels are then only checked to be >= -1).

    ``shards`` is the store's commit record: shard name -> ``{"videos": n, "crc32": c}`` (c is
    the crc32 of its shard.json). Writers maintain it; a writer's own manifest leaves it None.
    Stores of format version 1 have none (None): they open, but a deleted shard cannot be
    noticed until ``scalevid store upgrade`` (or the next extract/import into them) lists them.
    """

    dim: int  # D, feature size
    clips_per_video: int  # K, rows per video (padded)
    backbone: str
    sampling: dict[str, Any]
    dataset: str
    preprocessing: dict[str, Any] = field(default_factory=dict)
    clip_frames: int | None = None
    clip_stride: int | None = None
    class_names: list[str] = field(default_factory=list)
    created: str = field(default_factory=_now)
    scalevid_version: str = __version__
    format_version: int = FORMAT_VERSION
    shards: dict[str, dict[str, int]] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.shards is not None and not (
            isinstance(self.shards, dict)
            and all(
                isinstance(v, dict)
                and {"videos", "crc32"} <= set(v)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in v.values())
                for v in self.shards.values()
            )
        ):
            problems.append('shards must map shard names to {"videos": int, "crc32": int}')
        for name in ("dim", "clips_per_video"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive int, got {value!r}")
        for name in ("clip_frames", "clip_stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"{name} must be an int or null, got {value!r}")
        if not isinstance(self.backbone, str) or not self.backbone:
            problems.append(f"backbone must be a non-empty string, got {self.backbone!r}")
        if not isinstance(self.sampling, dict) or not isinstance(self.sampling.get("mode"), str):
            problems.append(f'sampling must be a dict with a "mode" string, got {self.sampling!r}')
        if not isinstance(self.preprocessing, dict):
            problems.append(f"preprocessing must be a dict, got {self.preprocessing!r}")
        if not isinstance(self.dataset, str):
            problems.append(f"dataset must be a string, got {self.dataset!r}")
        names = self.class_names
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append("class_names must be a list of strings")
        elif len(set(names)) != len(names):
            problems.append("class_names has duplicates")
        if problems:
            raise StoreFormatError("invalid manifest: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        """Number of class names (0 when unknown)."""
        return len(self.class_names)

    @property
    def num_videos(self) -> int | None:
        """Videos in the committed shards (None for a format-1 store, which does not record it)."""
        return None if self.shards is None else sum(v["videos"] for v in self.shards.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every field (the manifest.json content), format_version first."""
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        return {"format_version": data.pop("format_version"), **data}

    @classmethod
    def from_dict(cls, data: Any, *, source: str | os.PathLike[str] | None = None) -> Manifest:
        """Parse a manifest dict; raise StoreFormatError on a missing key or wrong version."""
        where = f"{source}: " if source is not None else ""
        if not isinstance(data, dict):
            raise StoreFormatError(f"{where}manifest must be a JSON object", path=source)
        if "format_version" not in data:
            raise StoreFormatError(
                f"{where}missing key 'format_version'; this is not a scalevid feature store "
                "manifest (see docs/feature-store.md)",
                path=source,
            )
        if data["format_version"] not in READABLE_VERSIONS:
            raise StoreFormatError(
                f"{where}store format version {data['format_version']!r}, but scalevid "
                f"{__version__} reads versions {list(READABLE_VERSIONS)}; use the scalevid "
                "version that wrote it or re-extract the features",
                path=source,
            )
        keys = [f.name for f in dataclasses.fields(cls)]
        optional = {"shards"} if data["format_version"] == 1 else set()
        missing = [k for k in keys if k not in data and k not in optional]
        if missing:
            raise StoreFormatError(
                f"{where}manifest lacks key(s) {missing}; every key of docs/feature-store.md "
                "is required",
                path=source,
            )
        unknown = sorted(set(data) - set(keys))
        if unknown:
            logger.debug("%signoring unknown manifest keys %s", where, unknown)
        try:
            return cls(**{k: data[k] for k in keys if k in data})
        except StoreFormatError as e:
            raise StoreFormatError(f"{where}{e}", path=source) from None


# Fields that must agree between a store and a writer adding to it.
_COMPATIBLE_FIELDS = (
    "format_version",
    "dim",
    "clips_per_video",
    "backbone",
    "preprocessing",
    "clip_frames",
    "clip_stride",
    "sampling",
    "dataset",
    "class_names",
)


def manifest_differences(store: Manifest, writer: Manifest) -> list[str]:
    """One "key: store has ..., writer has ..." line per compatible field that differs."""
    a, b = store.to_dict(), writer.to_dict()
    return [
        f"{k}: store has {a[k]!r}, writer has {b[k]!r}" for k in _COMPATIBLE_FIELDS if a[k] != b[k]
    ]


# What makes two stores' features the same kind of vector (a probe or a run trained on one
# reads the other): the backbone, its preprocessing, the clip length and the feature size.
FEATURE_IDENTITY_FIELDS = ("backbone", "preprocessing", "clip_frames", "clip_stride", "dim")


def feature_differences(named: dict[str, Manifest]) -> list[str]:
    """One "key: A has ..., B has ..." line per identity field that differs between the first
    manifest of `named` (name -> manifest) and any other."""
    (first, base), *others = named.items()
    return [
        f"{key}: {first} has {getattr(base, key)!r}, {name} has {getattr(other, key)!r}"
        for name, other in others
        for key in FEATURE_IDENTITY_FIELDS
        if getattr(base, key) != getattr(other, key)
    ]


def read_manifest(root: Path) -> Manifest:
    """Parse root/manifest.json; StoreNotFoundError or StoreFormatError say what is wrong."""
    if not root.is_dir():
        raise StoreNotFoundError(f"no feature store at {root}: directory does not exist", path=root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise StoreNotFoundError(
            f"{root} is not a feature store: {MANIFEST_FILE} is missing (write one with "
            "`scalevid extract` / `scalevid store import`, or see docs/feature-store.md)",
            path=path,
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreFormatError(
            f"{path}: cannot parse ({e}); restore it or re-run extraction into a fresh store",
            path=path,
        ) from None
    return Manifest.from_dict(data, source=path)


def write_manifest_if_absent(root: Path, manifest: Manifest) -> bool:
    """Atomically create root/manifest.json unless it exists; True when this call created it."""
    target = root / MANIFEST_FILE
    text = json.dumps(manifest.to_dict(), indent=2) + "\n"
    tmp = root / f".{MANIFEST_FILE}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with create_new(tmp) as f:
        f.write(text.encode())
    try:
        os.link(tmp, target)  # fails if target exists: atomic create-if-absent, complete content
        return True
    except FileExistsError:
        return False
    except OSError:  # file systems without hard links
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def update_manifest_shards(
    root: Path, *, add: dict[str, dict[str, int]] | None = None, remove: Sequence[str] = ()
) -> Manifest:
    """Commit shards to (or drop them from) manifest.json's shard list, atomically.

    Writers of one job (torchrun ranks) commit concurrently, so the read-modify-write runs under
    a short flock on STORE/.commit.lock; manifest.json is replaced by rename, so a reader sees
    the old or the new list, never half of one. A format-1 manifest becomes format 2 here.
    """
    fd = open_lock_file(root / COMMIT_LOCK_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        manifest = read_manifest(root)
        shards = dict(manifest.shards or {})
        for name in remove:
            shards.pop(name, None)
        shards.update(add or {})
        manifest = dataclasses.replace(
            manifest, shards=dict(sorted(shards.items())), format_version=FORMAT_VERSION
        )
        target = root / MANIFEST_FILE
        tmp = root / f".{MANIFEST_FILE}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with create_new(tmp) as f:
                f.write((json.dumps(manifest.to_dict(), indent=2) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            reraise_if_full(e, target)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        fsync_path(root)
        return manifest
    finally:
        os.close(fd)
