"""The recorder's staging logs: open logs kept between batches, under a cap, closed before they are unlinked."""

from __future__ import annotations

from pathlib import Path

from fleet.recorder_staging import SegmentStaging
from fleet.transport import TRAJECTORIES, Record


def _append(staging: SegmentStaging, robot: str, episode: str, index: int) -> None:
    record = Record(TRAJECTORIES, 0, index, robot.encode(), f"{robot}/{episode}/{index}".encode())
    staging.append(record, segment_index=index, robot_id=robot, episode_id=episode, received_at=float(index))


def _values(staging: SegmentStaging, robot: str, episode: str) -> dict[int, bytes]:
    return {index: entry["value"] for index, entry in staging.load(robot, episode).items()}


def test_logs_past_the_open_cap_are_closed_and_reopened_without_losing_appends(tmp_path: Path) -> None:
    staging = SegmentStaging(tmp_path, max_open=2)
    episodes = [(f"r{i}", "ep-0") for i in range(5)]
    for index in range(3):  # a segment of every episode per batch, five logs through two open handles
        for robot, episode in episodes:
            _append(staging, robot, episode, index)
        staging.sync()
        assert len(staging._open) <= 2
    fresh = SegmentStaging(tmp_path)  # what a restarted recorder reads
    for robot, episode in episodes:
        assert _values(fresh, robot, episode) == {i: f"{robot}/{episode}/{i}".encode() for i in range(3)}
    assert sorted(fresh.episodes()) == sorted(episodes)
    staging.close()
    assert not staging._open


def test_a_released_log_can_be_unlinked_and_a_later_append_starts_a_new_one(tmp_path: Path) -> None:
    staging = SegmentStaging(tmp_path)
    _append(staging, "r0", "ep-0", 0)
    staging.sync()
    staging.release("r0", "ep-0")
    staging.path("r0", "ep-0").unlink()
    _append(staging, "r0", "ep-0", 1)  # a redelivered segment after the episode's log went: a log of its own
    staging.sync()
    assert _values(SegmentStaging(tmp_path), "r0", "ep-0") == {1: b"r0/ep-0/1"}


def test_buffered_appends_are_readable_before_the_sync(tmp_path: Path) -> None:
    staging = SegmentStaging(tmp_path)
    _append(staging, "r0", "ep-0", 0)
    assert _values(staging, "r0", "ep-0") == {0: b"r0/ep-0/0"}
    staging.remove("r0", "ep-0")
    assert not staging.exists("r0", "ep-0") and staging.episodes() == []
