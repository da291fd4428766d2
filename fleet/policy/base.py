"""The `Policy` interface the robot runtime acts through, and the observation contract it consumes.

An observation (what the simulator and real-robot clients produce each control step)::

    {
        "images": {"front": uint8 (H, W, 3)},   # one entry per camera the policy was built for
        "proprio": float32 (proprio_dim,),      # proprio_dim of the embodiment
        "instruction": str,                     # natural-language task instruction
        "task": str,                            # task id (bookkeeping; the policy conditions on the instruction)
        "embodiment": str,                      # key of fleet.embodiments.EMBODIMENTS
    }

A policy answers with one action chunk: float32 (H, action_dim) in [-1, 1]. `VLAPolicy`
(`fleet.policy.policy`) is the implementation; large pretrained VLAs (SmolVLA, pi0) on GPU
machines can plug in behind the same two methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np

from fleet.policy.config import VLAConfig


class Observation(TypedDict):
    """One control step's input to a policy (see the module docstring for shapes)."""

    images: dict[str, np.ndarray]
    proprio: np.ndarray
    instruction: str
    task: str
    embodiment: str


@runtime_checkable
class Policy(Protocol):
    """What the robot runtime needs from a policy: a chunk of actions per call, and an episode reset."""

    def infer(self, obs: Observation) -> np.ndarray:
        """One action chunk, float32 (H, action_dim) in [-1, 1], for the observation's embodiment."""
        ...

    def reset(self) -> None:
        """Start of a new episode: clear per-episode state (e.g. re-seed the sampling noise)."""
        ...


def check_observation(obs: Mapping[str, Any], config: VLAConfig) -> None:
    """Raise a clear KeyError/ValueError when `obs` does not match what a model built from `config` expects."""
    if not isinstance(obs, Mapping):
        raise ValueError(f"observation must be a dict, got {type(obs).__name__}")
    missing = [k for k in ("images", "proprio", "instruction", "embodiment") if k not in obs]
    if missing:
        raise KeyError(
            f"observation is missing {missing}; expected keys images, proprio, instruction, task, embodiment"
        )
    embodiment = obs["embodiment"]
    if not isinstance(embodiment, str):
        raise ValueError(f"obs['embodiment'] must be a str, got {type(embodiment).__name__}")
    dims = config.embodiment(embodiment)  # KeyError naming the known embodiments
    if not isinstance(obs["instruction"], str) or not obs["instruction"].strip():
        raise ValueError("obs['instruction'] must be a non-empty str")

    proprio = np.asarray(obs["proprio"])
    if proprio.shape != (dims.proprio_dim,):
        raise ValueError(
            f"obs['proprio'] for embodiment {embodiment!r} must have shape ({dims.proprio_dim},), got {proprio.shape}"
        )
    if not np.issubdtype(proprio.dtype, np.floating) or not np.all(np.isfinite(proprio)):
        raise ValueError(f"obs['proprio'] must be finite floats, got dtype {proprio.dtype}")

    images = obs["images"]
    if not isinstance(images, Mapping):
        raise ValueError(f"obs['images'] must be a dict camera -> uint8 (H, W, 3), got {type(images).__name__}")
    side = config.image_size
    for camera in config.cameras:
        if camera not in images:
            raise KeyError(f"obs['images'] has no camera {camera!r}; this policy reads cameras {list(config.cameras)}")
        image = np.asarray(images[camera])
        if image.shape != (side, side, 3):
            raise ValueError(f"obs['images'][{camera!r}] must have shape ({side}, {side}, 3), got {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"obs['images'][{camera!r}] must be uint8 RGB, got dtype {image.dtype}")
