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

from sqlalchemy import insert, select, tuple_
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


@dataclass(frozen=True)
class FinishedEpisode:
    """An episode now in the episode store: its metadata, its segments and where the store holds it."""

    meta: EpisodeMeta
    rows: Sequence[SegmentRow]
    store_path: str


class EpisodeIndex(Protocol):
    """Where the recorder puts metadata (the DB in production; a fake in unit tests)."""

    def segments_received(self, rows: Sequence[SegmentRow]) -> None: ...

    def episodes_finished(self, finished: Sequence[FinishedEpisode]) -> None: ...


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _episodes(session: Session, rows: Sequence[SegmentRow]) -> dict[tuple[str, str], Episode]:
    """Get or create the robot and episode rows of `rows`' segments, in a few statements for the whole batch."""
    first: dict[str, SegmentRow] = {}
    last_seen: dict[str, float] = {}
    for row in rows:
        first.setdefault(row.robot_id, row)
        last_seen[row.robot_id] = max(last_seen.get(row.robot_id, row.received_at), row.received_at)
    robots = {r.id: r for r in session.scalars(select(Robot).where(Robot.id.in_(list(first))))}
    for robot_id, row in first.items():
        robot = robots.get(robot_id)
        if robot is None:
            robot = Robot(id=robot_id, embodiment=row.embodiment, task=row.task)
            session.add(robot)
        robot.last_seen_at = _ts(last_seen[robot_id])
    firsts = {(row.robot_id, row.episode_id): row for row in reversed(rows)}  # each episode's first row
    found = session.scalars(select(Episode).where(tuple_(Episode.robot_id, Episode.episode_id).in_(list(firsts))))
    episodes = {(e.robot_id, e.episode_id): e for e in found}
    new = [
        Episode(
            robot_id=row.robot_id,
            episode_id=row.episode_id,
            embodiment=row.embodiment,
            task=row.task,
            instruction=row.instruction,
            model_version=row.model_version,
            started_at=_ts(row.received_at),
        )
        for key, row in firsts.items()
        if key not in episodes
    ]
    if new:
        session.add_all(new)
        session.flush()  # their ids, in one multi-row insert
        episodes.update({(e.robot_id, e.episode_id): e for e in new})
    return episodes


def record_segments(session: Session, *, rows: Sequence[SegmentRow]) -> int:
    """Index received segments (idempotent on robot, episode, segment); returns rows inserted.

    A handful of statements per call, however many rows: a polled batch of a 1,000-robot fleet holds segments of
    hundreds of episodes, and a query per segment made the database the recorder's main cost."""
    return _index_segments(session, rows)[1] if rows else 0


def _index_segments(session: Session, rows: Sequence[SegmentRow]) -> tuple[dict[tuple[str, str], Episode], int]:
    """`record_segments` for non-empty `rows`; also returns their episodes' rows by (robot, episode)."""
    episodes = _episodes(session, rows)
    pks = {key: episode.id for key, episode in episodes.items()}
    found = session.execute(
        select(Segment.episode_pk, Segment.segment_index).where(Segment.episode_pk.in_(list(pks.values())))
    )
    have = {(pk, index) for pk, index in found}
    values = []
    for row in rows:
        key = (pks[(row.robot_id, row.episode_id)], row.segment_index)
        if key in have:
            continue
        have.add(key)
        values.append(
            {
                "episode_pk": key[0],
                "robot_id": row.robot_id,
                "segment_index": row.segment_index,
                "num_steps": row.num_steps,
                "interventions": row.interventions,
                "model_version": row.model_version,
                "kafka_partition": row.kafka_partition,
                "kafka_offset": row.kafka_offset,
                "received_at": _ts(row.received_at),
            }
        )
    if values:
        session.execute(insert(Segment), values)
    return episodes, len(values)


def record_episodes_meta(session: Session, finished: Sequence[FinishedEpisode]) -> None:
    """Mark episodes complete (idempotent): their segments, length, outcome and where the store holds them."""
    if not finished:
        return
    episodes, _ = _index_segments(session, [row for f in finished for row in f.rows])  # every episode has a row
    for f in finished:
        episode, meta = episodes[(f.meta.robot_id, f.meta.episode_id)], f.meta
        episode.model_version = meta.model_version
        episode.length = meta.length
        episode.success = meta.success
        episode.interventions = meta.interventions
        episode.missed_ticks = meta.missed_ticks
        episode.source = meta.source
        episode.store_path = f.store_path
        if episode.ended_at is None:
            episode.ended_at = _ts(max(r.received_at for r in f.rows))


class SqlEpisodeIndex:
    """`EpisodeIndex` on the fleet database: one transaction per call."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def segments_received(self, rows: Sequence[SegmentRow]) -> None:
        with self._sessions.begin() as session:
            record_segments(session, rows=rows)

    def episodes_finished(self, finished: Sequence[FinishedEpisode]) -> None:
        with self._sessions.begin() as session:  # one transaction for every episode a polled batch finished
            record_episodes_meta(session, finished)
