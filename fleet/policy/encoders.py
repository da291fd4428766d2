"""Building blocks of the VLA: the image encoder, per-embodiment adapters, time embeddings, transformer stacks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fleet.policy.config import EmbodimentDims, VLAConfig


class ConvImageEncoder(nn.Module):
    """uint8 (B, H, W, 3) images -> (B, (H/16)*(W/16), d_model) tokens; a small strided conv net trained here."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels_in = 3
        for channels in config.conv_channels:
            layers += [
                nn.Conv2d(channels_in, channels, kernel_size=3, stride=2, padding=1),
                nn.GroupNorm(min(8, channels), channels),
                nn.GELU(),
            ]
            channels_in = channels
        layers.append(nn.Conv2d(channels_in, config.d_model, kernel_size=3, stride=2, padding=1))
        self.net = nn.Sequential(*layers)
        self.pos = nn.Parameter(torch.zeros(1, config.image_tokens_per_camera, config.d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, images: Tensor) -> Tensor:
        x = images.permute(0, 3, 1, 2).float().mul(2.0 / 255.0).sub(1.0)  # uint8 NHWC -> [-1, 1] NCHW
        x = self.net(x)  # (B, d, h, w)
        tokens = x.flatten(2).transpose(1, 2)  # (B, h*w, d)
        return self.norm(tokens + self.pos)


class EmbodimentLinear(nn.Module):
    """One `nn.Linear` per embodiment between padded tensors.

    Input adapters (`in_dims` differ, e.g. proprio) read the first `in_dims[e]` features of a
    zero-padded input; output adapters (`out_dims` differ, e.g. actions) write the first
    `out_dims[e]` features of a zero-padded output of width `max(out_dims)`. A batch may mix
    embodiments: each row goes through its own embodiment's Linear.
    """

    def __init__(self, names: Sequence[str], in_dims: Sequence[int], out_dims: Sequence[int]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.in_dims = tuple(in_dims)
        self.out_dims = tuple(out_dims)
        self.out_width = max(self.out_dims)
        self.adapters = nn.ModuleDict(
            {n: nn.Linear(i, o) for n, i, o in zip(self.names, self.in_dims, self.out_dims, strict=True)}
        )

    def forward(self, x: Tensor, embodiment_ids: Tensor) -> Tensor:
        """x: (B, ..., max_in) padded; embodiment_ids: (B,) long -> (B, ..., max_out) zero-padded."""
        present = sorted(set(embodiment_ids.tolist()))
        if len(present) == 1:  # the common case (inference, single-embodiment batches): no scatter
            e = present[0]
            y = self.adapters[self.names[e]](x[..., : self.in_dims[e]])
            return F.pad(y, (0, self.out_width - self.out_dims[e]))
        out = x.new_zeros(*x.shape[:-1], self.out_width)
        for e in present:
            rows = embodiment_ids == e
            out[rows, ..., : self.out_dims[e]] = self.adapters[self.names[e]](x[rows][..., : self.in_dims[e]])
        return out


def proprio_adapter(embodiments: Sequence[EmbodimentDims], d_model: int) -> EmbodimentLinear:
    names = [e.name for e in embodiments]
    return EmbodimentLinear(names, [e.proprio_dim for e in embodiments], [d_model] * len(names))


def action_in_adapter(embodiments: Sequence[EmbodimentDims], d_model: int) -> EmbodimentLinear:
    names = [e.name for e in embodiments]
    return EmbodimentLinear(names, [e.action_dim for e in embodiments], [d_model] * len(names))


def action_out_adapter(embodiments: Sequence[EmbodimentDims], d_model: int, per_dim: int = 1) -> EmbodimentLinear:
    """d_model -> action_dim * per_dim (per_dim = bins for the discrete head)."""
    names = [e.name for e in embodiments]
    return EmbodimentLinear(names, [d_model] * len(names), [e.action_dim * per_dim for e in embodiments])


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """(B,) times in [0, 1] -> (B, dim) sin/cos features (as in diffusion / pi0 time embeddings)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def encoder_stack(config: VLAConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        config.d_model,
        config.num_heads,
        dim_feedforward=config.d_model * config.ff_mult,
        dropout=config.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(config.d_model), enable_nested_tensor=False)


def decoder_stack(config: VLAConfig, layers: int) -> nn.TransformerDecoder:
    """Self-attention over the chunk's tokens + cross-attention to the trunk's tokens (the action expert)."""
    layer = nn.TransformerDecoderLayer(
        config.d_model,
        config.num_heads,
        dim_feedforward=config.d_model * config.ff_mult,
        dropout=config.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(config.d_model))
