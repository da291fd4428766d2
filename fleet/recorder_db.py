"""The recorder's database writes: robots, episodes and segments rows (models in `fleet.db`).

Every write is idempotent, so a redelivered segment or a re-finalized episode (recorder restart)
leaves the same rows. An episode row appears with its first segment (`ended_at` NULL: in progress)
and is completed, with length / success / interventions / store path, once the episode is in the
episode store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fleet.db.models import Episode, Robot, Segment
from fleet.episodes import EpisodeMeta


@dataclass(frozen=True)
class SegmentRow:
    """What the DB indexes about one received segment."""

    robot_id: str
    episode_id: str
    embodiment: str
    task: str
    instruction: str
    segment_index: int
    num_steps: int
    interventions: int  # steps a human drove in this segment
    model_version: str | None
    kafka_partition: int | None
    kafka_offset: int | None
    received_at: float  # unix seconds


class EpisodeIndex(Protocol):
    """Where the recorder puts metadata (the DB in production; a fake in unit tests)."""

    def segments_received(self, rows: Sequence[SegmentRow]) -> None: ...

    def episode_finished(self, meta: EpisodeMeta, rows: Sequence[SegmentRow], *, store_path: str) -> None: ...


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _episode(session: Session, row: SegmentRow) -> Episode:
    """Get or create the robot and episode rows a segment belongs to."""
    robot = session.get(Robot, row.robot_id)
    if robot is None:
        robot = Robot(id=row.robot_id, embodiment=row.embodiment, task=row.task)
        session.add(robot)
    robot.last_seen_at = _ts(row.received_at)
    episode = session.scalars(
        select(Episode).where(Episode.robot_id == row.robot_id, Episode.episode_id == row.episode_id)
    ).one_or_none()
    if episode is None:
        episode = Episode(
            robot_id=row.robot_id,
            episode_id=row.episode_id,
            embodiment=row.embodiment,
            task=row.task,
            instruction=row.instruction,
            model_version=row.model_version,
            started_at=_ts(row.received_at),
        )
        session.add(episode)
        session.flush()
    return episode


def record_segments(session: Session, *, rows: Sequence[SegmentRow]) -> int:
    """Index received segments (idempotent on robot, episode, segment); returns rows inserted."""
    inserted = 0
    episodes: dict[tuple[str, str], tuple[Episode, set[int]]] = {}
    for row in rows:
        key = (row.robot_id, row.episode_id)
        if key not in episodes:
            episode = _episode(session, row)
            have = set(session.scalars(select(Segment.segment_index).where(Segment.episode_pk == episode.id)))
            episodes[key] = (episode, have)
        episode, have = episodes[key]
        if row.segment_index in have:
            continue
        have.add(row.segment_index)
        session.add(
            Segment(
                episode_pk=episode.id,
                robot_id=row.robot_id,
                segment_index=row.segment_index,
                num_steps=row.num_steps,
                interventions=row.interventions,
                model_version=row.model_version,
                kafka_partition=row.kafka_partition,
                kafka_offset=row.kafka_offset,
                received_at=_ts(row.received_at),
            )
        )
        inserted += 1
    return inserted


def record_episode_meta(session: Session, *, meta: EpisodeMeta, rows: Sequence[SegmentRow], store_path: str) -> None:
    """Mark an episode complete (idempotent): its segments, length, outcome and where the store holds it."""
    record_segments(session, rows=rows)
    episode = session.scalars(
        select(Episode).where(Episode.robot_id == meta.robot_id, Episode.episode_id == meta.episode_id)
    ).one()
    episode.model_version = meta.model_version
    episode.length = meta.length
    episode.success = meta.success
    episode.interventions = meta.interventions
    episode.missed_ticks = meta.missed_ticks
    episode.source = meta.source
    episode.store_path = store_path
    if episode.ended_at is None:
        episode.ended_at = _ts(max(r.received_at for r in rows))


class SqlEpisodeIndex:
    """`EpisodeIndex` on the fleet database: one transaction per call."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def segments_received(self, rows: Sequence[SegmentRow]) -> None:
        with self._sessions.begin() as session:
            record_segments(session, rows=rows)

    def episode_finished(self, meta: EpisodeMeta, rows: Sequence[SegmentRow], *, store_path: str) -> None:
        with self._sessions.begin() as session:
            record_episode_meta(session, meta=meta, rows=rows, store_path=store_path)
