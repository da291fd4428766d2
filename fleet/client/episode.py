"""One episode as the fleet receives it: a robot's steps in; trajectory segments, corrections and the outcome out.

Both sides of fleet that drive robots build their messages here: the simulated fleet's control loop
(actors/runtime.py) and a real robot's process (`fleet.client.RobotClient`). Per step the robot calls `act` with
what it saw and the action about to run (its own or, during a takeover, a human's), then `result` with the step's
reward once it ran; `finish` at the end.

- A segment closes every `segment_steps` steps, when the acting model version changes (a swap mid-episode: each
  segment names the version that produced its actions), and at the end of the episode. Each carries the control
  ticks that overran their deadline while it was recorded (from the caller's running count).
- A run of human steps is one `Correction` (its actions, where it began, why the operator took over), sent when the
  robot gets control back or the episode ends.
- `finish` sends the outcome as a `RewardSignal`. An episode stopped before its end sends no partial segment: the
  recorder and the learner take only whole episodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fleet.schemas import Correction, Message, RewardSignal, TrajectorySegment

Publish = Callable[[Message], Any]


@dataclass
class _Segment:
    """Steps buffered for the next TrajectorySegment."""

    start: int = 0
    timestamps: list[float] = field(default_factory=list)
    frames: dict[str, list[np.ndarray]] = field(default_factory=dict)
    proprio: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    intervention: list[bool] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    version: str | None = None
    missed_before: int = 0  # the caller's missed-tick count when the segment began


class EpisodeStream:
    """Builds and publishes one episode's messages; see the module docstring."""

    def __init__(
        self,
        publish: Publish,
        *,
        robot_id: str,
        embodiment: str,
        task: str,
        instruction: str,
        episode_id: str,
        segment_steps: int = 10,
        operator: str = "supervisor",
        channel: Callable[[], str | None] = lambda: None,
        missed_ticks: int = 0,
    ) -> None:
        if segment_steps < 1:
            raise ValueError("segment_steps must be >= 1")
        self.publish = publish
        self.robot_id, self.embodiment, self.task = robot_id, embodiment, task
        self.instruction, self.episode_id = instruction, episode_id
        self.segment_steps, self.operator, self.channel = segment_steps, operator, channel
        self.steps = 0  # steps recorded so far
        self.interventions = 0  # of which a human drove
        self.segments = 0  # segments published
        self._segment = _Segment(missed_before=missed_ticks)
        self._index = 0
        self._takeover: list[np.ndarray] = []
        self._takeover_start, self._takeover_reason = 0, ""

    def act(
        self,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray,
        action: np.ndarray,
        *,
        version: str | None,
        human: bool = False,
        reason: str = "",
        missed_ticks: int = 0,
    ) -> None:
        """The step about to run: what the robot saw, the action, the model version whose chunk it comes from, and
        whether a human drove it (`reason`: why the takeover began, read at its first step). `missed_ticks` is the
        caller's running count of overrun ticks."""
        if human:
            if not self._takeover:
                self._takeover_start, self._takeover_reason = self.steps, reason
            self._takeover.append(np.asarray(action, dtype=np.float32))
            self.interventions += 1
        elif self._takeover:
            self._send_correction(version)
        segment = self._segment
        if segment.version != version and segment.actions:
            self._close(done=False, success=False, missed_ticks=missed_ticks)
            segment = self._segment
        segment.version = version
        segment.timestamps.append(time.time())
        for camera, image in images.items():
            segment.frames.setdefault(camera, []).append(image)
        segment.proprio.append(np.asarray(proprio, dtype=np.float32))
        segment.actions.append(np.asarray(action, dtype=np.float32))
        segment.intervention.append(human)

    def result(self, reward: float, *, done: bool, success: bool = False, missed_ticks: int = 0) -> None:
        """The step ran: its reward; closes the segment when it is full or the episode is over (`success` then)."""
        self._segment.rewards.append(float(reward))
        self.steps += 1
        if len(self._segment.actions) >= self.segment_steps or done:
            self._close(done=done, success=success, missed_ticks=missed_ticks)

    def finish(
        self,
        version: str | None,
        *,
        success: bool | None,
        source: Literal["human", "sim", "classifier", "script"] = "sim",
        labeller: str = "success-check",
    ) -> None:
        """Send a takeover still running as its correction, and the outcome (unless `success` is None)."""
        if self._takeover:
            self._send_correction(version)
        if success is not None:
            self.publish(
                RewardSignal(
                    reward_id=f"{self.episode_id}-outcome", robot_id=self.robot_id, episode_id=self.episode_id,
                    source=source, labeller=labeller, created_at=time.time(), success=success,
                )
            )  # fmt: skip

    def _close(self, *, done: bool, success: bool, missed_ticks: int) -> None:
        segment = self._segment
        self.publish(
            TrajectorySegment(
                robot_id=self.robot_id, embodiment=self.embodiment, task_id=self.task, instruction=self.instruction,
                episode_id=self.episode_id, segment_index=self._index, step_start=segment.start,
                model_version=segment.version, created_at=time.time(),
                timestamps=np.asarray(segment.timestamps, dtype=np.float64),
                frames={cam: np.stack(images) for cam, images in segment.frames.items()},
                proprio=np.stack(segment.proprio), actions=np.stack(segment.actions),
                intervention=np.asarray(segment.intervention, dtype=bool),
                rewards=np.asarray(segment.rewards, dtype=np.float32), done=done, success=success,
                missed_ticks=max(0, missed_ticks - segment.missed_before),
            )
        )  # fmt: skip
        self.segments += 1
        self._index += 1
        self._segment = _Segment(start=self.steps, missed_before=missed_ticks)

    def _send_correction(self, version: str | None) -> None:
        self.publish(
            Correction(
                correction_id=f"{self.episode_id}-c{self._takeover_start}", robot_id=self.robot_id,
                embodiment=self.embodiment, task_id=self.task, episode_id=self.episode_id,
                step_start=self._takeover_start, actions=np.stack(self._takeover), operator=self.operator,
                model_version=version, created_at=time.time(), reason=self._takeover_reason[:200],
                channel=self.channel(),
            )
        )  # fmt: skip
        self._takeover = []
