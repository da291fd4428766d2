"""Disk spool: where a producer's messages wait while the broker is unreachable.

Layout: ``<dir>/spool-<seq:012d>.log`` segment files, appended in order, each record framed as
``<u32 length><u32 crc32><payload>`` (little-endian). Appends are fsync'd per batch, so a message
the producer thread spooled survives a crash or power loss. Replay reads the oldest closed segment
and deletes it only once every record in it is acknowledged: a crash mid-replay resends that
segment (consumers are idempotent), never loses it. A torn tail (crash during an append) fails its
crc and is skipped with a warning. The spool is bounded (`max_bytes`); past that, appends are refused.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO, Protocol

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_PREFIX, _SUFFIX = "spool-", ".log"


class Spool(Protocol):
    """What the producer needs of a spool; `token` names one replayable unit (a segment)."""

    @property
    def records(self) -> int: ...

    def append_many(self, payloads: list[bytes]) -> int: ...

    def oldest(self) -> Any: ...

    def read(self, token: Any) -> list[bytes]: ...

    def remove(self, token: Any, records: int) -> None: ...

    def close(self) -> None: ...


class DiskSpool:
    """Append-only, fsync'd, bounded FIFO of byte records in rolling segment files. One writer thread."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        # One producer per spool: two appending to the same files would interleave and lose order.
        self._lock_file = open(self.directory / ".lock", "a")  # noqa: SIM115 - held for the spool's lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(
                f"spool {self.directory} is in use by another producer: give each process its own spool"
                " (TransportConfig.from_settings(spool_name=...))"
            ) from None
        self._segments: list[Path] = sorted(self.directory.glob(f"{_PREFIX}*{_SUFFIX}"))
        self._records = sum(len(self.read(p)) for p in self._segments)  # recovered from a previous run
        self._bytes = sum(p.stat().st_size for p in self._segments)
        self._active: Path | None = None  # segment open for appends; never one left by a previous run
        self._file: BinaryIO | None = None
        if self._records:
            log.info(
                "spool %s holds %d messages (%d B) from a previous run", self.directory, self._records, self._bytes
            )

    @property
    def records(self) -> int:
        return self._records

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return self._records

    def append_many(self, payloads: list[bytes]) -> int:
        """Append records in order and fsync once; returns how many fit (the rest are refused)."""
        written = 0
        for payload in payloads:
            size = _HEADER.size + len(payload)
            if self._bytes + size > self.max_bytes:
                break
            if self._file is None or self._file.tell() + size > self.segment_bytes:
                self._roll()
            assert self._file is not None
            self._file.write(_HEADER.pack(len(payload), zlib.crc32(payload)))
            self._file.write(payload)
            self._bytes += size
            self._records += 1
            written += 1
        if written and self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        return written

    def oldest(self) -> Path | None:
        """Oldest segment ready for replay (closes the active one if it is the only one left)."""
        if not self._segments:
            return None
        if self._segments[0] == self._active:
            self._close_active()
        return self._segments[0]

    @staticmethod
    def read(path: Path) -> list[bytes]:
        """Records of one segment, in order; stops at a torn or corrupt tail."""
        data = path.read_bytes()
        out: list[bytes] = []
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                log.warning("spool %s: corrupt record at byte %d (torn write?); skipping the rest", path, pos)
                break
            out.append(payload)
            pos += _HEADER.size + length
        return out

    def remove(self, path: Path, records: int) -> None:
        """Delete a fully replayed segment."""
        size = path.stat().st_size
        path.unlink()
        self._segments.remove(path)
        self._bytes -= size
        self._records -= records
        _fsync_dir(self.directory)

    def close(self) -> None:
        self._close_active()
        self._lock_file.close()  # releases the flock

    def _roll(self) -> None:
        self._close_active()
        last = int(self._segments[-1].name[len(_PREFIX) : -len(_SUFFIX)]) if self._segments else 0
        path = self.directory / f"{_PREFIX}{last + 1:012d}{_SUFFIX}"
        self._file = open(path, "ab")  # noqa: SIM115 - kept open across appends, closed in _close_active
        self._active = path
        self._segments.append(path)
        _fsync_dir(self.directory)

    def _close_active(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        self._file = None
        self._active = None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MemorySpool:
    """Spool without a directory (spool_dir=None): same interface as DiskSpool, bounded, lost on exit."""

    def __init__(self, max_bytes: int) -> None:
        self._chunks: deque[list[bytes]] = deque()
        self.max_bytes = max_bytes
        self.records = 0
        self.nbytes = 0

    def append_many(self, payloads: list[bytes]) -> int:
        taken: list[bytes] = []
        for payload in payloads:
            if self.nbytes + len(payload) > self.max_bytes:
                break
            taken.append(payload)
            self.nbytes += len(payload)
        if taken:
            self._chunks.append(taken)
            self.records += len(taken)
        return len(taken)

    def oldest(self) -> list[bytes] | None:
        return self._chunks[0] if self._chunks else None

    def read(self, token: list[bytes]) -> list[bytes]:
        return token

    def remove(self, token: list[bytes], records: int) -> None:
        self._chunks.popleft()
        self.records -= records
        self.nbytes -= sum(len(p) for p in token)

    def close(self) -> None:
        pass
