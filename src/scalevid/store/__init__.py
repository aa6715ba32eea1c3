"""The feature store: the contract between extraction, training and evaluation.

One directory holds one split (docs/feature-store.md is the full format)::

    STORE/
      manifest.json                  Manifest: D, K, backbone, sampling, classes, ...,
                                     and the committed shards with their video counts
      shards/<name>/features.npy     (n, K, D) float16, memory-mapped by readers
      shards/<name>/boxes.npy        (n, K, 7) float32  [flip, t0, y0, x0, t1, y1, x1] in [0, 1]
      shards/<name>/num_clips.npy    (n,) int64          valid clips are rows [0, num_clips)
      shards/<name>/labels.npy       (n,) int64          -1 = unlabelled
      shards/<name>/targets.npy      (n,) float32        optional, NaN = missing
      shards/<name>/shard.json       count, video_ids, paths, per-file bytes + crc32
      failures.jsonl                 videos the importer had to skip (importer only)

Writers (one per process, each with its own shard prefix) build a shard in
``shards/.tmp-<name>-<pid>``, rename it into place when it is complete, then commit it to the
manifest's shard list, so a reader never trusts half a shard and notices a deleted one. One
writing job at a time holds an OS lock on ``STORE/.writer.lock`` (`StoreLock`); the ranks of one
torchrun job share their launcher's lock. The global video order is shards sorted by name, rows
in order. Opening a store verifies every file's crc32 unless the caller opts out
(docs/reliability.md).

Modules, each importing only those above it:

    errors.py    StoreError and its subclasses; StoreProblem (one finding of check_store)
    layout.py    the names of the files and folders above
    files.py     bytes on disk: crc32, .npy headers, fsync_path
    manifest.py  Manifest and manifest.json: read, create once, commit the shard list
    lock.py      StoreLock, the one-writing-job lock
    shards.py    one shard folder: shard.json, its files opened with the structural checks
    check.py     every problem finder, scan_store, check_store
    reader.py    FeatureStore, the read-only view
    writer.py    StoreWriter, reconcile_shards, upgrade_store
    summary.py   format_store_summary (``scalevid store info``)
    importer.py  import_npy_folder (``scalevid import``), not imported here
"""

from scalevid.store.check import check_store
from scalevid.store.errors import (
    CorruptShardError,
    IncompatibleStoreError,
    StoreDataError,
    StoreError,
    StoreFormatError,
    StoreLockedError,
    StoreNotFoundError,
    StoreProblem,
)
from scalevid.store.files import fsync_path
from scalevid.store.layout import (
    BOX_FIELDS,
    COMMIT_LOCK_FILE,
    FAILURES_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    OPTIONAL_SHARD_FILES,
    REQUIRED_SHARD_FILES,
    SHARD_FILE,
    SHARDS_DIR,
)
from scalevid.store.lock import StoreLock
from scalevid.store.manifest import FORMAT_VERSION, READABLE_VERSIONS, Manifest
from scalevid.store.reader import FeatureStore
from scalevid.store.summary import format_store_summary
from scalevid.store.writer import StoreWriter, reconcile_shards, upgrade_store

__all__ = [
    "BOX_FIELDS",
    "COMMIT_LOCK_FILE",
    "FAILURES_FILE",
    "FORMAT_VERSION",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "OPTIONAL_SHARD_FILES",
    "READABLE_VERSIONS",
    "REQUIRED_SHARD_FILES",
    "SHARDS_DIR",
    "SHARD_FILE",
    "CorruptShardError",
    "FeatureStore",
    "IncompatibleStoreError",
    "Manifest",
    "StoreDataError",
    "StoreError",
    "StoreFormatError",
    "StoreLock",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreProblem",
    "StoreWriter",
    "check_store",
    "format_store_summary",
    "fsync_path",
    "reconcile_shards",
    "upgrade_store",
]
