"""Cached features for a learner that holds part of the VLA fixed (`RLlibConfig.freeze`, `fleet learner run --freeze`).

A frozen image encoder gives the same tokens for a step every time it is sampled, so they are computed once,
when the step enters replay, and the updates skip the encoder's forward and backward (~half of an update on
this machine's CPU; `bench/learner_speed.py`). With "perception" frozen the cache holds the trunk's output and
only the action expert and the value head train.

    features = FrozenFeatures(model, "encoder")      # a copy of the frozen weights, eval mode
    replay = ReplayBuffer(config, model.config, embedder=embedder, features=features)
    features.digest                                   # the frozen weights' sha256: the cache is valid for them only

Rows are stored as float16 (half the bytes of float32; the tokens are LayerNorm outputs of order 1, where
float16 keeps ~3 significant digits): 17 tokens x 2 cameras x 128 at the default config is 8.7 kB a step,
less than the two 64x64 images it replaces (24.6 kB).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

from fleet.policy.model import FEATURE_COLUMNS, FREEZE_LEVELS, Freeze, VLAModel


class FrozenFeatures:
    """Computes the frozen part's output for replay steps (see the module docstring)."""

    def __init__(self, model: VLAModel, freeze: Freeze, *, batch_size: int = 128) -> None:
        if freeze not in FEATURE_COLUMNS:
            raise ValueError(f"FrozenFeatures needs a frozen part ({list(FEATURE_COLUMNS)}), got {freeze!r}")
        if batch_size < 1:
            raise ValueError(f"FrozenFeatures.batch_size must be >= 1, got {batch_size}")
        self.freeze = freeze
        self.column = FEATURE_COLUMNS[freeze]
        self.batch_size = batch_size
        self.model = VLAModel(model.config)
        self.model.load_state_dict(model.state_dict())
        self.model.eval()
        self.digest = frozen_digest(self.model, freeze)

    def __call__(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """float16 features, one row per step, of `columns` (numpy: images, instruction_embedding, proprio,
        embodiment_id, as the VLA batch format)."""
        n = len(columns["images"])
        out: list[np.ndarray] = []
        for start in range(0, n, self.batch_size):
            rows = slice(start, start + self.batch_size)
            batch = {k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in columns.items()}
            batch["embodiment_id"] = batch["embodiment_id"].long()
            out.append(self.model.features(batch, self.freeze)[self.column].numpy().astype(np.float16))
        return np.concatenate(out) if out else np.zeros((0,), dtype=np.float16)

    def matches(self, model: VLAModel) -> bool:
        """Whether `model` has the frozen weights these features were computed with (else they are stale for it)."""
        return model.config == self.model.config and frozen_digest(model, self.freeze) == self.digest


def frozen_digest(model: VLAModel, freeze: Freeze) -> str:
    """sha256 over the names and values of the parameters `freeze` holds fixed."""
    if freeze not in FREEZE_LEVELS:
        raise ValueError(f"freeze must be one of {FREEZE_LEVELS}, got {freeze!r}")
    digest = hashlib.sha256()
    parameters = dict(model.named_parameters())
    for name in model.frozen_parameters(freeze):
        digest.update(name.encode())
        digest.update(parameters[name].detach().cpu().numpy().tobytes())
    return digest.hexdigest()
