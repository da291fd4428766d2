"""Synthetic fleet messages for the learner tests (shapes per `fleet.embodiments`)."""

from __future__ import annotations

import time

import numpy as np

from fleet.embodiments import get_embodiment
from fleet.schemas import Correction, TrajectorySegment


def segments(
    robot_id: str,
    episode_id: str,
    *,
    embodiment: str = "panda",
    lengths: tuple[int, ...] = (5, 5),
    success: bool = True,
    intervention: tuple[int, int] | None = None,
    seed: int = 0,
    image_size: int = 64,
) -> list[TrajectorySegment]:
    """One episode as segments; `intervention=(start, stop)` marks those episode steps as human-driven."""
    spec = get_embodiment(embodiment)
    rng = np.random.default_rng(seed)
    out, start = [], 0
    for index, n in enumerate(lengths):
        steps = np.arange(start, start + n)
        mask = np.zeros(n, dtype=bool)
        if intervention is not None:
            mask = (steps >= intervention[0]) & (steps < intervention[1])
        last = index == len(lengths) - 1
        out.append(
            TrajectorySegment(
                robot_id=robot_id,
                embodiment=embodiment,
                task_id="pick",
                instruction="pick up the red cube",
                episode_id=episode_id,
                segment_index=index,
                step_start=start,
                model_version="1",
                created_at=time.time(),
                timestamps=steps / spec.control_hz,
                frames={"front": rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)},
                proprio=rng.uniform(-1, 1, (n, spec.proprio_dim)).astype(np.float32),
                actions=rng.uniform(-1, 1, (n, spec.action_dim)).astype(np.float32),
                intervention=mask,
                rewards=np.zeros(n, dtype=np.float32),
                done=last,
                success=success and last,
            )
        )
        start += n
    return out


def correction(robot_id: str, episode_id: str, correction_id: str, start: int, n: int) -> Correction:
    spec = get_embodiment("panda")
    return Correction(
        correction_id=correction_id,
        robot_id=robot_id,
        embodiment="panda",
        task_id="pick",
        episode_id=episode_id,
        step_start=start,
        actions=np.full((n, spec.action_dim), 0.5, dtype=np.float32),
        operator="supervisor:test",
        model_version="1",
        created_at=time.time(),
    )
