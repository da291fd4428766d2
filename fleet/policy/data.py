"""Training samples from episodes: (images, instruction embedding, proprio, embodiment, action chunk, return-to-go).

Sample `(episode, t)` holds the observation at step t and the chunk `actions[t : t + H]`. Near the
episode end the chunk is padded by repeating the last action, and `action_mask` is False on the
padded steps so the loss ignores them (LeRobot's `action_is_pad`). `returns` is the value head's regression
target at step t (`recap_returns`: -(steps to success) / horizon, or `failure_return` for a failed step), the
same targets the online learner trains the value head on.

    dataset = ChunkDataset(list(store.iter_episodes()), model_config, embedder=default_embedder())
    batch = dataset.sample_batch(np.random.default_rng(0), batch_size=64)   # dict of tensors, see fleet.policy.model
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from fleet.episodes import Episode
from fleet.policy.config import VLAConfig
from fleet.policy.language import InstructionEmbedder, embedder_for

# The value head's targets, RECAP-style (pi*0.6), the same in pre-training and in the online learner, so the
# value version 1 learnt is already on the learner's scale when the first advantages are taken from it.
VALUE_HORIZON = 200  # steps that normalize -(steps to success) into [-1, 0]
FAILURE_RETURN = -2.0  # value target of a failed step, below any success


def recap_returns(
    length: int, success: bool, *, horizon: int, failure_return: float, intervention: np.ndarray | None = None
) -> np.ndarray:
    """float32 (length,) value targets: -(steps to success)/horizon clipped to -1, or `failure_return`.

    With `intervention` (bool (length,)), a stretch of autonomous steps that ends where a human takes over is a
    failure of the policy whatever the episode's outcome (RLIF: the takeover is the negative signal): its steps
    get `failure_return`, so the steps that made the human step in are never up-weighted as a success.
    """
    if not success:
        return np.full(length, failure_return, dtype=np.float32)
    steps_left = length - np.arange(length, dtype=np.float32)
    out = np.maximum(-steps_left / np.float32(horizon), -1.0).astype(np.float32)
    if intervention is not None and intervention.any():
        human = np.asarray(intervention, dtype=bool)
        last = int(np.flatnonzero(human)[-1])
        # every autonomous stretch before the last human step ends in a takeover
        out[:last][~human[:last]] = failure_return
    return out


def chunk_indices(length: int, t: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Step indices (N, H) of the chunks starting at `t` (clamped to the last step) and their validity mask."""
    idx = t[:, None] + np.arange(horizon)[None, :]
    valid = idx < length
    return np.minimum(idx, length - 1), valid


@dataclass
class _EpisodeArrays:
    images: np.ndarray  # uint8 (T, cameras, S, S, 3)
    proprio: np.ndarray  # float32 (T, max_proprio_dim)
    actions: np.ndarray  # float32 (T, max_action_dim)
    returns: np.ndarray  # float32 (T,)
    intervention: np.ndarray  # bool (T,)
    embodiment_id: int
    instruction: np.ndarray  # float32 (texts, text_dim): the instruction and the other ways it is said in training


class ChunkDataset:
    """Every step of a set of episodes as a training sample for a model built from `config`."""

    def __init__(
        self,
        episodes: Sequence[Episode],
        config: VLAConfig,
        *,
        embedder: InstructionEmbedder,
        horizon: int = VALUE_HORIZON,
        failure_return: float = FAILURE_RETURN,
        instructions: Callable[[Episode], Sequence[str]] | None = None,
        seed: int = 0,
    ) -> None:
        """`instructions(episode)`: the texts an episode's instruction is said in during training (instruction
        augmentation: each sample draws one); None = the episode's own words only."""
        if horizon < 1 or failure_return >= -1.0:
            raise ValueError(f"horizon must be >= 1 and failure_return < -1, got {horizon}, {failure_return}")
        embedder = embedder_for(config, embedder)  # ValueError when the model read another encoder
        self.config = config
        self._instructions = instructions
        self._rng = np.random.default_rng(seed)
        self._episodes: list[_EpisodeArrays] = []
        owners: list[np.ndarray] = []
        for episode in episodes:
            if episode.meta.length == 0:
                continue
            arrays = self._convert(episode, embedder, horizon, failure_return)
            owners.append(np.full(episode.meta.length, len(self._episodes), dtype=np.int64))
            self._episodes.append(arrays)
        if not self._episodes:
            raise ValueError("ChunkDataset needs at least one non-empty episode")
        self._owner = np.concatenate(owners)
        self._step = np.concatenate([np.arange(len(e.actions)) for e in self._episodes])

    def _convert(
        self, episode: Episode, embedder: InstructionEmbedder, horizon: int, failure_return: float
    ) -> _EpisodeArrays:
        c = self.config
        meta = episode.meta
        where = f"episode {meta.robot_id}/{meta.episode_id}"
        dims = c.embodiment(meta.embodiment)  # KeyError naming the model's embodiments
        n = meta.length
        if episode.proprio.shape != (n, dims.proprio_dim):
            raise ValueError(
                f"{where}: proprio is {episode.proprio.shape}, {meta.embodiment} needs ({n}, {dims.proprio_dim})"
            )
        if episode.actions.shape != (n, dims.action_dim):
            raise ValueError(
                f"{where}: actions are {episode.actions.shape}, {meta.embodiment} needs ({n}, {dims.action_dim})"
            )
        cams = []
        for camera in c.cameras:
            frames = episode.frames.get(camera)
            if frames is None:
                raise ValueError(f"{where}: no frames for camera {camera!r} (has {sorted(episode.frames)})")
            if frames.shape[1:] != (c.image_size, c.image_size, 3):
                raise ValueError(
                    f"{where}: camera {camera!r} frames are {frames.shape[1:]}, model needs {c.image_size}px"
                )
            cams.append(frames)
        proprio = np.zeros((n, c.max_proprio_dim), dtype=np.float32)
        proprio[:, : dims.proprio_dim] = episode.proprio
        actions = np.zeros((n, c.max_action_dim), dtype=np.float32)
        actions[:, : dims.action_dim] = np.clip(episode.actions, -1.0, 1.0)
        texts = list(self._instructions(episode)) if self._instructions is not None else [meta.instruction]
        instruction = np.stack([np.asarray(embedder.embed(text), dtype=np.float32) for text in texts])
        if instruction.shape[1:] != (c.text_dim,):
            raise ValueError(f"embedder gives {instruction.shape[1:]}, the model needs ({c.text_dim},)")
        return _EpisodeArrays(
            images=np.ascontiguousarray(np.stack(cams, axis=1)),
            proprio=proprio,
            actions=actions,
            returns=recap_returns(
                meta.length,
                bool(meta.success),
                horizon=horizon,
                failure_return=failure_return,
                intervention=np.asarray(episode.intervention, dtype=bool),
            ),  # fmt: skip
            intervention=np.asarray(episode.intervention, dtype=bool),
            embodiment_id=c.embodiment_index(meta.embodiment),
            instruction=instruction,
        )

    def __len__(self) -> int:
        return len(self._owner)

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def get_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """The samples at flat `indices` as a model batch (plus `intervention`, bool (B,), for the learner)."""
        horizon = self.config.chunk_size
        images, instr, proprio, ids, actions, masks, returns, interv = [], [], [], [], [], [], [], []
        for i in np.asarray(indices, dtype=np.int64):
            e = self._episodes[self._owner[i]]
            t = int(self._step[i])
            idx, valid = chunk_indices(len(e.actions), np.array([t]), horizon)
            images.append(e.images[t])
            instr.append(e.instruction[self._rng.integers(len(e.instruction))] if len(e.instruction) > 1
                         else e.instruction[0])  # fmt: skip
            proprio.append(e.proprio[t])
            ids.append(e.embodiment_id)
            actions.append(e.actions[idx[0]])
            masks.append(valid[0])
            returns.append(e.returns[t])
            interv.append(e.intervention[t])
        return {
            "images": torch.from_numpy(np.stack(images)),
            "instruction_embedding": torch.from_numpy(np.stack(instr)),
            "proprio": torch.from_numpy(np.stack(proprio)),
            "embodiment_id": torch.tensor(ids, dtype=torch.int64),
            "actions": torch.from_numpy(np.stack(actions)),
            "action_mask": torch.from_numpy(np.stack(masks)),
            "returns": torch.tensor(returns, dtype=torch.float32),
            "return_mask": torch.ones(len(ids), dtype=torch.bool),
            "intervention": torch.tensor(interv, dtype=torch.bool),
        }

    def sample_batch(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        """`batch_size` samples drawn uniformly over all steps (with replacement)."""
        return self.get_batch(rng.integers(0, len(self), size=batch_size))


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style shift: edge-pad uint8 (B, C, S, S, 3) images by `pad` pixels, crop back at a random offset."""
    if pad <= 0:
        return images
    b, cams, side = images.shape[0], images.shape[1], images.shape[2]
    x = images.flatten(0, 1).permute(0, 3, 1, 2).float()  # (B*C, 3, S, S)
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).repeat_interleave(cams, dim=0)
    crops = [x[i, :, dy : dy + side, dx : dx + side] for i, (dy, dx) in enumerate(offsets.tolist())]
    out = torch.stack(crops).to(torch.uint8).permute(0, 2, 3, 1)
    return out.unflatten(0, (b, cams)).contiguous()
