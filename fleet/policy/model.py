"""The VLA network: image/text/proprio/embodiment tokens -> transformer trunk -> action head + value head.

Token sequence of the trunk (N = 4 + cameras * (grid tokens + keypoint token))::

    [embodiment] [instruction] [proprio] [value] [image tokens of camera 0] [camera 1] ...

A training/inference batch is a dict of tensors (the learner builds the same columns):

    images                 uint8   (B, cameras, S, S, 3)
    instruction_embedding  float32 (B, text_dim)         frozen MiniLM embedding
    proprio                float32 (B, max_proprio_dim)  zero-padded past the embodiment's proprio_dim
    embodiment_id          int64   (B,)                  index into VLAConfig.embodiments
    actions                float32 (B, H, max_action_dim) zero-padded past the embodiment's action_dim  [loss]
    action_mask            bool    (B, H)                False for chunk steps past the episode end      [loss]
    returns                float32 (B,)                  return-to-go target of the value head          [optional]
    return_mask            bool    (B,)                  which samples have a return target              [optional]

`VLAModel.loss(batch, weights=w)` returns `loss/total`, `loss/action`, `loss/value` (and
per-sample terms), so the learner can weight samples (AWR advantages, HG-DAgger corrections); `w` may be
a function of the value predictions, so advantages come from the same forward pass as the loss.

A learner that holds part of the network fixed (`Freeze`) trains on that part's output instead of the
images, computed once per step (`VLAModel.features`) and passed in place of `images`:

    image_tokens           float   (B, cameras, tokens per camera, d_model)   freeze "encoder"
    memory                 float   (B, N, d_model)                            freeze "perception"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fleet.policy.config import VLAConfig
from fleet.policy.encoders import ConvImageEncoder, encoder_stack, proprio_adapter
from fleet.policy.heads import ValueHead, build_action_head, masked_mean

Batch = Mapping[str, Tensor]
Weights = Tensor | Callable[[Tensor], Tensor]  # per-sample weights, or a function of the (detached) values
_PREFIX_TOKENS = 4  # embodiment, instruction, proprio, value

# What a learner may hold fixed: nothing; the image encoder ("encoder": its tokens are cached per step, the
# trunk and heads train, as LeRobot's `freeze_vision_encoder`); or everything up to the trunk's output
# ("perception": only the action expert and the value head train, as SmolVLA's `train_expert_only`).
Freeze = Literal["none", "encoder", "perception"]
FREEZE_LEVELS: tuple[str, ...] = get_args(Freeze)
FEATURE_COLUMNS = {"encoder": "image_tokens", "perception": "memory"}  # the cached column of each level
_PERCEPTION = (
    "image_encoder", "camera_embedding", "text_proj", "proprio_in", "proprio_norm", "embodiment_embedding",
    "value_token", "prefix_pos", "trunk",
)  # fmt: skip


class VLAModel(nn.Module):
    """The fleet VLA (about 1.6M parameters at the default config); see the module docstring for the batch format."""

    dim_mask: Tensor  # (embodiments, max_action_dim) bool buffer: which action dims each embodiment has

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.image_encoder = ConvImageEncoder(config)
        self.camera_embedding = nn.Parameter(torch.zeros(len(config.cameras), 1, d))
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, d), nn.LayerNorm(d))
        self.proprio_in = proprio_adapter(config.embodiments, d)
        self.proprio_norm = nn.LayerNorm(d)
        self.embodiment_embedding = nn.Embedding(len(config.embodiments), d)
        self.value_token = nn.Parameter(torch.zeros(1, 1, d))
        self.prefix_pos = nn.Parameter(torch.zeros(1, _PREFIX_TOKENS, d))
        for p in (self.camera_embedding, self.value_token, self.prefix_pos):
            nn.init.normal_(p, std=0.02)
        self.trunk = encoder_stack(config, config.trunk_layers)
        self.action_head = build_action_head(config)
        self.value_head = ValueHead(config)
        self.aux_head: nn.Sequential | None = None
        if config.aux_action_weight > 0:  # keypoint token(s) + proprio token -> action chunk (training only)
            self.aux_head = nn.Sequential(
                nn.Linear(d * (len(config.cameras) + 1), 2 * d),
                nn.GELU(),
                nn.Linear(2 * d, config.chunk_size * config.max_action_dim),
            )
        dim_mask = torch.zeros(len(config.embodiments), config.max_action_dim, dtype=torch.bool)
        for i, e in enumerate(config.embodiments):
            dim_mask[i, : e.action_dim] = True
        self.register_buffer("dim_mask", dim_mask, persistent=False)  # derived from the config, not saved

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- batch checks -----------------------------------------------------------------------------------

    def check_batch(self, batch: Batch, *, with_actions: bool) -> None:
        """Raise ValueError naming the column and the expected shape when a batch does not fit this model."""
        c = self.config
        side = c.image_size
        floats = (torch.float32, torch.float16, torch.bfloat16)
        tokens = self.tokens_per_camera
        observation: dict[str, tuple[tuple[int | None, ...], tuple[torch.dtype, ...]]] = {
            "images": ((None, len(c.cameras), side, side, 3), (torch.uint8,)),
            "image_tokens": ((None, len(c.cameras), tokens, c.d_model), floats),
            "memory": ((None, _PREFIX_TOKENS + len(c.cameras) * tokens, c.d_model), floats),
        }
        given = [key for key in observation if key in batch]
        if len(given) != 1:
            raise ValueError(f"batch needs exactly one of the columns {list(observation)}, got {given or 'none'}")
        expected: dict[str, tuple[tuple[int | None, ...], tuple[torch.dtype, ...]]] = {
            given[0]: observation[given[0]],
            "instruction_embedding": ((None, c.text_dim), (torch.float32,)),
            "proprio": ((None, c.max_proprio_dim), (torch.float32,)),
            "embodiment_id": ((None,), (torch.int64, torch.int32)),
        }
        if with_actions:
            expected["actions"] = ((None, c.chunk_size, c.max_action_dim), (torch.float32,))
            expected["action_mask"] = ((None, c.chunk_size), (torch.bool,))
        if "returns" in batch:
            expected["returns"] = ((None,), (torch.float32,))
        batch_size: int | None = None
        for key, (shape, dtypes) in expected.items():
            if key not in batch:
                raise ValueError(f"batch is missing column {key!r} (expected shape {_fmt(shape)})")
            value = batch[key]
            if not isinstance(value, Tensor) or value.dtype not in dtypes or value.ndim != len(shape):
                got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"batch[{key!r}] must be a {dtypes[0]} tensor of shape {_fmt(shape)}, got {got}")
            if any(s is not None and s != v for s, v in zip(shape, value.shape, strict=True)):
                raise ValueError(f"batch[{key!r}] must have shape {_fmt(shape)}, got {tuple(value.shape)}")
            if batch_size is None:
                batch_size = value.shape[0]
            elif value.shape[0] != batch_size:
                raise ValueError(f"batch[{key!r}] has {value.shape[0]} rows, other columns have {batch_size}")
        ids = batch["embodiment_id"]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(c.embodiments)):
            raise ValueError(f"batch['embodiment_id'] must index {list(c.embodiment_names)}, got {ids.tolist()}")

    @property
    def tokens_per_camera(self) -> int:
        """Image tokens the encoder gives per camera: its grid tokens and its keypoint token."""
        c = self.config
        return (c.image_tokens_per_camera if c.grid_tokens else 0) + (1 if c.keypoints else 0)

    # --- frozen parts ----------------------------------------------------------------------------------

    def frozen_parameters(self, freeze: Freeze) -> list[str]:
        """Names of the parameters a learner with `freeze` holds fixed."""
        if freeze not in FREEZE_LEVELS:
            raise ValueError(f"freeze must be one of {FREEZE_LEVELS}, got {freeze!r}")
        parts = {"none": (), "encoder": ("image_encoder",), "perception": _PERCEPTION}[freeze]
        return [name for name, _ in self.named_parameters() if name.split(".")[0] in parts]

    @torch.no_grad()
    def features(self, batch: Batch, freeze: Freeze) -> dict[str, Tensor]:
        """The output of the part `freeze` holds fixed, one row per batch row (`FEATURE_COLUMNS`): what a learner
        caches in place of the images. Empty for "none"."""
        if freeze == "none":
            return {}
        if freeze == "encoder":
            return {"image_tokens": self.encode_images(batch["images"], batch["instruction_embedding"])}
        if freeze == "perception":
            return {"memory": self.encode(batch)}
        raise ValueError(f"freeze must be one of {FREEZE_LEVELS}, got {freeze!r}")

    # --- forward pieces --------------------------------------------------------------------------------

    def encode_images(self, images: Tensor, text: Tensor) -> Tensor:
        """The image encoder's tokens (B, cameras, tokens per camera, d_model), FiLM-conditioned on `text`."""
        b, cams = images.shape[:2]
        tokens = self.image_encoder(images.flatten(0, 1), text.repeat_interleave(cams, dim=0))
        return tokens.unflatten(0, (b, cams))

    def encode(self, batch: Batch) -> Tensor:
        """Trunk output tokens (B, N, d_model); token 3 is the value token (the batch's cached `memory` if any)."""
        if "memory" in batch:
            return batch["memory"].float()
        return self._trunk(*self.tokens(batch))

    def _trunk(self, prefix: Tensor, image_tokens: Tensor) -> Tensor:
        return self.trunk(torch.cat([prefix + self.prefix_pos, image_tokens.flatten(1, 2)], dim=1))

    def tokens(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The trunk's inputs: prefix tokens (B, 4, d) and image tokens (B, cameras, tokens per camera, d); the image
        tokens come from the batch's cached `image_tokens` when it has them."""
        text = batch["instruction_embedding"]
        # Training forwards only: not inference, and not the features a learner caches (computed without grad).
        proprio = batch["proprio"]
        if self.training and torch.is_grad_enabled():
            if self.config.instruction_noise > 0:
                text = text + self.config.instruction_noise * torch.randn_like(text)
            if self.config.proprio_noise > 0:
                proprio = proprio + self.config.proprio_noise * torch.randn_like(proprio)
        cached = batch.get("image_tokens")
        image_tokens = cached.float() if cached is not None else self.encode_images(batch["images"], text)
        b = image_tokens.shape[0]
        image_tokens = image_tokens + self.camera_embedding[None]
        ids = batch["embodiment_id"].long()
        prefix = torch.stack(
            [
                self.embodiment_embedding(ids),
                self.text_proj(text),
                self.proprio_norm(self.proprio_in(proprio, ids)),
                self.value_token.expand(b, -1, -1)[:, 0],
            ],
            dim=1,
        )
        return prefix, image_tokens

    def action_mask(self, batch: Batch) -> Tensor:
        """(B, H, A_max) bool: valid chunk steps x the embodiment's action dims."""
        dims = self.dim_mask[batch["embodiment_id"].long()]
        return batch["action_mask"][:, :, None] & dims[:, None, :]

    # --- training -------------------------------------------------------------------------------------

    def loss(
        self, batch: Batch, *, weights: Weights | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Losses for one batch; `weights` (B,) scale each sample's action loss (mean of w_i * l_i over the batch).
        `weights` may be a function of the value predictions (B,, detached): advantages without a second forward.

        Returns `loss/total` (what to backpropagate), `loss/action`, `loss/value` (Huber to
        `returns` over rows with `return_mask`, unweighted: the value must fit all data, including
        what the policy should not imitate; 0 without returns), `loss/aux` (the weighted L1 of the
        aux head, 0 without one or when the batch carries cached features: the aux head exists to teach the
        image encoder, which is then frozen), the detached per-sample `per_sample/action`, `value`
        (predictions, for advantages) and `weights`. `generator` seeds the flow-matching noise and time.
        """
        self.check_batch(batch, with_actions=True)
        prefix: Tensor | None = None
        image_tokens: Tensor | None = None
        if "memory" in batch:
            memory = batch["memory"].float()
        else:
            prefix, image_tokens = self.tokens(batch)
            memory = self._trunk(prefix, image_tokens)
        value_token = memory[:, 3]
        if self.config.value_detach_trunk:
            value_token = value_token.detach()
        value = self.value_head(value_token)
        if callable(weights):
            weights = weights(value.detach())
        ids = batch["embodiment_id"].long()
        mask = self.action_mask(batch)
        per_sample = self.action_head.loss(memory, ids, batch["actions"], mask, generator)
        if weights is not None and weights.shape != per_sample.shape:
            raise ValueError(f"weights must have shape {tuple(per_sample.shape)}, got {tuple(weights.shape)}")
        action_loss = _weighted_mean(per_sample, weights)
        aux_loss = per_sample.new_zeros(())
        if self.aux_head is not None and "images" in batch and image_tokens is not None and prefix is not None:
            features = torch.cat([image_tokens[:, :, -1].flatten(1), prefix[:, 2]], dim=-1)  # keypoints, proprio
            aux = self.aux_head(features).view_as(batch["actions"])
            aux_loss = _weighted_mean(masked_mean((aux - batch["actions"]).abs(), mask), weights)

        value_loss = value.new_zeros(())
        if "returns" in batch:
            rows = batch.get("return_mask")
            rows = torch.ones_like(value, dtype=torch.bool) if rows is None else rows.bool()
            if bool(rows.any()):
                value_loss = F.smooth_l1_loss(value[rows], batch["returns"][rows])
        c = self.config
        total = action_loss + c.value_loss_weight * value_loss + c.aux_action_weight * aux_loss
        return {
            "loss/total": total,
            "loss/action": action_loss,
            "loss/value": value_loss,
            "loss/aux": aux_loss,
            "per_sample/action": per_sample.detach(),
            "value": value.detach(),
            "weights": (weights if weights is not None else torch.ones_like(per_sample)).detach(),
        }

    # --- inference ------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, batch: Batch, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(actions (B, H, A_max) clipped to [-1, 1], zero past each embodiment's action_dim; values (B,))."""
        self.check_batch(batch, with_actions=False)
        memory = self.encode(batch)
        ids = batch["embodiment_id"].long()
        actions = self.action_head.sample(memory, ids, generator).clamp(-1.0, 1.0)
        actions = actions * self.dim_mask[ids][:, None, :]
        return actions, self.value_head(memory[:, 3])

    @torch.no_grad()
    def predict_value(self, batch: Batch) -> Tensor:
        """Value estimates (B,) without sampling actions."""
        self.check_batch(batch, with_actions=False)
        return self.value_head(self.encode(batch)[:, 3])


def _weighted_mean(per_sample: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of w_i * l_i over the batch (plain mean without weights)."""
    return per_sample.mean() if weights is None else (weights.to(per_sample.dtype) * per_sample).mean()


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("B" if s is None else str(s) for s in shape) + ")"
