"""The names of a store's files and folders, and of the columns of its boxes.

``scalevid/store/__init__.py`` draws the whole layout; these constants and the small functions
below spell it once: everything else builds and parses the names through them.
"""

from __future__ import annotations

import re

MANIFEST_FILE = "manifest.json"
SHARDS_DIR = "shards"
SHARD_FILE = "shard.json"
FAILURES_FILE = "failures.jsonl"
EXTRACT_CONFIG_FILE = "extract-config.json"  # the ExtractConfig that wrote the store
LOCK_FILE = ".writer.lock"  # held (flock) by the one job writing the store
COMMIT_LOCK_FILE = ".commit.lock"  # held briefly by a writer updating manifest.json's shard list

# The arrays of a shard, one .npy file each.
FEATURES_FILE = "features.npy"  # (n, K, D) float16
BOXES_FILE = "boxes.npy"  # (n, K, BOX_DIM) float32
NUM_CLIPS_FILE = "num_clips.npy"  # (n,) int64
LABELS_FILE = "labels.npy"  # (n,) int64
TARGETS_FILE = "targets.npy"  # (n,) float32, regression targets
REQUIRED_SHARD_FILES = (FEATURES_FILE, BOXES_FILE, NUM_CLIPS_FILE, LABELS_FILE)
OPTIONAL_SHARD_FILES = (TARGETS_FILE,)

BOX_FIELDS = ("flip", "t0", "y0", "x0", "t1", "y1", "x1")
BOX_DIM = len(BOX_FIELDS)  # the width of every boxes array

RANK_PREFIX = "r"  # shard prefixes of `scalevid extract`'s ranks: r000, r001, ...


def rank_prefix(rank: int) -> str:
    """The shard prefix of one extraction rank (its shards, its failures file)."""
    return f"{RANK_PREFIX}{rank:03d}"


def rank_failures_file(prefix: str) -> str:
    """One rank's failures file, merged into FAILURES_FILE at the end of an extraction."""
    return f"failures-{prefix}.jsonl"


RANK_FAILURES_GLOB = rank_failures_file(RANK_PREFIX + "*")


def shard_name(prefix: str, seq: int) -> str:
    """A shard folder's name: its writer's prefix and a sequence number."""
    return f"{prefix}-{seq:06d}"


def shard_seq(name: str, prefix: str) -> int | None:
    """The sequence number of a shard named by `shard_name(prefix, seq)`, else None."""
    match = re.fullmatch(rf"{re.escape(prefix)}-(\d+)", name)
    return int(match.group(1)) if match else None


def temp_shard_name(name: str, pid: int) -> str:
    """The hidden folder a shard is built in by process `pid` before its rename to `name`."""
    return f".tmp-{name}-{pid}"


def is_temp_shard(name: str, prefix: str) -> bool:
    """Whether `name` is a `temp_shard_name` of a shard with this prefix."""
    return re.fullmatch(rf"\.tmp-{re.escape(prefix)}-\d+-\d+", name) is not None
