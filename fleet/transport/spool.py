"""Disk spool: where a producer's messages wait while the broker is unreachable.

Layout: ``<dir>/spool-<seq:012d>.log`` segment files, appended in order, each record framed as
``<u32 length><u32 crc32><payload>`` (little-endian). Appends are fsync'd per batch, so a message
the producer thread spooled survives a crash or power loss. Replay reads the oldest closed segment
and deletes it only once every record in it is acknowledged: a crash mid-replay resends that
segment (consumers are idempotent), never loses it. A torn tail (crash during an append) fails its
crc and is skipped with a warning. The spool is bounded (`max_bytes`, `FLEET_SPOOL_MAX_BYTES`); past
that, appends are refused. A failed write (disk full) is cut back to the last whole record and a
failed fsync to the last fsync; the segment is then closed, the rest of the batch refused with an
error, and the spool stays readable (nothing is ever appended after a partial record).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from fleet.durable import fsync_path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_PREFIX, _SUFFIX = "spool-", ".log"


class Spool(Protocol):
    """What the producer needs of a spool; `token` names one replayable unit (a segment)."""

    @property
    def records(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def append_many(self, payloads: list[bytes]) -> int: ...

    def oldest(self) -> Any: ...

    def read(self, token: Any) -> list[bytes | SpoolDamage]: ...

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
        self._file: BinaryIO | None = None  # unbuffered: a failed write is seen at once, not at a later flush
        self._pos = 0  # bytes in the active segment
        self._synced_pos = 0  # ... of which fsync'd
        self._unsynced = 0  # records appended to the active segment since its last fsync
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
        """Append records in order and fsync once; returns how many are durably spooled (the rest are refused:
        over `max_bytes`, or the disk refused a write or fsync)."""
        written = 0
        error: OSError | None = None
        try:
            for payload in payloads:
                size = _HEADER.size + len(payload)
                if self._bytes + size > self.max_bytes:
                    break
                if self._file is None or self._pos + size > self.segment_bytes:
                    self._roll()
                assert self._file is not None
                try:
                    self._write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
                except OSError as e:  # e.g. disk full: cut the partial record; the whole ones before it stay
                    error = e
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._file.fileno(), self._pos)
                    break
                self._pos += size
                self._bytes += size
                self._records += 1
                self._unsynced += 1
                written += 1
            self._sync()
        except OSError as e:  # an fsync (or roll) failed: what was not synced may be lost, whatever a retry says
            error = e
            written -= self._drop_unsynced()
        if error is not None:
            self._abandon_active()  # never append after a failure: the next record starts a new segment
            log.error(
                "spool %s cannot write (%s): %d of %d messages spooled, the rest refused; the spool stays readable",
                self.directory, error, written, len(payloads),
            )  # fmt: skip
        return written

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:  # an unbuffered write may be short (the disk filling up); the next one then raises
            n = self._file.write(view)
            if not n:
                raise OSError(errno.ENOSPC, "short write")
            view = view[n:]

    def _sync(self) -> None:
        if self._file is not None and self._unsynced:
            os.fsync(self._file.fileno())
            self._synced_pos, self._unsynced = self._pos, 0

    def _drop_unsynced(self) -> int:
        """Cut the active segment back to its last fsync; returns how many records that removed."""
        lost = self._unsynced
        if self._file is not None and lost:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._synced_pos)
        self._records -= lost
        self._bytes -= self._pos - self._synced_pos
        self._pos, self._unsynced = self._synced_pos, 0
        return lost

    def _abandon_active(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file, self._active = None, None
        self._pos = self._synced_pos = self._unsynced = 0

    def oldest(self) -> Path | None:
        """Oldest segment ready for replay (closes the active one if it is the only one left)."""
        if not self._segments:
            return None
        if self._segments[0] == self._active:
            self._close_active()
        return self._segments[0]

    @staticmethod
    def read(path: Path) -> list[bytes | SpoolDamage]:
        """Records of one segment, in order. A damaged span (a record whose crc fails, a torn tail) comes back as one
        `SpoolDamage` in its place and the records after it are kept: reading goes on at the next whole record."""
        data = path.read_bytes()
        out: list[bytes | SpoolDamage] = []
        pos = 0
        while pos < len(data):
            if _record_at(data, pos):
                length, _ = _HEADER.unpack_from(data, pos)
                out.append(data[pos + _HEADER.size : pos + _HEADER.size + length])
                pos += _HEADER.size + length
                continue
            resume = _next_record(data, pos)
            what = "a torn tail (a crash during an append?)" if resume == len(data) else "a corrupt record"
            reason = (
                f"spool {path.name}: {what} at byte {pos}, {resume - pos} B that fail their crc; skipped, "
                f"{'nothing follows' if resume == len(data) else f'reading goes on at byte {resume}'}"
            )
            log.warning("%s", reason)
            out.append(SpoolDamage(data[pos:resume], reason))
            pos = resume
        return out

    def remove(self, path: Path, records: int) -> None:
        """Delete a fully replayed segment."""
        size = path.stat().st_size
        path.unlink()
        self._segments.remove(path)
        self._bytes -= size
        self._records -= records
        fsync_path(self.directory)

    def close(self) -> None:
        self._close_active()
        self._lock_file.close()  # releases the flock

    def _roll(self) -> None:
        self._close_active()
        last = int(self._segments[-1].name[len(_PREFIX) : -len(_SUFFIX)]) if self._segments else 0
        path = self.directory / f"{_PREFIX}{last + 1:012d}{_SUFFIX}"
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open across appends, closed in _close_active
        self._active = path
        self._pos = self._synced_pos = 0
        self._segments.append(path)
        fsync_path(self.directory)

    def _close_active(self) -> None:
        if self._file is not None:
            self._sync()
            self._file.close()
        self._file = None
        self._active = None


@dataclass(frozen=True)
class SpoolDamage:
    """Bytes of a spool segment that are no whole record (their crc fails): replay sends them to the dead-letter
    topic with `reason` instead of dropping the segment's rest."""

    data: bytes
    reason: str


def _record_at(data: bytes, pos: int) -> bool:
    """Whether a whole record (header, payload, matching crc) starts at `pos`."""
    if pos + _HEADER.size > len(data):
        return False
    length, crc = _HEADER.unpack_from(data, pos)
    end = pos + _HEADER.size + length
    return end <= len(data) and zlib.crc32(data[pos + _HEADER.size : end]) == crc


def _next_record(data: bytes, pos: int) -> int:
    """Where reading resumes after a damaged record at `pos`: right after it when only its payload is damaged (its
    length still points at a whole record), else the first later offset where a whole record starts (a false match
    needs a 1 in 2^32 crc collision), else the end of the data."""
    if pos + _HEADER.size <= len(data):
        length, _ = _HEADER.unpack_from(data, pos)
        after = pos + _HEADER.size + length
        if after < len(data) and _record_at(data, after):
            return after
    for candidate in range(pos + 1, len(data) - _HEADER.size + 1):
        length, _ = _HEADER.unpack_from(data, candidate)
        if candidate + _HEADER.size + length <= len(data) and _record_at(data, candidate):
            return candidate
    return len(data)


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

    def read(self, token: list[bytes]) -> list[bytes | SpoolDamage]:
        return list(token)

    def remove(self, token: list[bytes], records: int) -> None:
        self._chunks.popleft()
        self.records -= records
        self.nbytes -= sum(len(p) for p in token)

    def close(self) -> None:
        pass
