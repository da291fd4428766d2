"""Disk spool: FIFO across segment files, bounded, fsync'd, survives a restart and a torn tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.transport import DiskSpool
from fleet.transport.spool import SpoolDamage


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
    assert reopened.records == 4  # three messages and the torn bytes (replay dead-letters them)
    reopened.append_many([b"dddd"])  # goes to a new segment, after the recovered ones
    drained = _drain(reopened)
    assert drained[:3] == [b"a", b"bb", b"ccc"] and drained[4:] == [b"dddd"]
    assert isinstance(drained[3], SpoolDamage) and drained[3].data == b"\x10\x00\x00\x00\xde\xad"
    assert "torn tail" in drained[3].reason and "byte 30" in drained[3].reason  # 9 + 10 + 11 B of the three records


def _damaged(tmp_path: Path, payloads: list[bytes], at: int) -> Path:
    """A closed segment of `payloads` with one byte flipped at offset `at`."""
    spool = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.append_many(payloads)
    spool.close()
    segment = next(tmp_path.glob("spool-*.log"))
    data = bytearray(segment.read_bytes())
    data[at] ^= 0xFF
    segment.write_bytes(bytes(data))
    return segment


def test_a_corrupt_record_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    """A record damaged in the middle of a segment loses that record only, whether its payload or its length is hit,
    and comes back as damage (with its bytes and why) where it was."""
    payloads = [f"record-{i}".encode() * (i + 1) for i in range(5)]
    starts = [sum(8 + len(p) for p in payloads[:i]) for i in range(5)]
    for name, at in (("payload", starts[1] + 8 + 3), ("length", starts[2])):
        directory = tmp_path / name
        read = DiskSpool.read(_damaged(directory, payloads, at))
        hit = 1 if name == "payload" else 2
        assert [r for r in read if not isinstance(r, SpoolDamage)] == payloads[:hit] + payloads[hit + 1 :]
        damage = read[hit]
        assert isinstance(damage, SpoolDamage) and len(read) == 5
        assert (
            damage.data
            == _damaged(tmp_path / f"{name}-again", payloads, at).read_bytes()[starts[hit] : starts[hit + 1]]
        )
        assert f"corrupt record at byte {starts[hit]}" in damage.reason and f"byte {starts[hit + 1]}" in damage.reason


def test_one_producer_per_spool(tmp_path: Path) -> None:
    first = DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    with pytest.raises(RuntimeError, match="in use by another producer"):
        DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    first.close()
    DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16).close()
