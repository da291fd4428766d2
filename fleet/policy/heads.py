"""Action heads over the trunk's tokens: pi0-style flow matching (default), discrete 256-bin tokens, and the value head.

Both action heads share one interface, so the model (and the learner) never branch on the head:

- `loss(memory, embodiment_ids, actions, mask, generator) -> (B,)` per-sample loss, already
  averaged over the valid (step, dimension) entries of each sample;
- `sample(memory, embodiment_ids, generator) -> (B, H, max_action_dim)` an action chunk.

`memory` is the trunk's output (B, N, d); `actions` are zero-padded to the widest embodiment and
`mask` (B, H, max_action_dim) marks the entries that exist (the embodiment's dims, the steps
before the episode ended). Both heads are action *experts* in pi0's sense: a small transformer
whose H chunk tokens self-attend and cross-attend to the trunk, with per-embodiment adapters in
and out.

Flow-matching convention (pi0 / openpi): t = 1 is pure noise, t = 0 the data::

    x_t = t * noise + (1 - t) * actions,    u = noise - actions,    loss = |v_theta(x_t, t) - u|^2

t ~ Beta(1.5, 1) * 0.999 + 0.001 (biased toward noise, as in pi0) or uniform. Inference integrates
dx/dt = v from t = 1 to t = 0 with `flow_steps` Euler steps of size -1/flow_steps.

The discrete head (RT-2 / OpenVLA style) predicts each dimension's bin among `action_bins`
uniform bins over [-1, 1] with cross-entropy; unlike RT-2 it decodes all H x A tokens in parallel
from learned query tokens (one pass, as in OpenVLA-OFT), and returns bin centres (argmax).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fleet.policy.config import VLAConfig
from fleet.policy.encoders import action_in_adapter, action_out_adapter, decoder_stack, sinusoidal_embedding


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """(B, ...) values and mask -> (B,) mean over the masked entries of each sample (0 where none)."""
    m = mask.to(values.dtype)
    dims = tuple(range(1, values.ndim))
    return (values * m).sum(dim=dims) / m.sum(dim=dims).clamp(min=1.0)


class FlowMatchingHead(nn.Module):
    """pi0-style action expert: predicts the flow velocity of a noisy action chunk (see the module docstring)."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        d = config.d_model
        self.config = config
        self.action_in = action_in_adapter(config.embodiments, d)
        self.time_fuse = nn.Sequential(nn.Linear(2 * d, d), nn.SiLU(), nn.Linear(d, d))  # pi0's action_time_mlp
        self.pos = nn.Parameter(torch.zeros(1, config.chunk_size, d))
        nn.init.normal_(self.pos, std=0.02)
        self.decoder = decoder_stack(config, config.expert_layers)
        self.action_out = action_out_adapter(config.embodiments, d)

    def velocity(self, x_t: Tensor, t: Tensor, memory: Tensor, embodiment_ids: Tensor) -> Tensor:
        """x_t (B, H, A_max), t (B,) -> predicted velocity (B, H, A_max)."""
        tokens = self.action_in(x_t, embodiment_ids)
        time = sinusoidal_embedding(t, tokens.shape[-1])[:, None, :].expand_as(tokens)
        tokens = self.time_fuse(torch.cat([tokens, time], dim=-1)) + self.pos
        return self.action_out(self.decoder(tokens, memory), embodiment_ids)

    def sample_time(self, batch: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        u = torch.rand(batch, generator=generator, device=device)
        if self.config.flow_time_dist == "beta":
            u = u.pow(1.0 / 1.5)  # Beta(1.5, 1) by inverse CDF (its CDF is x ** 1.5)
        return u * 0.999 + 0.001

    def loss(
        self, memory: Tensor, embodiment_ids: Tensor, actions: Tensor, mask: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        noise = torch.randn(actions.shape, generator=generator, device=actions.device)
        t = self.sample_time(actions.shape[0], generator, actions.device)
        x_t = t[:, None, None] * noise + (1.0 - t[:, None, None]) * actions
        target = noise - actions
        v = self.velocity(x_t, t, memory, embodiment_ids)
        return masked_mean((v - target).square(), mask)

    def sample(self, memory: Tensor, embodiment_ids: Tensor, generator: torch.Generator | None) -> Tensor:
        shape = (memory.shape[0], self.config.chunk_size, self.config.max_action_dim)
        x = torch.randn(shape, generator=generator, device=memory.device)
        steps = self.config.flow_steps
        dt = -1.0 / steps
        for i in range(steps):
            t = torch.full((shape[0],), 1.0 + i * dt, device=memory.device)
            x = x + dt * self.velocity(x, t, memory, embodiment_ids)
        return x


class DiscreteActionHead(nn.Module):
    """RT-2/OpenVLA-style action tokens: `action_bins` bins per dimension, cross-entropy, parallel decoding."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        d = config.d_model
        self.config = config
        self.queries = nn.Parameter(torch.zeros(1, config.chunk_size, d))
        nn.init.normal_(self.queries, std=0.02)
        self.decoder = decoder_stack(config, config.expert_layers)
        self.action_out = action_out_adapter(config.embodiments, d, per_dim=config.action_bins)

    def logits(self, memory: Tensor, embodiment_ids: Tensor) -> Tensor:
        """(B, H, A_max, bins); rows past an embodiment's action_dim are zeros."""
        queries = self.queries.expand(memory.shape[0], -1, -1)
        flat = self.action_out(self.decoder(queries, memory), embodiment_ids)
        return flat.unflatten(-1, (self.config.max_action_dim, self.config.action_bins))

    def to_bins(self, actions: Tensor) -> Tensor:
        bins = self.config.action_bins
        return ((actions.clamp(-1.0, 1.0) + 1.0) * 0.5 * bins).floor().long().clamp(0, bins - 1)

    def from_bins(self, index: Tensor) -> Tensor:
        return (index.float() + 0.5) * (2.0 / self.config.action_bins) - 1.0  # bin centres

    def loss(
        self, memory: Tensor, embodiment_ids: Tensor, actions: Tensor, mask: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        logits = self.logits(memory, embodiment_ids)
        ce = F.cross_entropy(logits.flatten(0, 2), self.to_bins(actions).flatten(), reduction="none")
        return masked_mean(ce.view(actions.shape), mask)

    def sample(self, memory: Tensor, embodiment_ids: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.from_bins(self.logits(memory, embodiment_ids).argmax(dim=-1))


class ValueHead(nn.Module):
    """Scalar state value from the trunk's value token (for AWR/RECAP-style advantages)."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        d = config.d_model
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    def forward(self, value_token: Tensor) -> Tensor:
        return self.net(value_token).squeeze(-1)


def build_action_head(config: VLAConfig) -> FlowMatchingHead | DiscreteActionHead:
    if config.action_head == "flow":
        return FlowMatchingHead(config)
    return DiscreteActionHead(config)
