"""Cheap robots for fault tests: the real `RobotRuntime` and spooling Kafka transport, a physics-free env.

`TinyEnv` stands in for the simulator (panda-shaped observations, fixed-length episodes) so eight
robots fit on two cores next to the broker; everything from the control loop to Kafka (and, with
`actors.robot.build_robot(env=TinyEnv(...))`, to the registry) is the code robots run.
`CountingTransport` sits where `build_robot` puts the transport and records what the robot sent
(ids of its segments), how long each `send()` took and how each delivery ended.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from actors.runtime import RobotConfig, RobotRuntime
from fleet.embodiments import get_embodiment
from fleet.schemas import Message, TrajectorySegment
from fleet.transport import Delivery, KafkaTransport, publish
from fleet.transport.http import HttpTransport

SegmentId = tuple[str, str, int]  # (robot, episode, segment index)


class TinyEnv:
    """Fixed-length episodes of panda-shaped observations; step t's image and proprio hold t."""

    instruction = "pick up the red cube"

    def __init__(self, *, steps: int = 30, image_size: int = 16) -> None:
        self.steps, self.size, self.t = steps, image_size, 0
        self.proprio_dim = get_embodiment("panda").proprio_dim

    def reset(self, seed: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        self.t += 1
        done = self.t >= self.steps
        return self._obs(), 0.0, done, False, {"success": done}

    def _obs(self) -> dict[str, Any]:
        image = np.full((self.size, self.size, 3), self.t % 256, dtype=np.uint8)
        proprio = np.full(self.proprio_dim, self.t, dtype=np.float32)
        return {
            "images": {"front": image},
            "proprio": proprio,
            "instruction": self.instruction,
            "task": "pick",
            "embodiment": "panda",
        }


class HoldPolicy:
    """Zero action chunks (the runtime, not the policy, is under test)."""

    def __init__(self, horizon: int = 5) -> None:
        self.chunk = np.zeros((horizon, get_embodiment("panda").action_dim), dtype=np.float32)

    def infer(self, obs: dict[str, Any]) -> np.ndarray:
        return self.chunk

    def reset(self) -> None:
        pass


class CountingTransport:
    """Wraps a robot's transport (Kafka or HTTPS): times every `send()`, counts deliveries, lists the segments sent."""

    def __init__(self, transport: KafkaTransport | HttpTransport) -> None:
        self.transport = transport
        self.segments: list[SegmentId] = []  # accepted by send(), in order
        self.segment_times: list[float] = []  # time.monotonic() of each accepted segment
        self.sends = self.refused = self.acked = 0
        self.failed: list[str] = []  # delivery errors (dropped for good)
        self.max_send_s = 0.0
        self._lock = threading.Lock()

    def publish(self, message: Message) -> None:
        """What the runtime calls: `fleet.transport.publish` through this wrapper."""
        accepted = publish(self, message)  # type: ignore[arg-type]
        if accepted and isinstance(message, TrajectorySegment):
            with self._lock:
                self.segments.append((message.robot_id, message.episode_id, message.segment_index))
                self.segment_times.append(time.monotonic())

    def send(self, topic: str, value: bytes, *, key: str | None, headers: Any = (), on_delivery: Any = None) -> bool:
        start = time.perf_counter()
        accepted = self.transport.send(topic, value, key=key, headers=headers, on_delivery=self._delivered)
        elapsed = time.perf_counter() - start
        with self._lock:
            self.max_send_s = max(self.max_send_s, elapsed)
            self.sends += 1
            self.refused += not accepted
        return accepted

    def _delivered(self, delivery: Delivery) -> None:
        with self._lock:
            if delivery.error is None:
                self.acked += 1
            else:
                self.failed.append(delivery.error)


def tiny_robot(robot_id: str, transport: CountingTransport, *, control_hz: float, steps: int) -> RobotRuntime:
    """A real-time robot runtime on `TinyEnv` publishing through `transport` (10-step segments)."""
    config = RobotConfig(
        robot_id=robot_id, embodiment="panda", task="pick", control_hz=control_hz, realtime=True,
        segment_steps=10, heartbeat_interval_s=1.0,
    )  # fmt: skip
    return RobotRuntime(
        config,
        env=TinyEnv(steps=steps),
        policy=HoldPolicy(),
        model_version="1",
        publish=transport.publish,
        spooled=lambda: transport.transport.producer.spooled,
    )


class TinyFleet:
    """`count` tiny real-time robots `<prefix>-r<i>`, each on its own spooling Kafka transport (spool under
    `settings.home`) seen through a `CountingTransport`, each run on a thread until `stop()`."""

    def __init__(self, settings: Any, prefix: str, count: int, *, control_hz: float, steps: int) -> None:
        from fleet.transport import TransportConfig

        ids = [f"{prefix}-r{i}" for i in range(count)]
        self.transports = [
            CountingTransport(KafkaTransport(TransportConfig.from_settings(settings, spool_name=rid, client_id=rid)))
            for rid in ids
        ]
        runtimes = [
            tiny_robot(rid, t, control_hz=control_hz, steps=steps) for rid, t in zip(ids, self.transports, strict=True)
        ]
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=rt.run, kwargs={"stop": self._stop}, name=f"robot-{i}")
                        for i, rt in enumerate(runtimes)]  # fmt: skip

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Robots finish their current episode (every episode sent is complete) and their threads end."""
        self._stop.set()
        for t in self.threads:
            if t.is_alive() or t.ident is not None:
                t.join(timeout=timeout_s)

    def close(self) -> None:
        self.stop()
        for t in self.transports:
            t.transport.close(timeout_s=5)

    @property
    def produced(self) -> list[SegmentId]:
        return [seg for t in self.transports for seg in t.segments]

    def sent_since(self, moment: float) -> int:
        """Segments the robots handed over at or after `moment` (time.monotonic())."""
        return sum(ts >= moment for t in self.transports for ts in t.segment_times)
