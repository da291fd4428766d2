"""Test data for the data plane: segments whose values encode (robot, episode, step) so order is checkable."""

from __future__ import annotations

import time

import numpy as np

from fleet.schemas import TrajectorySegment


def make_segment(
    robot_id: str = "robot-0",
    episode_id: str = "ep-0",
    segment_index: int = 0,
    *,
    steps: int = 10,
    segments_per_episode: int = 10,
    embodiment: str = "panda",
    size: int = 64,
    model_version: str | None = "1",
    cameras: tuple[str, ...] = ("front",),
    missed_ticks: int | None = None,
) -> TrajectorySegment:
    """Segment `segment_index` of an episode of `segments_per_episode` segments of `steps` steps.

    proprio[:, 0] holds the episode step index, so a recorded episode proves its segment order; the segment
    reports `segment_index % 3` missed ticks unless `missed_ticks` says otherwise.
    """
    dims = {"panda": (10, 4), "kuka": (8, 5), "sawyer": (4, 4)}[embodiment]
    start = segment_index * steps
    step_ids = np.arange(start, start + steps, dtype=np.float32)
    proprio = np.zeros((steps, dims[0]), np.float32)
    proprio[:, 0] = step_ids
    frames = np.zeros((steps, size, size, 3), np.uint8)
    frames[:, :, :, 0] = (step_ids % 256).astype(np.uint8)[:, None, None]
    done = segment_index == segments_per_episode - 1
    return TrajectorySegment(
        robot_id=robot_id,
        embodiment=embodiment,
        task_id="pick-cube",
        instruction="pick up the red cube",
        episode_id=episode_id,
        segment_index=segment_index,
        step_start=start,
        model_version=model_version,
        created_at=time.time(),
        timestamps=1_700_000_000.0 + step_ids.astype(np.float64) / 10,
        frames={camera: frames for camera in cameras},
        proprio=proprio,
        actions=np.full((steps, dims[1]), 0.1, np.float32),
        intervention=(step_ids % 7 == 0),
        missed_ticks=segment_index % 3 if missed_ticks is None else missed_ticks,
        rewards=np.zeros(steps, np.float32),
        done=done,
        success=done,
    )
