"""The fleet VLA policy: model, heads, checkpoints, the `Policy` interface and offline training.

Concepts, one module each: `config` (VLAConfig), `base` (Policy protocol, observation contract),
`language` (frozen MiniLM instruction embeddings), `encoders` / `heads` / `model` (the network),
`checkpoint` (safetensors + JSON, verified, never unpickled), `policy` (VLAPolicy for the robot
runtime), `data` / `train` (episodes -> samples -> training with resume).

Importing the package imports torch but does not load MiniLM (that happens on the first new instruction).
"""

from fleet.policy.base import Observation, Policy, check_observation
from fleet.policy.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    checkpoint_sha256,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from fleet.policy.config import EmbodimentDims, VLAConfig, debug_model_config
from fleet.policy.language import InstructionEmbedder, MiniLMEmbedder, default_embedder
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "EmbodimentDims",
    "InstructionEmbedder",
    "MiniLMEmbedder",
    "Observation",
    "Policy",
    "VLAConfig",
    "VLAModel",
    "VLAPolicy",
    "check_observation",
    "checkpoint_sha256",
    "debug_model_config",
    "default_embedder",
    "load_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
]
