"""Recipe training stages on the `debug` preset: pretrain resumes from its checkpoint, posttrain starts from it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.episodes import EpisodeStore
from fleet.policy.checkpoint import load_checkpoint
from fleet.policy.config import VLAConfig
from fleet.recipe.train import StageConfig, run_stage, train_config
from tests.policy.fakes import HashEmbedder


def _pretrain_config(store: EpisodeStore, run_dir: Path, model: VLAConfig, steps: int = 2) -> StageConfig:
    return StageConfig(stage="pretrain", demos=store.root, run_dir=run_dir, preset="debug", steps=steps,
                       model=model, log_mlflow=False, progress=False)  # fmt: skip


def test_debug_pretrain_runs_two_steps_then_resumes(
    demo_store: tuple[EpisodeStore, int], tmp_path: Path, tiny_model: VLAConfig, embedder: HashEmbedder
) -> None:
    store, written = demo_store
    config = _pretrain_config(store, tmp_path / "pre", tiny_model)
    first = run_stage(config, embedder=embedder)
    assert first.checkpoint.name == "step_00000002" and first.stats.steps_run == 2 and first.episodes == written
    assert (first.checkpoint / "train_state.json").is_file()
    assert first.mlflow_run_id is None and first.version is None

    again = run_stage(replace(config, steps=4), embedder=embedder)
    assert again.stats.resumed_from == 2 and again.stats.steps_run == 2 and again.checkpoint.name == "step_00000004"


def test_posttrain_starts_from_the_pretrained_weights(
    demo_store: tuple[EpisodeStore, int], tmp_path: Path, tiny_model: VLAConfig, embedder: HashEmbedder
) -> None:
    store, _ = demo_store
    pre = run_stage(_pretrain_config(store, tmp_path / "pre", tiny_model.with_(action_head="discrete")),
                    embedder=embedder).checkpoint  # fmt: skip
    config = StageConfig(stage="posttrain", demos=store.root, run_dir=tmp_path / "post", preset="debug", task="pick",
                         num_demos=2, init=pre, steps=1, log_mlflow=False, progress=False)  # fmt: skip
    tc = train_config(config)
    assert tc.init_checkpoint == str(pre) and tc.model == load_checkpoint(pre).config  # architecture and head kept

    post = run_stage(config, embedder=embedder)
    assert post.episodes == 2 and post.stats.resumed_from == 0
    state = json.loads((post.checkpoint / "train_state.json").read_text())
    assert state["train_config"]["init_checkpoint"] == str(pre)
    before, after = load_checkpoint(pre).state_dict(), load_checkpoint(post.checkpoint).state_dict()
    # one small step from the pre-trained weights: close to them, nowhere near a fresh init
    drift = max(float((before[k] - after[k]).abs().max()) for k in before)
    assert 0 < drift < 0.05
    assert all(before[k].shape == after[k].shape for k in before)

    with pytest.raises(ValueError, match="keeps it"):
        train_config(replace(config, head="flow"))
    with pytest.raises(ValueError, match="--init"):
        StageConfig(stage="posttrain", demos=store.root, run_dir=tmp_path, task="pick")
