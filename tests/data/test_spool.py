"""Disk spool: FIFO across segment files, bounded, fsync'd, survives a restart and a torn tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.transport import DiskSpool


def _drain(spool: DiskSpool) -> list[bytes]:
    out: list[bytes] = []
    while (segment := spool.oldest()) is not None:
        records = spool.read(segment)
        out.extend(records)
        spool.remove(segment, len(records))
    return out


def test_fifo_across_rolled_segments(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    payloads = [f"message-{i}".encode() * 10 for i in range(100)]
    assert spool.append_many(payloads[:60]) == 60
    assert spool.append_many(payloads[60:]) == 40
    assert len(list(tmp_path.glob("spool-*.log"))) > 5
    assert spool.records == 100
    assert _drain(spool) == payloads
    assert spool.records == 0 and spool.nbytes == 0
    assert not list(tmp_path.glob("spool-*.log"))


def test_bounded(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1000, segment_bytes=500)
    assert spool.append_many([b"x" * 92] * 20) == 10  # 8-byte frame header + 92 B payload each
    assert spool.append_many([b"y"]) == 0
    assert spool.nbytes == 1000


def test_survives_restart_and_skips_a_torn_tail(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.append_many([b"a", b"bb", b"ccc"])
    spool.close()
    segment = next(tmp_path.glob("spool-*.log"))
    with open(segment, "ab") as f:  # a crash in the middle of the next append
        f.write(b"\x10\x00\x00\x00\xde\xad")
    reopened = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert reopened.records == 3
    reopened.append_many([b"dddd"])  # goes to a new segment, after the recovered ones
    assert _drain(reopened) == [b"a", b"bb", b"ccc", b"dddd"]


def test_corrupt_record_stops_the_segment_read(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.append_many([b"first", b"second"])
    spool.close()
    segment = next(tmp_path.glob("spool-*.log"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF  # flip a bit of the second payload: its crc no longer matches
    segment.write_bytes(bytes(data))
    assert DiskSpool.read(segment) == [b"first"]


def test_one_producer_per_spool(tmp_path: Path) -> None:
    first = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    with pytest.raises(RuntimeError, match="in use by another producer"):
        DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    first.close()
    DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16).close()
