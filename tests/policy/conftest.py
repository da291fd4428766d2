"""Shared fixtures of the policy tests: one torch thread (the machine is shared), fake embedder, tiny configs."""

from __future__ import annotations

import pytest
import torch

from fleet.policy.config import VLAConfig, debug_model_config
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture(params=["flow", "discrete"])
def tiny_config(request: pytest.FixtureRequest) -> VLAConfig:
    """The debug-size model with each action head, fed by the fake embedder."""
    return debug_model_config(action_head=request.param, text_encoder=FAKE_ENCODER)
