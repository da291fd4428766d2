"""The live view of the fleet: last heartbeat per robot, offline detection, and sent commands.

`FleetState` is fed by the heartbeat monitor (`dashboards.monitor`) from `fleet.heartbeats` and
read by the fleet API and its event stream. `CommandTracker` remembers commands the dashboard
sent and marks them applied once the robot's heartbeat acknowledges them. Both are thread-safe
(the monitor thread writes, request handlers read).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from fleet.schemas import Heartbeat

# Heartbeat state -> what the fleet page shows (plus "intervened" and "offline", derived).
DISPLAY_STATE = {
    "starting": "idle",
    "idle": "idle",
    "running": "acting",
    "paused": "paused",
    "stopped": "stopped",
    "out_of_rotation": "out_of_rotation",
    "error": "error",
}


@dataclass
class RobotStatus:
    """What the dashboard knows about one robot."""

    robot_id: str
    embodiment: str
    heartbeat_state: str  # as reported ("running", "paused", ...), "unknown" before the first heartbeat
    model_version: str | None
    task_id: str | None
    episode_id: str | None
    last_seen: float | None  # dashboard clock (s) when the last heartbeat arrived
    missed_ticks: int = 0  # in the last heartbeat's window
    missed_ticks_total: int = 0  # since the dashboard started
    ticks_total: int = 0
    tick_ms_p99: float = 0.0
    control_hz: float = 0.0
    intervening: bool = False  # a human (supervisor) drives right now, as the heartbeat says
    pending_command_id: str | None = None
    applied_command_id: str | None = None
    spooled_messages: int = 0
    error: str | None = None
    channel: str | None = None  # the registry alias its version came from ("canary" during a rollout that includes it)

    def state(self, now: float, offline_after_s: float) -> str:
        if self.last_seen is None or now - self.last_seen > offline_after_s:
            return "offline"
        if self.heartbeat_state == "running" and self.intervening:
            return "intervened"
        return DISPLAY_STATE.get(self.heartbeat_state, self.heartbeat_state)


class FleetState:
    """Last known status of every robot; `snapshot()` derives offline from the heartbeat age."""

    def __init__(self, *, offline_after_s: float, clock: Callable[[], float] = time.time) -> None:
        self.offline_after_s = offline_after_s
        self.clock = clock
        self._robots: dict[str, RobotStatus] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self.heartbeats = 0  # received since start (the bench reads the rate off this)

    def seed(self, *, robot_id: str, embodiment: str, model_version: str | None, task_id: str | None) -> None:
        """A robot known from the database but not heard from yet (shown offline)."""
        with self._lock:
            self._robots.setdefault(
                robot_id, RobotStatus(robot_id, embodiment, "unknown", model_version, task_id, None, None)
            )

    def apply(self, hb: Heartbeat) -> None:
        now = self.clock()
        with self._lock:
            self.heartbeats += 1
            old = self._robots.get(hb.robot_id)
            self._robots[hb.robot_id] = RobotStatus(
                robot_id=hb.robot_id,
                embodiment=hb.embodiment,
                heartbeat_state=hb.state,
                model_version=hb.model_version,
                task_id=hb.task_id,
                episode_id=hb.episode_id,
                last_seen=now,
                missed_ticks=hb.loop.missed_ticks,
                missed_ticks_total=(old.missed_ticks_total if old else 0) + hb.loop.missed_ticks,
                ticks_total=(old.ticks_total if old else 0) + hb.loop.ticks,
                tick_ms_p99=hb.loop.tick_ms_p99,
                control_hz=hb.loop.control_hz,
                intervening=hb.intervening,
                pending_command_id=hb.pending_command_id,
                applied_command_id=hb.applied_command_id,
                spooled_messages=hb.spooled_messages,
                error=hb.error,
                channel=hb.channel,
            )
            self._dirty.add(hb.robot_id)

    def get(self, robot_id: str) -> RobotStatus | None:
        with self._lock:
            return self._robots.get(robot_id)

    def robot_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._robots)

    def take_dirty(self) -> list[RobotStatus]:
        """Robots changed since the last call (for the periodic write to the robots table)."""
        with self._lock:
            out = [self._robots[r] for r in sorted(self._dirty)]
            self._dirty.clear()
            return out

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            robots = [self._robots[r] for r in sorted(self._robots)]
        out = []
        for r in robots:
            row = asdict(r)
            row["state"] = r.state(now, self.offline_after_s)
            row["age_s"] = None if r.last_seen is None else round(now - r.last_seen, 2)
            out.append(row)
        return out


@dataclass
class CommandStatus:
    """One command the dashboard sent, and how far it got."""

    command_id: str
    robot_id: str
    action: str
    issued_by: str
    issued_at: float
    task_id: str | None = None
    instruction: str | None = None
    status: str = "sent"  # sent -> delivered (broker ack) -> received (robot has it) -> applied; or failed
    applied_at: float | None = None
    error: str | None = None


class CommandTracker:
    """Pending vs applied commands; robots acknowledge through their heartbeat's command ids."""

    def __init__(self, *, keep: int, clock: Callable[[], float] = time.time) -> None:
        self.keep = keep
        self.clock = clock
        self._commands: OrderedDict[str, CommandStatus] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, command: CommandStatus) -> None:
        with self._lock:
            self._commands[command.command_id] = command
            while len(self._commands) > self.keep:
                self._commands.popitem(last=False)

    def delivered(self, command_id: str, error: str | None) -> None:
        with self._lock:
            cmd = self._commands.get(command_id)
            if cmd is None or cmd.status not in ("sent",):
                return
            cmd.status, cmd.error = ("failed", error) if error else ("delivered", None)

    def observe(self, hb: Heartbeat) -> None:
        """Mark commands the heartbeat acknowledges; an applied command also settles older ones to that robot."""
        now = self.clock()
        with self._lock:
            applied = self._commands.get(hb.applied_command_id or "")
            if applied is not None and applied.robot_id == hb.robot_id:
                for cmd in self._commands.values():
                    if cmd.robot_id == hb.robot_id and cmd.issued_at <= applied.issued_at and cmd.status != "applied":
                        cmd.status, cmd.applied_at = "applied", now
            pending = self._commands.get(hb.pending_command_id or "")
            if pending is not None and pending.robot_id == hb.robot_id and pending.status in ("sent", "delivered"):
                pending.status = "received"

    def list(self, *, robot_id: str | None = None, limit: int = 100) -> list[CommandStatus]:
        with self._lock:
            cmds = [c for c in reversed(self._commands.values()) if robot_id is None or c.robot_id == robot_id]
        return cmds[:limit]

    def get(self, command_id: str) -> CommandStatus | None:
        with self._lock:
            return self._commands.get(command_id)
