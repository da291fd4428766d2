"""`VLAPolicy`: the `Policy` the robot runtime calls, wrapping a `VLAModel` for single-observation CPU inference.

One `infer(obs)` validates the observation, looks the instruction embedding up in the embedder's
cache (MiniLM runs once per new instruction, never per step), runs the model under
`torch.inference_mode()` and returns one chunk (H, action_dim) float32 in [-1, 1]. Sampling noise comes
from a private generator seeded at construction and on `reset()`, so an episode's chunks are
reproducible given the seed and the observations.

    policy = VLAPolicy.from_checkpoint("ckpt/", expected_sha256=tag_sha)
    chunk = policy.infer(obs)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fleet.policy.base import Observation, check_observation
from fleet.policy.checkpoint import load_checkpoint
from fleet.policy.language import InstructionEmbedder, default_embedder, embedder_for
from fleet.policy.model import VLAModel


class VLAPolicy:
    """Implements `fleet.policy.base.Policy` for a `VLAModel` on CPU."""

    def __init__(
        self,
        model: VLAModel,
        *,
        embedder: InstructionEmbedder | None = None,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        """`embedder` defaults to the process-wide MiniLM; `num_threads` (if given) sets torch's global thread count."""
        self.model = model.eval()
        self.config = model.config
        # ValueError when the model was trained on another encoder's vectors
        self.embedder = embedder_for(self.config, embedder if embedder is not None else default_embedder())
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_checkpoint(
        cls,
        directory: Path | str,
        *,
        expected_sha256: str | None = None,
        expected_config_sha256: str | None = None,
        embedder: InstructionEmbedder | None = None,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> VLAPolicy:
        """Load and verify a checkpoint (CheckpointError if it fails any check) and wrap it."""
        model = load_checkpoint(
            directory, expected_sha256=expected_sha256, expected_config_sha256=expected_config_sha256
        )
        return cls(model, embedder=embedder, seed=seed, num_threads=num_threads)

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    def reset(self) -> None:
        """New episode: re-seed the sampling noise (the instruction cache is kept)."""
        self._generator.manual_seed(self.seed)

    def _instruction(self, text: str) -> torch.Tensor:
        cached = self._text_cache.get(text)
        if cached is None:
            vec = np.asarray(self.embedder.embed(text), dtype=np.float32)
            if vec.shape != (self.config.text_dim,):
                raise ValueError(f"embedder returned shape {vec.shape}, expected ({self.config.text_dim},)")
            cached = torch.from_numpy(vec.copy())[None]
            if len(self._text_cache) > 4096:  # instructions are few; bound it anyway
                self._text_cache.clear()
            self._text_cache[text] = cached
        return cached

    def make_batch(self, obs: Observation) -> dict[str, torch.Tensor]:
        """The one-row model batch for a validated observation (also used by tests and the bench)."""
        check_observation(obs, self.config)
        c = self.config
        index = c.embodiment_index(obs["embodiment"])
        proprio = np.zeros((1, c.max_proprio_dim), dtype=np.float32)
        proprio[0, : c.embodiments[index].proprio_dim] = obs["proprio"]
        images = np.stack([np.asarray(obs["images"][cam]) for cam in c.cameras])[None]
        return {
            "images": torch.from_numpy(np.ascontiguousarray(images)),
            "instruction_embedding": self._instruction(obs["instruction"]),
            "proprio": torch.from_numpy(proprio),
            "embodiment_id": torch.tensor([index], dtype=torch.int64),
        }

    def infer(self, obs: Observation, *, seed: int | None = None) -> np.ndarray:
        """One action chunk float32 (H, action_dim) in [-1, 1]; `seed` replaces the noise stream for this call."""
        batch = self.make_batch(obs)
        generator = self._generator if seed is None else torch.Generator().manual_seed(seed)
        with torch.inference_mode():  # cheaper than no_grad; nothing here is ever fed back to autograd
            actions, _ = self.model.predict(batch, generator=generator)
        action_dim = self.config.embodiments[int(batch["embodiment_id"][0])].action_dim
        return actions[0, :, :action_dim].numpy().astype(np.float32, copy=True)

    def infer_many(self, observations: Sequence[Observation]) -> list[np.ndarray]:
        """One action chunk per observation from one batched forward (the gate runs its episodes in lockstep:
        a forward of 12 rows costs ~13.5 ms a row on this CPU against ~53 ms for one). The rows share the
        policy's noise stream, so a row's chunk depends on its place in the batch, not on its observation alone."""
        if not observations:
            return []
        rows = [self.make_batch(obs) for obs in observations]
        batch = {key: torch.cat([row[key] for row in rows]) for key in rows[0]}
        with torch.inference_mode():
            actions, _ = self.model.predict(batch, generator=self._generator)
        dims = [self.config.embodiments[int(i)].action_dim for i in batch["embodiment_id"]]
        return [actions[i, :, :dim].numpy().astype(np.float32, copy=True) for i, dim in enumerate(dims)]

    def value(self, obs: Observation) -> float:
        """The value head's estimate for one observation (used by the dashboard and for advantages)."""
        return float(self.model.predict_value(self.make_batch(obs))[0])
