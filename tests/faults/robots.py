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
