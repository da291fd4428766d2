"""Typed SQLAlchemy models of everything fleet remembers outside Kafka and MLflow.

Kafka holds the raw stream, the episode store the arrays, MLflow the weights; the DB holds the
index and the decisions: which robots exist, which episodes and segments arrived, which corrections
were reviewed how, which model versions exist and where they are deployed, who did what (audit), who is
logged in (sessions).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Robot(Base):
    """A robot of the fleet (simulated or real), as last seen in its heartbeats."""

    __tablename__ = "robots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    embodiment: Mapped[str] = mapped_column(String(32))
    task: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="offline")  # acting / intervened / idle / paused / offline
    current_version: Mapped[str | None] = mapped_column(String(32))
    in_rotation: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]


class Episode(Base):
    """One episode of one robot, complete in the episode store once `ended_at` is set."""

    __tablename__ = "episodes"
    __table_args__ = (UniqueConstraint("robot_id", "episode_id", name="uq_episode_robot_episode"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    robot_id: Mapped[str] = mapped_column(ForeignKey("robots.id"), index=True)
    episode_id: Mapped[str] = mapped_column(String(64))
    embodiment: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(64), index=True)
    instruction: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(32), index=True)
    source: Mapped[str] = mapped_column(String(16), default="fleet")  # fleet / demo
    length: Mapped[int] = mapped_column(Integer, default=0)
    success: Mapped[bool | None]
    interventions: Mapped[int] = mapped_column(Integer, default=0)
    missed_ticks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # control ticks overrun
    store_path: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]

    segments: Mapped[list[Segment]] = relationship(back_populates="episode", cascade="all, delete-orphan")


class Segment(Base):
    """Index of one trajectory segment (a chunk of steps) and where it came from in Kafka."""

    __tablename__ = "segments"
    __table_args__ = (
        UniqueConstraint("episode_pk", "segment_index", name="uq_segment_episode_index"),
        Index("ix_segment_robot_received", "robot_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    episode_pk: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"))
    robot_id: Mapped[str] = mapped_column(String(64))
    segment_index: Mapped[int] = mapped_column(Integer)
    num_steps: Mapped[int] = mapped_column(Integer)
    interventions: Mapped[int] = mapped_column(Integer, default=0)
    model_version: Mapped[str | None] = mapped_column(String(32))
    kafka_partition: Mapped[int | None]
    kafka_offset: Mapped[int | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    episode: Mapped[Episode] = relationship(back_populates="segments")


class Correction(Base):
    """A human takeover (a run of intervention steps) waiting for or past review."""

    __tablename__ = "corrections"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    robot_id: Mapped[str] = mapped_column(ForeignKey("robots.id"), index=True)
    episode_id: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str | None] = mapped_column(String(32), index=True)
    operator: Mapped[str] = mapped_column(String(64))  # who took over (a user, or "supervisor" in sim)
    reason: Mapped[str] = mapped_column(String(200), default="", server_default="")  # why the takeover fired
    channel: Mapped[str | None] = mapped_column(String(32))  # "canary": taken over from a canary version
    start_step: Mapped[int] = mapped_column(Integer)
    end_step: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending/approved/rejected
    relabel_success: Mapped[bool | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    reviews: Mapped[list[Review]] = relationship(back_populates="correction")


class Review(Base):
    """A reviewer's decision on a correction: approve, reject (leaves the replay) or relabel."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    correction_id: Mapped[str] = mapped_column(ForeignKey("corrections.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))  # approve / reject / relabel
    relabel_success: Mapped[bool | None]
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    correction: Mapped[Correction] = relationship(back_populates="reviews")


class ModelVersion(Base):
    """A registered model version mirrored from MLflow with its lineage and gate results."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    parent_version: Mapped[str | None] = mapped_column(String(32))
    run_id: Mapped[str | None] = mapped_column(String(64))
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    eval_metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    data_offsets: Mapped[dict[str, Any]] = mapped_column(default=dict)  # topic -> partition -> offset range
    correction_count: Mapped[int] = mapped_column(Integer, default=0)
    gate_passed: Mapped[bool | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deployment(Base):
    """One change of where an alias points (promote, rollback, pin, unpin), newest last."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(32))  # candidate / production / canary
    version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    action: Mapped[str] = mapped_column(String(16))  # promote / rollback / pin / unpin / candidate / canary(_rollback)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditEntry(Base):
    """Who did what, when and why: every promote, rollback, pin, review and command."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class User(Base):
    """A dashboard user; `role` is one of viewer / reviewer / operator / admin."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserSession(Base):
    """One browser login. The signed cookie carries a random session id; only its sha256 (`id`) is stored, and a
    cookie counts only while its row exists and is not revoked (logout, or an admin disabling or changing the user)."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie's session id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class OutboxMessage(Base):
    """A message to publish once the transaction that wrote it has committed (a review's verdict): it commits with the
    change it announces and is deleted once Kafka has acknowledged it, so a crash in between re-sends it instead of
    losing it, and a change that was rolled back is never announced (`dashboards.outbox`)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # publishing order
    topic: Mapped[str] = mapped_column(String(64))
    key: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # the encoded wire message (`fleet.schemas.encode`)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A scoped API token (robots: produce their own data, read models). Only the hash is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    robot_id: Mapped[str | None] = mapped_column(String(64))  # set for robot tokens: the only robot it speaks for
    scopes: Mapped[str] = mapped_column(String(256))  # space-separated, e.g. "robot:produce models:read"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
