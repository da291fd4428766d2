"""Writes that survive a crash or a power loss: a file replaced whole, and its directory entry on disk.

atomic_write(path, data)   # a reader finds the old content or the new one, never a mix; on disk when it returns
fsync_path(directory)      # a file's contents, or a directory's entries, flushed to the disk
fsync_tree(directory)      # every file under it, then every directory bottom-up
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's contents (a directory: its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """fsync every file under `directory`, then every directory bottom-up (so each new entry is on disk too)."""
    for parent, _dirs, files in os.walk(directory, topdown=False):
        for name in files:
            fsync_path(Path(parent, name))
        fsync_path(Path(parent))


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash or a power loss leaves the old or the new content, on disk."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
