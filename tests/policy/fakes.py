"""Test doubles for the policy tests: a hash-based instruction embedder and synthetic episodes."""

from __future__ import annotations

import hashlib

import numpy as np

from fleet.embodiments import EMBODIMENTS
from fleet.episodes import Episode, EpisodeMeta
from fleet.policy.base import Observation

FAKE_ENCODER = "hash-test"


class HashEmbedder:
    """Deterministic 384-d unit vectors from the text's sha256 (stands in for MiniLM where semantics don't matter)."""

    name = FAKE_ENCODER
    dim = 384

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, text: str) -> np.ndarray:
        self.calls += 1
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        vec = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return vec / np.linalg.norm(vec)


def demo_actions(length: int, action_dim: int, *, phase: float = 0.0) -> np.ndarray:
    """A smooth trajectory in [-0.8, 0.8]: one sine per dimension with its own phase."""
    t = np.arange(length, dtype=np.float32)[:, None] / length
    phases = phase + np.arange(action_dim, dtype=np.float32)[None, :] * 0.9
    return (0.8 * np.sin(2 * np.pi * t + phases)).astype(np.float32)


def make_episode(
    embodiment: str = "panda",
    *,
    length: int = 16,
    seed: int = 0,
    instruction: str = "pick up the red cube",
    image_size: int = 64,
    episode_id: str | None = None,
) -> Episode:
    """A synthetic demonstration: random frames and proprio, smooth actions, reward 1 at the last step."""
    spec = EMBODIMENTS[embodiment]
    rng = np.random.default_rng(seed)
    rewards = np.zeros(length, dtype=np.float32)
    rewards[-1] = 1.0
    meta = EpisodeMeta(
        robot_id=f"sim-{embodiment}",
        episode_id=episode_id or f"ep-{seed}",
        embodiment=embodiment,
        task="pick",
        instruction=instruction,
        model_version=None,
        length=length,
        success=True,
        interventions=0,
        source="demo",
    )
    return Episode(
        meta=meta,
        timestamps=np.arange(length, dtype=np.float64) / spec.control_hz,
        proprio=rng.uniform(-1, 1, (length, spec.proprio_dim)).astype(np.float32),
        actions=demo_actions(length, spec.action_dim, phase=seed * 0.3),
        rewards=rewards,
        intervention=np.zeros(length, dtype=bool),
        frames={"front": rng.integers(0, 256, (length, image_size, image_size, 3), dtype=np.uint8)},
    )


def observation(episode: Episode, t: int) -> Observation:
    """The observation the robot saw at step t of an episode."""
    return {
        "images": {cam: frames[t] for cam, frames in episode.frames.items()},
        "proprio": episode.proprio[t],
        "instruction": episode.meta.instruction,
        "task": episode.meta.task,
        "embodiment": episode.meta.embodiment,
    }
