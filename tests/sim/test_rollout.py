"""Rollouts become store episodes; demos land in an EpisodeStore; GIFs get written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fleet.episodes import EpisodeStore
from fleet.sim import collect_demos, expert_rollout, make_env, make_expert, rollout, save_gif


def test_expert_rollout_is_a_valid_store_episode(tmp_path: Path) -> None:
    env = make_env("pick", "kuka", seed=0)
    try:
        episode = expert_rollout(env, seed=5, robot_id="sim-7")
    finally:
        env.close()
    meta = episode.meta
    assert meta.success and meta.source == "demo" and meta.embodiment == "kuka" and meta.task == "pick"
    assert episode.actions.shape == (meta.length, 5) and episode.proprio.shape == (meta.length, 8)
    assert episode.frames["front"].shape == (meta.length, 64, 64, 3)
    assert episode.rewards[-1] == 1.0 and not episode.intervention.any()
    store = EpisodeStore(tmp_path)
    store.write(episode)
    back = store.read("sim-7", meta.episode_id)
    np.testing.assert_array_equal(back.frames["front"], episode.frames["front"])
    assert back.meta == meta


def test_supervisor_steps_are_marked_as_interventions() -> None:
    env = make_env("pick", "panda", seed=0)
    try:
        idle = np.zeros(4, np.float32)
        episode = rollout(
            env,
            lambda obs: idle,
            seed=1,
            supervisor=make_expert(env),
            takeover=lambda env, obs, t: t >= 5,
            model_version="3",
        )
    finally:
        env.close()
    assert episode.meta.success and episode.meta.model_version == "3"
    assert not episode.intervention[:5].any() and episode.intervention[5:].all()
    assert episode.meta.interventions == episode.meta.length - 5


def test_collect_demos_and_gif(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "demos")
    paths = collect_demos(store, task="push", embodiment="panda", episodes=2, seed=20)
    assert len(paths) == 2 and len(store.list()) == 2
    collect_demos(store, task="push", embodiment="panda", episodes=2, seed=20)  # deterministic ids: no duplicates
    assert len(store.list()) == 2
    episode = next(store.iter_episodes())
    gif = save_gif(episode, tmp_path / "push.gif", scale=2)
    assert gif.stat().st_size > 1000
