"""The names of a store's files and folders, and of the columns of its boxes.

``scalevid/store/__init__.py`` draws the whole layout; these constants spell it once.
"""

from __future__ import annotations

MANIFEST_FILE = "manifest.json"
SHARDS_DIR = "shards"
SHARD_FILE = "shard.json"
FAILURES_FILE = "failures.jsonl"
LOCK_FILE = ".writer.lock"  # held (flock) by the one job writing the store
COMMIT_LOCK_FILE = ".commit.lock"  # held briefly by a writer updating manifest.json's shard list
BOX_FIELDS = ("flip", "t0", "y0", "x0", "t1", "y1", "x1")
REQUIRED_SHARD_FILES = ("features.npy", "boxes.npy", "num_clips.npy", "labels.npy")
OPTIONAL_SHARD_FILES = ("targets.npy",)
