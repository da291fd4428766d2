"""Building blocks of the VLA: the image encoder, per-embodiment adapters, time embeddings, transformer stacks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fleet.policy.colours import colour_map
from fleet.policy.config import COLOUR_FEATURES, EmbodimentDims, VLAConfig


class ConvImageEncoder(nn.Module):
    """uint8 (B, H, W, 3) images -> (B, image_tokens_per_camera, d_model) tokens; a small strided conv net trained here.

    Three choices make the cube the instruction names easy to find in a 64 px top-down view (with
    only ~50 demonstrations per task):

    - `coord_channels`: two extra input channels holding each pixel's (x, y) in [-1, 1] (CoordConv),
      so position is a feature, not something the net must infer from padding;
    - `film`: every conv stage is FiLM-modulated by the instruction embedding (RT-1's FiLM
      EfficientNet), so "the red cube" selects red features before any pooling;
    - `keypoints`: a spatial softmax over the last full-resolution stage (Levine et al. 2016,
      robomimic, Diffusion Policy) gives K expected (x, y) image positions, projected to one extra
      token: precise coordinates that a 4x4 token grid alone blurs;
    - `colour_lexicon`: one more input channel, the pixels that have the hue the instruction names
      (`fleet.policy.colours.colour_map`), so a colour name or an object colour never seen in training is found
      by its hue.
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.coord_channels = config.coord_channels
        self.colour_lexicon = config.colour_lexicon
        self.grid_tokens = config.grid_tokens
        channels_in = 3 + (2 if config.coord_channels else 0) + (1 if config.colour_lexicon else 0)
        layers: list[nn.Module] = []  # [conv, norm, gelu] per stage, then the conv to d_model
        for channels in config.conv_channels:
            layers += [
                nn.Conv2d(channels_in, channels, kernel_size=3, stride=2, padding=1),
                nn.GroupNorm(min(8, channels), channels),
                nn.GELU(),
            ]
            channels_in = channels
        layers.append(nn.Conv2d(channels_in, config.d_model, kernel_size=3, stride=2, padding=1))
        self.net = nn.Sequential(*layers)
        self.film_sizes = [2 * c for c in config.conv_channels]
        self.film: nn.Linear | None = None
        if config.film:
            self.film = nn.Linear(config.text_dim, sum(self.film_sizes))
            nn.init.zeros_(self.film.weight)  # starts as the identity modulation
            nn.init.zeros_(self.film.bias)
        self.pos = nn.Parameter(torch.zeros(1, config.image_tokens_per_camera, config.d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.norm = nn.LayerNorm(config.d_model)
        self.keypoint_logits: nn.Conv2d | None = None
        if config.keypoints:
            self.keypoint_logits = nn.Conv2d(channels_in, config.keypoints, kernel_size=1)
            self.keypoint_proj = nn.Sequential(
                nn.Linear(2 * config.keypoints, config.d_model), nn.LayerNorm(config.d_model)
            )

    def forward(self, images: Tensor, text: Tensor | None = None) -> Tensor:
        """`text` (B, text_dim) is the instruction embedding (needed with `film` and `colour_lexicon`)."""
        if (self.film is not None or self.colour_lexicon) and text is None:
            raise ValueError("a FiLM or colour-lexicon image encoder needs the instruction embedding")
        rgb = images.permute(0, 3, 1, 2).float().div(255.0)  # uint8 NHWC -> [0, 1] NCHW
        x = rgb.mul(2.0).sub(1.0)
        if self.coord_channels:
            x = torch.cat([x, _coords(x.shape[2], x.shape[3], x.device).expand(x.shape[0], -1, -1, -1)], 1)
        if self.colour_lexicon:
            assert text is not None
            x = torch.cat([x, colour_map(rgb, text[:, -COLOUR_FEATURES:])], 1)
        films: list[Tensor] = []
        if self.film is not None:
            assert text is not None
            films = list(self.film(text).split(self.film_sizes, dim=-1))
        stages = len(self.film_sizes)
        for i in range(stages):
            conv, norm, act = self.net[3 * i : 3 * i + 3]
            x = norm(conv(x))
            if films:
                gamma, beta = films[i][:, :, None, None].chunk(2, dim=1)
                x = x * (1.0 + gamma) + beta
            x = act(x)
        out: list[Tensor] = []
        if self.grid_tokens:
            tokens = self.net[-1](x).flatten(2).transpose(1, 2)  # (B, h*w, d)
            out.append(self.norm(tokens + self.pos))
        if self.keypoint_logits is not None:
            out.append(self.keypoint_proj(spatial_softmax(self.keypoint_logits(x)))[:, None])
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)


def _coords(height: int, width: int, device: torch.device) -> Tensor:
    """(1, 2, H, W): x and y of every pixel centre in [-1, 1]."""
    ys = torch.linspace(-1.0, 1.0, height, device=device)
    xs = torch.linspace(-1.0, 1.0, width, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])[None]


def spatial_softmax(logits: Tensor) -> Tensor:
    """(B, K, H, W) logits -> (B, 2K) expected (x, y) in [-1, 1] of each channel's softmax over pixels."""
    b, k, h, w = logits.shape
    probs = logits.flatten(2).softmax(dim=-1).view(b, k, h, w)
    coords = _coords(h, w, logits.device)[0]  # (2, H, W)
    expected = torch.einsum("bkhw,chw->bkc", probs, coords)
    return expected.flatten(1)


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
        out: Tensor | None = None
        for e in present:
            rows = embodiment_ids == e
            y = self.adapters[self.names[e]](x[rows][..., : self.in_dims[e]])
            if out is None:  # the adapters' dtype (bfloat16 under autocast), not the input's
                out = y.new_zeros(*x.shape[:-1], self.out_width)
            out[rows, ..., : self.out_dims[e]] = y
        assert out is not None
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


class BatchFirstAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` (same parameters, same checkpoints) computed batch-first end to end.

    The stock module turns batch-first inputs sequence-first, splits the packed q/k/v projection by indexing and
    turns the result back: in training, each of those is a copy forward and a zero-filled buffer plus copies
    backward, ~15% of a learner update on this CPU with the model's short sequences (38 tokens). Here the packed
    projection is viewed as (3, B, heads, L, head_dim) and unbound, so the backward stacks the three gradients once.
    Masks and attention weights go to the stock path (the model uses neither).
    """

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        stock = need_weights or key_padding_mask is not None or attn_mask is not None or is_causal
        if stock or not self.batch_first or not self._qkv_same_embed_dim or key is not value:
            return super().forward(
                query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal,
            )  # fmt: skip
        b, length, width = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        weight, bias = self.in_proj_weight, self.in_proj_bias
        if query is key:  # self-attention: one packed projection
            qkv = F.linear(query, weight, bias).view(b, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:  # cross-attention: queries from `query`, keys and values from `key`
            q_bias, kv_bias = (None, None) if bias is None else (bias[:width], bias[width:])
            q = F.linear(query, weight[:width], q_bias).view(b, length, heads, head_dim).transpose(1, 2)
            kv = F.linear(key, weight[width:], kv_bias).view(b, key.shape[1], 2, heads, head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        with torch.autocast(q.device.type, enabled=False):  # fp32 even under autocast: CPU bf16 SDPA's backward is
            # ~10x slower than fp32's at these sizes (38 tokens, head_dim 32)
            out = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), dropout_p=self.dropout if self.training else 0.0
            ).to(q.dtype)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, width)), None


def _batch_first_attention(module: nn.Module) -> None:
    """Swap every stock attention inside `module` for `BatchFirstAttention` (same parameters, in place)."""
    for attention in module.modules():
        if type(attention) is nn.MultiheadAttention:
            attention.__class__ = BatchFirstAttention


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
    stack = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(config.d_model), enable_nested_tensor=False)
    _batch_first_attention(stack)
    return stack


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
    stack = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(config.d_model))
    _batch_first_attention(stack)
    return stack
