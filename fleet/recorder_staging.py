"""The recorder's staging area: segments of episodes in progress, durable before offsets are committed.

Layout: ``<staging>/<robot_id>/<episode_id>.seglog``, one append-only log per episode in progress.
Each record is framed ``<u32 length><u32 crc32><payload>`` (little-endian); the payload is a msgpack
map ``{topic, partition, offset, received_at, value}`` where `value` is the segment exactly as it
came off Kafka. Appends within a polled batch are buffered and made durable together by `sync()`
(one fsync per touched episode log, not per segment, issued concurrently: group commit). A torn tail left by a crash
fails its crc and is truncated on the next load; a segment staged twice keeps its first copy.
The log is deleted once its episode is in the episode store. A log stays open between batches (an episode gets
about one segment a batch, and opening its file for each was a good part of an append's cost), up to `max_open`
logs, the least recently appended closed first; `release` closes an episode's log before it is unlinked.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from fleet.transport import Record

log = logging.getLogger(__name__)
_HEADER = struct.Struct("<II")
_SUFFIX = ".seglog"


class SegmentStaging:
    """Per-episode append-only segment logs (see the module docstring for the format)."""

    def __init__(self, root: Path, *, max_open: int = 512) -> None:
        self.root = Path(root)
        self.max_open = max_open
        self._open: OrderedDict[str, BinaryIO] = OrderedDict()  # open logs, least recently appended first
        self._dirty: dict[str, BinaryIO] = {}  # logs appended to since the last sync
        self._dirs: set[str] = set()  # robot directories known to exist
        self._new_dirs: set[Path] = set()  # directories whose entries changed since the last sync
        self._pool: ThreadPoolExecutor | None = None  # fsync workers, started on first use

    def path(self, robot_id: str, episode_id: str) -> Path:
        return self.root / robot_id / f"{episode_id}{_SUFFIX}"

    def exists(self, robot_id: str, episode_id: str) -> bool:
        return self.path(robot_id, episode_id).exists()

    def append(self, record: Record, *, segment_index: int, robot_id: str, episode_id: str, received_at: float) -> None:
        """Buffer one segment for its episode's log; durable after the next `sync()`."""
        f = self._handle(robot_id, episode_id)
        payload = msgpack.packb(
            {
                "index": segment_index,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "received_at": received_at,
                "value": record.value,
            },
            use_bin_type=True,
        )
        f.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)

    def _name(self, robot_id: str, episode_id: str) -> str:
        """`path` as a string (the key of the open logs), without building a Path per segment."""
        return os.path.join(self.root, robot_id, episode_id + _SUFFIX)

    def _handle(self, robot_id: str, episode_id: str) -> BinaryIO:
        """The episode's log, open for appending (marked for the next sync)."""
        name = self._name(robot_id, episode_id)
        directory = os.path.dirname(name)
        f = self._open.get(name)
        if f is not None:
            self._open.move_to_end(name)
        else:
            if directory not in self._dirs:
                os.makedirs(directory, exist_ok=True)
                self._dirs.add(directory)
            if not os.path.exists(name):
                self._new_dirs.add(Path(directory))  # a new entry in it: fsync'd by the next sync
            f = self._open[name] = open(name, "ab")  # noqa: SIM115 - closed by release, remove, close or the cap
            while len(self._open) > self.max_open:
                oldest, handle = next(iter(self._open.items()))
                if oldest in self._dirty:
                    break  # appended in this batch: closed after the sync
                self._open.pop(oldest)
                handle.close()
        self._dirty[name] = f
        return f

    def sync(self) -> None:
        """Make every buffered append durable (fsync each touched log, then new directory entries).

        The fsyncs run concurrently: the filesystem folds them into one journal commit, several times
        faster than one after another (measured here: 8 logs in ~2-6 ms instead of ~22 ms).
        """
        files = list(self._dirty.values())
        for f in files:
            f.flush()
        self._fsync_all([f.fileno() for f in files])
        self._dirty.clear()
        while len(self._open) > self.max_open:  # past the cap while a batch held them all
            self._open.popitem(last=False)[1].close()
        dirs = {d for directory in self._new_dirs for d in (directory, directory.parent)}
        fds = [os.open(d, os.O_RDONLY) for d in dirs]
        try:
            self._fsync_all(fds)
        finally:
            for fd in fds:
                os.close(fd)
        self._new_dirs.clear()

    def _fsync_all(self, fds: list[int]) -> None:
        if len(fds) <= 1:
            for fd in fds:
                os.fsync(fd)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="staging-fsync")
        list(self._pool.map(os.fsync, fds))  # re-raises the first OSError

    def close(self) -> None:
        self.sync()
        for f in self._open.values():
            f.close()
        self._open.clear()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def load(self, robot_id: str, episode_id: str) -> dict[int, dict[str, Any]]:
        """Staged segments of an episode by index (first copy wins); truncates a torn tail."""
        path = self.path(robot_id, episode_id)
        if (f := self._open.get(self._name(robot_id, episode_id))) is not None:  # buffered appends must be readable
            f.flush()
        if not path.exists():
            return {}
        data = path.read_bytes()
        out: dict[int, dict[str, Any]] = {}
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                break
            entry = msgpack.unpackb(payload, raw=False)
            out.setdefault(int(entry["index"]), entry)
            pos += _HEADER.size + length
        if pos < len(data):
            log.warning("staging %s: %d B torn tail after a crash; truncating", path, len(data) - pos)
            with open(path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
        return out

    def episodes(self) -> list[tuple[str, str]]:
        """(robot_id, episode_id) of every episode with staged segments."""
        if not self.root.exists():
            return []
        return sorted((p.parent.name, p.name[: -len(_SUFFIX)]) for p in self.root.glob(f"*/*{_SUFFIX}"))

    def release(self, robot_id: str, episode_id: str) -> None:
        """Close the episode's log (synced before: its episode is stored), so that it can be unlinked."""
        name = self._name(robot_id, episode_id)
        self._dirty.pop(name, None)
        f = self._open.pop(name, None)
        if f is not None:
            f.close()

    def remove(self, robot_id: str, episode_id: str) -> None:
        self.release(robot_id, episode_id)
        self.path(robot_id, episode_id).unlink(missing_ok=True)
