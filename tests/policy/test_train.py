"""The `debug` preset end to end: train 2 steps from an episode store, checkpoint, resume, and get the same weights."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fleet.episodes import EpisodeStore
from fleet.policy.checkpoint import CheckpointError, load_checkpoint, verify_checkpoint
from fleet.policy.config import debug_model_config
from fleet.policy.policy import VLAPolicy
from fleet.policy.train import (
    TRAIN_STATE_FILE,
    TrainConfig,
    get_preset,
    latest_checkpoint,
    load_training_checkpoint,
    lr_at,
    main,
    train,
)
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder, make_episode, observation


@pytest.fixture
def store(tmp_path: Path) -> EpisodeStore:
    store = EpisodeStore(tmp_path / "episodes")
    store.write(make_episode("panda", length=10, seed=1))
    store.write(make_episode("kuka", length=7, seed=2, instruction="push the block left"))
    store.write(make_episode("sawyer", length=5, seed=3, instruction="open the drawer"))
    return store


@pytest.fixture
def debug() -> TrainConfig:
    # The preset itself, fed by the fake embedder (MiniLM is covered in test_language).
    preset = get_preset("debug")
    return replace(preset, model=preset.model.with_(text_encoder=FAKE_ENCODER))


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(directory).state_dict()


def test_debug_preset_trains_saves_and_resumes(tmp_path: Path, store: EpisodeStore, debug: TrainConfig) -> None:
    embedder = HashEmbedder()
    run = tmp_path / "run"
    stats = train(debug, episodes=store, run_dir=run, embedder=embedder)
    assert (stats.step, stats.steps_run, stats.resumed_from) == (2, 2, 0)
    first = latest_checkpoint(run)
    assert first is not None and first.name == "step_00000002" and stats.checkpoint == first
    info = verify_checkpoint(first)
    assert info.metadata["step"] == 2 and info.config == debug.model
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.losses.values())
    assert {"losses/total", "losses/action", "losses/value", "charts/step"} <= set(stats.to_log_dict())

    # Resuming loads exactly the saved weights and optimizer, and the step counter continues.
    model, optimizer, step = load_training_checkpoint(first, debug)
    assert step == 2 and optimizer.state_dict()["state"]
    saved = verify_checkpoint(first)
    assert saved.sha256 == json.loads((first / TRAIN_STATE_FILE).read_text())["weights_sha256"]
    more = train(replace(debug, steps=4), episodes=store, run_dir=run, embedder=embedder)
    assert (more.step, more.steps_run, more.resumed_from) == (4, 2, 2)
    assert more.checkpoint is not None and more.checkpoint.name == "step_00000004"
    resumed = _weights(more.checkpoint)
    assert any(not torch.equal(resumed[k], v) for k, v in model.state_dict().items())

    # An interrupted run (2 of 4 steps, then a restart) ends with the same weights as an uninterrupted one:
    # batches, noise and augmentation are seeded per step.
    four = replace(debug, steps=4)
    interrupted = train(four, episodes=store, run_dir=tmp_path / "interrupted", embedder=embedder, max_steps=2)
    assert (interrupted.step, interrupted.steps_run) == (2, 2)
    finished = train(four, episodes=store, run_dir=tmp_path / "interrupted", embedder=embedder)
    assert (finished.resumed_from, finished.step) == (2, 4)
    straight = train(four, episodes=store, run_dir=tmp_path / "straight", embedder=embedder)
    assert finished.checkpoint is not None and straight.checkpoint is not None
    a, b = _weights(finished.checkpoint), _weights(straight.checkpoint)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key

    # Nothing left to do: a finished run returns at once.
    again = train(replace(debug, steps=4), episodes=store, run_dir=run, embedder=embedder)
    assert (again.step, again.steps_run) == (4, 0)

    # The trained checkpoint drives every embodiment through the Policy interface.
    policy = VLAPolicy.from_checkpoint(more.checkpoint, embedder=embedder)
    for robot_id, episode_id in store.list():
        episode = store.read(robot_id, episode_id)
        assert policy.infer(observation(episode, 0)).shape == (debug.model.chunk_size, episode.actions.shape[1])


def test_resume_refuses_a_different_model(tmp_path: Path, store: EpisodeStore, debug: TrainConfig) -> None:
    train(debug, episodes=store, run_dir=tmp_path, embedder=HashEmbedder())
    other = replace(debug, steps=4, model=debug_model_config(text_encoder=FAKE_ENCODER, d_model=64))
    with pytest.raises(CheckpointError, match="different model config"):
        train(other, episodes=store, run_dir=tmp_path, embedder=HashEmbedder())


def test_incomplete_checkpoint_is_ignored(tmp_path: Path, store: EpisodeStore, debug: TrainConfig) -> None:
    train(debug, episodes=store, run_dir=tmp_path, embedder=HashEmbedder())
    (tmp_path / "checkpoints" / "step_00000009").mkdir()  # a crash before train_state.json was written
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_00000002"


def test_presets_and_schedule() -> None:
    with pytest.raises(KeyError, match="Did you mean 'debug'"):
        get_preset("debgu")
    with pytest.raises(ValueError, match="steps"):
        get_preset("debug", steps=0)
    config = get_preset("default")
    assert lr_at(0, config) < lr_at(config.warmup_steps, config) == pytest.approx(config.lr)
    assert lr_at(config.steps, config) == pytest.approx(0.1 * config.lr)


def test_post_training_starts_from_a_pretrained_checkpoint(
    tmp_path: Path, store: EpisodeStore, debug: TrainConfig
) -> None:
    pre = train(debug, episodes=store, run_dir=tmp_path / "pre", embedder=HashEmbedder())
    assert pre.checkpoint is not None
    post_config = replace(debug, steps=1, init_checkpoint=str(pre.checkpoint))
    post = train(post_config, episodes=store, run_dir=tmp_path / "post", embedder=HashEmbedder(), max_steps=0)
    assert post.steps_run == 0 and post.checkpoint is None  # nothing run yet: no checkpoint written
    post = train(post_config, episodes=store, run_dir=tmp_path / "post", embedder=HashEmbedder())
    assert (post.resumed_from, post.step) == (0, 1)
    before, after = _weights(pre.checkpoint), _weights(post.checkpoint)  # type: ignore[arg-type]
    # One AdamW step moves each weight by about lr (1e-3): the run started from the pre-trained weights.
    assert max(float((before[k] - after[k]).abs().max()) for k in before) < 1e-2
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_command_line_entry_point(tmp_path: Path, store: EpisodeStore, capsys: pytest.CaptureFixture[str]) -> None:
    # The real preset with the real (bundled, offline) MiniLM, as `python -m fleet.policy.train` runs it.
    args = ["--preset", "debug", "--episodes", str(store.root), "--run-dir", str(tmp_path / "cli"), "--threads", "1"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["charts/step"] == 2.0 and Path(out["checkpoint"]).name == "step_00000002"
    assert main([*args, "--steps", "3", "--head", "flow"]) == 0
    assert json.loads(capsys.readouterr().out)["charts/step"] == 3.0


def test_training_device_is_checked_and_auto_falls_back_to_the_cpu(
    tmp_path: Path, store: EpisodeStore, debug: TrainConfig
) -> None:
    with pytest.raises(ValueError, match="device"):
        replace(debug, device="tpu")
    if not torch.cuda.is_available():  # this machine: asking for a GPU is refused, "auto" trains on the CPU
        with pytest.raises(RuntimeError, match="sees no GPU"):
            train(replace(debug, device="cuda"), episodes=store, run_dir=tmp_path / "cuda", embedder=HashEmbedder())
    on_cpu = train(debug, episodes=store, run_dir=tmp_path / "cpu", embedder=HashEmbedder())
    auto = train(replace(debug, device="auto"), episodes=store, run_dir=tmp_path / "auto", embedder=HashEmbedder())
    assert auto.checkpoint is not None and on_cpu.checkpoint is not None
    if not torch.cuda.is_available():
        assert auto.losses == on_cpu.losses  # same seed, same device: the same run
    assert load_checkpoint(auto.checkpoint).state_dict().keys() == _weights(on_cpu.checkpoint).keys()
