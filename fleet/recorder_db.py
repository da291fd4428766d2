"""The recorder's database writes: robots, episodes and segments rows (models in `fleet.db`).

Every write is idempotent, so a redelivered segment or a re-finalized episode (recorder restart)
leaves the same rows. An episode row appears with its first segment (`ended_at` NULL: in progress)
and is completed, with length / success / interventions / store path, once the episode is in the
episode store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
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

    def is_finished(self, robot_id: str, episode_id: str) -> bool:
        """Whether `episodes_finished` has completed the episode's row."""
        ...


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _insert_new(session: Session, model: type[Robot | Episode | Segment], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` into `model`'s table, skipping any another writer put there meanwhile (ON CONFLICT DO NOTHING:
    two recorders during a rebalance). Core, executemany: rows the caller found missing, no ORM objects, and no
    RETURNING (which makes one statement of thousands of placeholders that the driver parses again every batch)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise ValueError(f"the recorder's index needs PostgreSQL or SQLite, not {dialect}")
    table = cast(Table, model.__table__)
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    session.connection().execute(insert.on_conflict_do_nothing(), rows)


def _episode_pks(session: Session, rows: Sequence[SegmentRow]) -> dict[tuple[str, str], int]:
    """Insert the robot and episode rows `rows`' segments need, unless there (a few statements for the whole batch:
    a polled batch of a 1,000-robot fleet holds segments of hundreds of episodes); their episodes' primary keys.

    A robot row is only ever inserted here (its state and last sighting are the heartbeats' to keep, and the
    recorder's database role may not update it); a robot is first seen when its first segment arrived."""
    robots = {row.robot_id: row for row in reversed(rows)}  # each robot's first row
    known = set(session.scalars(select(Robot.id).where(Robot.id.in_(list(robots)))))
    _insert_new(session, Robot, [
        {"id": r.robot_id, "embodiment": r.embodiment, "task": r.task, "last_seen_at": _ts(r.received_at)}
        for robot_id, r in sorted(robots.items()) if robot_id not in known
    ])  # fmt: skip
    firsts = {(row.robot_id, row.episode_id): row for row in reversed(rows)}  # each episode's first row
    keys = tuple_(Episode.robot_id, Episode.episode_id)
    pks = {(r, e): pk for pk, r, e in session.execute(select(Episode.id, Episode.robot_id, Episode.episode_id)
                                                       .where(keys.in_(list(firsts))))}  # fmt: skip
    missing = sorted(key for key in firsts if key not in pks)
    if missing:
        _insert_new(session, Episode, [
            {"robot_id": r.robot_id, "episode_id": r.episode_id, "embodiment": r.embodiment, "task": r.task,
             "instruction": r.instruction, "model_version": r.model_version, "started_at": _ts(r.received_at)}
            for r in (firsts[key] for key in missing)
        ])  # fmt: skip
        found = session.execute(select(Episode.id, Episode.robot_id, Episode.episode_id).where(keys.in_(missing)))
        pks.update({(r, e): pk for pk, r, e in found})
    return pks


def record_segments(session: Session, *, rows: Sequence[SegmentRow]) -> int:
    """Index received segments (idempotent on robot, episode, segment); returns how many it found missing."""
    return _index_segments(session, rows)[1] if rows else 0


def _index_segments(session: Session, rows: Sequence[SegmentRow]) -> tuple[dict[tuple[str, str], int], int]:
    """`record_segments` for non-empty `rows`; also returns their episodes' primary keys by (robot, episode)."""
    pks = _episode_pks(session, rows)
    found = session.execute(
        select(Segment.episode_pk, Segment.segment_index).where(Segment.episode_pk.in_(set(pks.values())))
    )
    have = {(pk, index) for pk, index in found}
    new = {
        key: row
        for row in reversed(rows)  # a segment twice in `rows`: its first copy
        if (key := (pks[(row.robot_id, row.episode_id)], row.segment_index)) not in have
    }
    _insert_new(session, Segment, [
        {
            "episode_pk": pk,
            "robot_id": row.robot_id,
            "segment_index": row.segment_index,
            "num_steps": row.num_steps,
            "interventions": row.interventions,
            "model_version": row.model_version,
            "kafka_partition": row.kafka_partition,
            "kafka_offset": row.kafka_offset,
            "received_at": _ts(row.received_at),
        }
        for (pk, _), row in sorted(new.items())  # in key order: two writers lock rows in the same order
    ])  # fmt: skip
    return pks, len(new)


def record_episodes_meta(session: Session, finished: Sequence[FinishedEpisode]) -> None:
    """Mark episodes complete (idempotent): their segments, length, outcome and where the store holds them."""
    if not finished:
        return
    pks, _ = _index_segments(session, [row for f in finished for row in f.rows])  # every episode has a row
    complete = (
        update(Episode)
        .where(Episode.id == bindparam("pk"))
        .values(
            model_version=bindparam("version"),
            length=bindparam("steps"),
            success=bindparam("ok"),
            interventions=bindparam("taken_over"),
            missed_ticks=bindparam("missed"),
            source=bindparam("origin"),
            store_path=bindparam("path"),
            ended_at=func.coalesce(Episode.ended_at, bindparam("ended")),
        )  # fmt: skip
    )
    session.connection().execute(
        complete,
        [
            {"pk": pks[(f.meta.robot_id, f.meta.episode_id)], "version": f.meta.model_version,
             "steps": f.meta.length, "ok": f.meta.success, "taken_over": f.meta.interventions,
             "missed": f.meta.missed_ticks, "origin": f.meta.source, "path": f.store_path,
             "ended": _ts(max(r.received_at for r in f.rows))}
            for f in sorted(finished, key=lambda f: pks[(f.meta.robot_id, f.meta.episode_id)])
        ],
    )  # fmt: skip


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

    def is_finished(self, robot_id: str, episode_id: str) -> bool:
        with self._sessions() as session:
            ended = session.scalar(
                select(Episode.ended_at).where(Episode.robot_id == robot_id, Episode.episode_id == episode_id)
            )
        return ended is not None
