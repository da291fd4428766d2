"""Everything a request handler needs, built once per app: DB, transport, live fleet state, registry.

`Services` owns the long-lived pieces (engine, Kafka producer, heartbeat and corrections consumers) and starts and
stops them with the app. It also computes the fleet status document the API and the event stream
serve, with short caches so 64 robots at 2 Hz and a page full of viewers stay cheap.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import Session, sessionmaker

from dashboards.auth import SessionCodec
from dashboards.config import DashboardConfig
from dashboards.errors import Unavailable
from dashboards.fleet_state import CommandStatus, CommandTracker, FleetState
from dashboards.monitor import CommandFeed, CorrectionsMonitor, HeartbeatMonitor
from dashboards.outbox import Outbox
from dashboards.streams import StreamSlots
from dashboards.throttle import LoginThrottle
from dashboards.training_metrics import LearnerMetrics, learner_section
from fleet.db import Episode, Robot
from fleet.episodes import EpisodeStore
from fleet.registry import announce
from fleet.registry_views import OperatorRegistry
from fleet.rollout import CanaryController
from fleet.schemas import Command, Message
from fleet.settings import Settings
from fleet.transport import Delivery, Transport, TransportConfig, publish

log = logging.getLogger(__name__)


class _TTLCache:
    """One value recomputed at most every `ttl_s` (thread-safe, single flight)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._value: Any = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self, compute: Any) -> Any:
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                self._value = compute()
                self._at = time.monotonic()
            return self._value

    def get_nowait(self, compute: Any) -> Any:
        """Like `get`, but once a value exists a stale one is refreshed in the background, never in the caller
        (a slow or dead MLflow must not stall the fleet page)."""
        if self._at == float("-inf"):
            return self.get(compute)
        if time.monotonic() - self._at > self.ttl_s and self._lock.acquire(blocking=False):
            self._at = time.monotonic()  # one refresh in flight; readers keep the old value meanwhile

            def refresh() -> None:
                try:
                    self._value = compute()
                finally:
                    self._lock.release()

            threading.Thread(target=refresh, daemon=True, name="dashboard-cache-refresh").start()
        return self._value

    def clear(self) -> None:
        with self._lock:
            self._at = float("-inf")


@dataclass
class Services:
    settings: Settings
    config: DashboardConfig
    engine: Engine
    sessions: sessionmaker[Session]
    codec: SessionCodec
    fleet: FleetState
    commands: CommandTracker
    transport: Transport | None  # None: publishing answers 503 (no broker configured)
    registry: OperatorRegistry | None  # None: model routes answer 503
    episodes: EpisodeStore
    transport_config: TransportConfig | None = None
    monitor: HeartbeatMonitor | None = None
    corrections_monitor: CorrectionsMonitor | None = None
    command_feed: CommandFeed | None = None  # robots without Kafka fetch their commands from it
    canary: CanaryController | None = None  # the background controller, when `config.canary_interval_s` > 0
    learner_metrics: LearnerMetrics | None = None  # None: the Training page says MLflow is not configured
    _stats: _TTLCache = field(init=False)
    _production: _TTLCache = field(init=False)
    _learner: _TTLCache = field(init=False)
    login_throttle: LoginThrottle = field(init=False)  # failed-login limits from settings (dashboards.throttle)
    streams: StreamSlots = field(init=False)  # open event streams, capped in total and per caller (config)
    outbox: Outbox = field(init=False)  # messages published after their transaction commits (reviews)

    def __post_init__(self) -> None:
        self._stats = _TTLCache(self.config.stats_cache_s)
        self._production = _TTLCache(self.config.registry_cache_s)
        self._learner = _TTLCache(self.config.training_cache_s)
        self.login_throttle = LoginThrottle(
            max_per_user=self.settings.login_max_failures,
            max_per_client=self.settings.login_max_failures_per_client,
            window_s=self.settings.login_window_s,
        )
        self.streams = StreamSlots(total=self.config.sse_max_streams, per_caller=self.config.sse_max_streams_per_caller)
        self.outbox = Outbox(self.sessions, self.transport, interval_s=self.config.outbox_interval_s)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, *, consume: bool) -> None:
        """Seed the live view from the DB; with `consume`, start the heartbeat and corrections consumers."""
        with self.sessions() as session:  # robots known from before show up (offline) at once
            for robot in session.scalars(select(Robot)):
                self.fleet.seed(
                    robot_id=robot.id,
                    embodiment=robot.embodiment,
                    model_version=robot.current_version,
                    task_id=robot.task,
                )
        self.outbox.start()  # sends what a previous process committed and did not get acknowledged
        if consume and self.transport_config is not None:
            self.monitor = HeartbeatMonitor(
                self.transport_config,
                fleet=self.fleet,
                commands=self.commands,
                sessions=self.sessions,
                flush_interval_s=self.config.db_flush_interval_s,
            )
            self.monitor.start()
            self.corrections_monitor = CorrectionsMonitor(
                self.transport_config, sessions=self.sessions, group_id=self.config.corrections_group
            )
            self.corrections_monitor.start()
            self.command_feed = CommandFeed(self.transport_config)
            self.command_feed.start()
            if self.config.canary_interval_s > 0 and hasattr(self.registry, "canary"):
                self.canary = self.canary_controller().start(self.config.canary_interval_s)

    def stop(self) -> None:
        if self.canary is not None:
            self.canary.stop()
        self.outbox.stop()
        for monitor in (self.monitor, self.corrections_monitor, self.command_feed):
            if monitor is not None:
                monitor.stop()
        if self.transport is not None:
            self.transport.close(timeout_s=5.0)
        self.engine.dispose()

    # --- canary ------------------------------------------------------------------------------

    def canary_controller(self) -> CanaryController:
        """The live A/B of the running canary over this process's DB, registry and live fleet state."""
        if self.registry is None or not hasattr(self.registry, "canary"):
            raise Unavailable("the model registry is not available: run `fleet up` or set FLEET_MLFLOW_TRACKING_URI")
        return CanaryController(
            self.registry,  # type: ignore[arg-type]
            self.sessions,
            self.config.canary_policy,
            errors=lambda version, cohort: len(self.canary_robots(errors_only=True)),
            announce=lambda info, event, alias, reason: self.announce_model(
                info, event=event, alias=alias, actor="canary-controller", reason=reason
            ),
        )

    def canary_robots(self, *, errors_only: bool = False) -> list[dict[str, Any]]:
        """Online robots whose heartbeat says they run the canary (with an error only, for the safety signal)."""
        return [
            r for r in self.fleet.snapshot()
            if r["channel"] == "canary" and r["state"] != "offline" and (r["error"] or not errors_only)
        ]  # fmt: skip

    # --- publishing --------------------------------------------------------------------------

    def announce_model(self, info: Any, *, event: str, alias: str | None, actor: str, reason: str) -> None:
        """Tell robots at once on `fleet.models` (they also poll the alias, so this is best effort)."""
        sha256, source = getattr(info, "sha256", None), getattr(info, "source", None)
        if self.transport is None or not sha256 or source is None:
            return
        try:
            if not announce(self.settings, info, event=event, alias=alias, actor=actor, reason=reason,
                            transport=self.transport):  # fmt: skip
                log.warning("could not announce %s of v%s: the Kafka producer queue is full", event, info.version)
        except Exception as e:  # noqa: BLE001 - robots converge through alias polling anyway
            log.warning("could not announce %s of v%s on fleet.models: %s", event, info.version, e)

    def require_transport(self) -> Transport:
        if self.transport is None:
            raise Unavailable("no Kafka transport configured: run `fleet up` or set FLEET_KAFKA_BOOTSTRAP")
        return self.transport

    def publish(self, message: Message, *, on_delivery: Any = None) -> None:
        if not publish(self.require_transport(), message, on_delivery=on_delivery):
            raise Unavailable("the Kafka producer queue is full; try again in a moment")

    async def publish_durably(self, message: Message) -> Delivery:
        """Publish and wait until Kafka has stored the message (acks=all), for at most `ingest_ack_timeout_s`.
        Raises `Unavailable` (503) when it has not: the sender keeps the message and sends it again; consumers
        drop the duplicate if the first copy arrives after all."""
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[Delivery] = loop.create_future()

        def _settle(delivery: Delivery) -> None:
            if not settled.done():
                settled.set_result(delivery)

        self.publish(message, on_delivery=lambda d: loop.call_soon_threadsafe(_settle, d))
        timeout_s = self.config.ingest_ack_timeout_s
        try:
            delivery = await asyncio.wait_for(settled, timeout_s)
        except TimeoutError:
            raise Unavailable(
                f"Kafka has not stored the message within {timeout_s:g} s; keep it and send it again"
            ) from None
        if delivery.error is not None:
            raise Unavailable(f"Kafka did not store the message ({delivery.error}); keep it and send it again")
        return delivery

    def send_command(
        self, *, robot_id: str, action: str, issued_by: str, reason: str, task_id: str | None, instruction: str | None
    ) -> CommandStatus:
        now = time.time()
        command = Command(
            command_id=f"cmd-{uuid.uuid4().hex[:16]}",
            robot_id=robot_id,
            action=action,  # type: ignore[arg-type]
            task_id=task_id,
            instruction=instruction,
            issued_by=issued_by,
            reason=reason,
            created_at=now,
        )
        status = CommandStatus(command.command_id, robot_id, action, issued_by, now, task_id, instruction)
        self.commands.add(status)

        def delivered(d: Delivery) -> None:
            self.commands.delivered(command.command_id, d.error)

        self.publish(command, on_delivery=delivered)
        return status

    # --- fleet status ------------------------------------------------------------------------

    def episode_stats(self) -> dict[str, dict[str, Any]]:
        return self._stats.get(self._compute_episode_stats)  # type: ignore[no-any-return]

    def _compute_episode_stats(self) -> dict[str, dict[str, Any]]:
        since = datetime.now(UTC) - timedelta(seconds=self.config.stats_window_s)
        query = (
            select(
                Episode.robot_id,
                func.count(),
                func.sum(case((Episode.success.is_(True), 1), else_=0)),
                func.count(Episode.success),
                func.sum(Episode.interventions),
                func.sum(case((Episode.interventions > 0, 1), else_=0)),
            )
            .where(Episode.ended_at.is_not(None), Episode.ended_at >= since, Episode.source == "fleet")
            .group_by(Episode.robot_id)
        )
        out: dict[str, dict[str, Any]] = {}
        with self.sessions() as session:
            for robot_id, n, successes, labelled, steps, with_int in session.execute(query):
                out[robot_id] = {
                    "episodes": int(n),
                    "success_rate": (int(successes or 0) / int(labelled)) if labelled else None,
                    "intervention_steps_per_episode": int(steps or 0) / int(n),
                    "intervened_episode_rate": int(with_int or 0) / int(n),
                }
        return out

    def learner_progress(self) -> dict[str, Any]:
        """The learner's runs, throughput and loss curves from MLflow (errors included, cached briefly)."""
        return self._learner.get(lambda: learner_section(self.learner_metrics))  # type: ignore[no-any-return]

    def production_version(self) -> str | None:
        def ask() -> str | None:
            if self.registry is None:
                return None
            try:
                return self.registry.aliases().get("production")
            except Exception as e:  # MLflow down: the fleet page must still render
                log.warning("registry alias lookup failed: %s", e)
                return None

        return self._production.get_nowait(ask)  # type: ignore[no-any-return]

    def invalidate_registry(self) -> None:
        self._production.clear()

    def fleet_status(self) -> dict[str, Any]:
        robots = self.fleet.snapshot()
        stats = self.episode_stats()
        counts: dict[str, int] = {}
        versions: dict[str, int] = {}
        for robot in robots:
            robot["stats"] = stats.get(robot["robot_id"])
            robot["commands"] = [asdict(c) for c in self.commands.list(robot_id=robot["robot_id"], limit=3)]
            counts[robot["state"]] = counts.get(robot["state"], 0) + 1
            if robot["state"] != "offline":
                key = robot["model_version"] or "none"
                versions[key] = versions.get(key, 0) + 1
        production = self.production_version()
        online = sum(versions.values())
        return {
            "generated_at": time.time(),
            "offline_after_s": self.config.offline_after_s,
            "window_s": self.config.stats_window_s,
            "robots": robots,
            "counts": counts,
            "rollout": {
                "production": production,
                "versions": dict(sorted(versions.items())),
                "converged": online > 0 and production is not None and versions.get(production, 0) == online,
            },
        }
