"""Scripted experts solve every task on every embodiment, including from a perturbed mid-episode state."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.sim import TASKS, make_env, make_expert

SEEDS = (0, 1, 2)
TABLETOP = [
    (task, body) for task, spec in sorted(TASKS.items()) for body in ("panda", "kuka") if body in spec.embodiments
]


@pytest.mark.parametrize(("task", "embodiment"), TABLETOP)
def test_expert_solves_the_task(task: str, embodiment: str) -> None:
    env = make_env(task, embodiment)
    expert = make_expert(env)
    try:
        for seed in SEEDS:
            obs, info = env.reset(seed=seed)
            rewards = []
            done = False
            while not done:
                obs, reward, terminated, truncated, info = env.step(expert(obs))
                rewards.append(reward)
                done = terminated or truncated
            assert info["success"], f"{task}/{embodiment} seed {seed}: expert failed ({obs['instruction']!r})"
            assert rewards[-1] == 1.0 and sum(rewards) == 1.0
    finally:
        env.close()


@pytest.mark.parametrize("embodiment", ["panda", "kuka"])
@pytest.mark.parametrize("task", ["place", "stack"])
def test_expert_takes_over_mid_episode(task: str, embodiment: str) -> None:
    """The supervisor use: a drifting policy (random actions, gripper toggling) then the expert."""
    env = make_env(task, embodiment)
    expert = make_expert(env)
    rng = np.random.default_rng(0)
    try:
        for seed in (10, 11):
            obs, _ = env.reset(seed=seed)
            for _ in range(12):
                obs, *_ = env.step(rng.uniform(-1, 1, env.embodiment.action_dim))
            done, info = False, {}
            while not done:
                obs, _, terminated, truncated, info = env.step(expert(obs))
                done = terminated or truncated
            assert info["success"], f"{task}/{embodiment} seed {seed}: expert failed after takeover"
    finally:
        env.close()


def test_expert_actions_are_normalized_and_sized() -> None:
    env = make_env("pick", "kuka")
    try:
        obs, _ = env.reset(seed=0)
        action = make_expert(env, noise_std=0.3, seed=0)(obs)
        assert action.shape == (5,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1.0)
    finally:
        env.close()
