"""Shared fixtures of the recipe tests: one torch thread, the fake embedder, a tiny demo store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fleet.episodes import EpisodeStore
from fleet.policy.config import VLAConfig, debug_model_config
from fleet.recipe.demos import collect_demos_grid
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder

DEMO_TASKS = ("pick",)
DEMO_EMBODIMENTS = ("panda", "kuka")
DEMOS_PER_CELL = 2


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def tiny_model() -> VLAConfig:
    return debug_model_config(text_encoder=FAKE_ENCODER)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[EpisodeStore, int]:
    """Scripted demos of pick on both embodiments (collected once per session) and how many were written."""
    store = EpisodeStore(Path(tmp_path_factory.mktemp("demos")))
    written = collect_demos_grid(store, DEMO_TASKS, DEMO_EMBODIMENTS, DEMOS_PER_CELL, seed=0)
    return store, written
