"""Bytes on disk: crc32 of a file, a .npy header read without its data, and fsync."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

_HASH_CHUNK_BYTES = 8 * 2**20  # per checksum thread


def file_crc32(path: Path) -> int:
    """The zlib crc32 of a whole file, read in bounded chunks."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(_HASH_CHUNK_BYTES):
            crc = zlib.crc32(block, crc)
    return crc


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    """(shape, dtype, data offset in bytes, fortran order) from a .npy header, not reading data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(shape), np.dtype(dtype), f.tell(), bool(fortran)


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
