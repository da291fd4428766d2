"""A real robot's side of fleet: stream its episodes, corrections and heartbeats; nothing else to import.

    from fleet.client import RobotClient
    client = RobotClient.from_settings("arm-1", "panda")   # FLEET_INGEST_URL + FLEET_ROBOT_TOKEN, or Kafka
    episode = client.episode("pick", "pick up the red cube")
    for each control tick:
        episode.act(images, proprio, action, version=model_version, human=operator_drives)
        ... the robot executes the action ...
        episode.result(reward, done=done, success=success)
    episode.finish(model_version, success=success)
    client.heartbeat("running", model_version, loop=stats)
    listener = client.listen(on_command)    # operators' pause / resume / stop / assign, on a background thread
    listener.stop(); client.close()

The robot posts through the dashboard over HTTPS (`fleet.transport.http`) or produces to Kafka; either way what it
cannot deliver waits in its disk spool and is replayed in order. The client needs neither torch nor MLflow, a
database or Ray (a test imports it and checks): the robot's own process stays small. The simulated fleet's control
loop (actors/runtime.py) builds its messages with the same `EpisodeStream`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, Protocol

from fleet.client.episode import EpisodeStream
from fleet.schemas import Command, Heartbeat, LoopStats, Message
from fleet.settings import Settings, get_settings
from fleet.transport import publish

log = logging.getLogger(__name__)

State = Literal["starting", "idle", "running", "paused", "stopped", "out_of_rotation", "error"]


def robot_transport(settings: Settings, robot_id: str) -> Any:
    """The robot's spooling transport: through the dashboard when `settings.ingest_url` is set, else Kafka."""
    if settings.ingest_url is None:
        from fleet.transport import KafkaTransport, TransportConfig

        return KafkaTransport(TransportConfig.from_settings(settings, spool_name=robot_id))
    from fleet.transport.http import HttpTransport, HttpTransportConfig

    if settings.robot_token is None:
        raise ValueError(f"robot {robot_id}: FLEET_INGEST_URL is set but FLEET_ROBOT_TOKEN is not")
    return HttpTransport(
        HttpTransportConfig(
            url=settings.ingest_url,
            robot_id=robot_id,
            token=settings.robot_token.get_secret_value(),
            spool_dir=settings.home / "spool" / robot_id,
            spool_max_bytes=settings.spool_max_bytes,
            spool_segment_bytes=min(HttpTransportConfig.spool_segment_bytes, settings.spool_max_bytes),
        )
    )


class Listener(Protocol):
    """A background thread handing over what the fleet tells a robot; `stop()` ends it."""

    def stop(self, timeout_s: float = 5.0) -> None: ...


def listen_for_commands(
    settings: Settings,
    robot_id: str,
    on_command: Callable[[Command], None] | None,
    *,
    on_model: Callable[[], None] | None = None,
) -> Listener:
    """A started thread consuming `fleet.commands` keyed to `robot_id` (with `on_command`) and, with `on_model`,
    calling it on every `fleet.models` announcement (a new version to look at). Commands from before the listener
    started are stale and skipped; an undecodable one is logged and skipped. The broker down only delays them: the
    thread reconnects (`ConsumerThread`)."""
    from fleet.transport import COMMANDS, MODELS, ConsumerThread, KafkaTransport, MessageLoop, Record, TransportConfig

    started = time.time()
    topics = [t for t, wanted in ((MODELS, on_model), (COMMANDS, on_command)) if wanted is not None]

    def handle(message: Message, record: Record) -> None:
        if record.topic == MODELS and on_model is not None:
            on_model()
        elif on_command is not None and isinstance(message, Command) and message.robot_id == robot_id:
            fresh = message.created_at >= started - 5.0  # commands from before this robot started are stale
            if fresh:
                on_command(message)

    def connect() -> MessageLoop:
        config = TransportConfig.from_settings(settings, client_id=f"robot-{robot_id}")
        return MessageLoop(KafkaTransport(config, create_topics=False), group_id=f"robot-{robot_id}", topics=topics,
                           handler=handle, poll_timeout_s=0.5, max_records=100, dead_letters=False)  # fmt: skip

    return ConsumerThread(f"listen-{robot_id}", connect=connect).start()


def listen(
    settings: Settings,
    robot_id: str,
    transport: Any,
    on_command: Callable[[Command], None],
    *,
    on_model: Callable[[], None] | None = None,
) -> Listener:
    """A started listener handing each new command of `robot_id`'s operators to `on_command`, for the robot's own
    `transport`: asked of the dashboard every second for a robot posting through it (new versions then come from
    the registry poll alone), else consumed from `fleet.commands` (with `on_model` on each `fleet.models` event)."""
    if hasattr(transport, "commands"):  # HttpTransport: the dashboard keeps each robot's commands
        return CommandPoller(transport, on_command).start()
    return listen_for_commands(settings, robot_id, on_command, on_model=on_model)


class RobotClient:
    """One robot's connection to the fleet; see the module docstring."""

    def __init__(
        self,
        robot_id: str,
        embodiment: str,
        transport: Any,
        *,
        segment_steps: int = 10,
        settings: Settings | None = None,
    ) -> None:
        self.robot_id, self.embodiment, self.transport = robot_id, embodiment, transport
        self.segment_steps = segment_steps
        self.settings = settings  # where a Kafka robot's command listener connects (None: the environment's)
        self.current: EpisodeStream | None = None

    @classmethod
    def from_settings(
        cls, robot_id: str, embodiment: str, settings: Settings | None = None, *, segment_steps: int = 10
    ) -> RobotClient:
        settings = settings or get_settings()
        transport = robot_transport(settings, robot_id)
        return cls(robot_id, embodiment, transport, segment_steps=segment_steps, settings=settings)

    def listen(self, on_command: Callable[[Command], None]) -> Listener:
        """Hand each new command of this robot's operators (pause, resume, stop, assign a task) to `on_command`, once,
        from a background thread: asked of the dashboard every second for a robot posting through it, consumed from
        `fleet.commands` for a robot on Kafka. `stop()` the returned listener before `close()`."""
        return listen(self.settings or get_settings(), self.robot_id, self.transport, on_command)

    def publish(self, message: Message) -> bool:
        """Queue any fleet message of this robot's (never blocks)."""
        return publish(self.transport, message)

    def episode(self, task: str, instruction: str, *, operator: str = "operator") -> EpisodeStream:
        """A new episode; its segments, corrections and outcome go out as the robot reports its steps."""
        self.current = EpisodeStream(
            self.publish, robot_id=self.robot_id, embodiment=self.embodiment, task=task, instruction=instruction,
            episode_id=f"{self.robot_id}-{uuid.uuid4().hex[:10]}", segment_steps=self.segment_steps, operator=operator,
        )  # fmt: skip
        return self.current

    def heartbeat(
        self,
        state: State,
        model_version: str | None,
        *,
        loop: LoopStats,
        error: str | None = None,
        intervening: bool = False,
    ) -> bool:
        """Tell the dashboard how the robot is (send one every second or so)."""
        current = self.current
        return self.publish(
            Heartbeat(
                robot_id=self.robot_id, embodiment=self.embodiment, state=state, model_version=model_version,
                task_id=current.task if current else None, episode_id=current.episode_id if current else None,
                sent_at=time.time(), loop=loop, spooled_messages=getattr(self.transport.producer, "spooled", 0),
                intervening=intervening, error=error,
            )
        )  # fmt: skip

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (for up to `timeout_s`); the rest stays in the spool for the next start."""
        self.transport.close(timeout_s=timeout_s)


class CommandPoller:
    """Hands a robot posting through the dashboard its operators' commands (pause, resume, stop, assign a task):
    asks the dashboard every `interval_s` for the ones created since the last it saw (a robot on Kafka consumes
    `fleet.commands` itself). Commands from before the robot started are stale and skipped, as on Kafka."""

    def __init__(self, transport: Any, on_command: Any, *, interval_s: float = 1.0) -> None:
        self.transport, self.on_command, self.interval_s = transport, on_command, interval_s
        self.after = time.time() - 5.0  # the Kafka listener's grace for commands issued just before start
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commands-poll", daemon=True)

    def start(self) -> CommandPoller:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def poll(self) -> int:
        """One request; how many new commands were handed over."""
        new = 0
        for command in self.transport.commands(self.after):
            if command.command_id not in self._seen:
                self._seen.add(command.command_id)
                self.on_command(command)
                new += 1
            # Commands may come from several dashboards' clocks, slightly out of order: ask again for the last 30 s
            # of them and let the ids say which are new.
            self.after = max(self.after, command.created_at - 30.0)
        return new

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a bad answer must not end the robot's only way to hear commands
                log.exception("command poll failed")
