"""The policy can learn: a few hundred steps on one synthetic demonstration reproduce its action chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fleet.policy.config import debug_model_config
from fleet.policy.data import ChunkDataset
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy
from fleet.policy.train import train_step
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder, make_episode, observation

# head -> (steps, noise draws per demo step and batch, max mean-absolute error of the inferred chunks). A random
# policy is ~0.5 off; the discrete head's floor is half a bin (1/256) and its loss has no noise to average over;
# the flow head regresses a velocity field over noise levels and converges more slowly.
BUDGET = {"flow": (300, 4, 0.1), "discrete": (200, 1, 0.03)}


@pytest.mark.parametrize("head", sorted(BUDGET))
def test_overfits_one_demonstration(head: str) -> None:
    steps, draws, tolerance = BUDGET[head]
    config = debug_model_config(action_head=head, text_encoder=FAKE_ENCODER)
    episode = make_episode("kuka", length=16)
    embedder = HashEmbedder()
    dataset = ChunkDataset([episode], config, embedder=embedder)
    batch = dataset.get_batch(np.tile(np.arange(len(dataset)), draws))  # every step of the demo

    torch.manual_seed(0)
    model = VLAModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-4)
    first = None
    for step in range(steps):
        stats = train_step(model, optimizer, batch, generator=torch.Generator().manual_seed(step))
        schedule.step()
        first = first if first is not None else stats["loss/action"]
    assert stats["loss/action"] < 0.2 * first

    policy = VLAPolicy(model, embedder=embedder, seed=0)
    errors = []
    for t in range(episode.meta.length):
        chunk = policy.infer(observation(episode, t))
        n = min(config.chunk_size, episode.meta.length - t)  # past the end the demo has no actions to match
        errors.append(np.abs(chunk[:n] - episode.actions[t : t + n]).mean())
    assert float(np.mean(errors)) < tolerance, f"{head}: mean abs error {np.mean(errors):.3f} per step {errors}"
