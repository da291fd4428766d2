"""The Meta-World backend ("sawyer"): same env contract, Meta-World's own scripted experts.

Each test runs in a fresh Python process: MuJoCo's EGL context (Mesa llvmpipe) has been seen to
corrupt the process so that a later, unrelated torch call segfaults; isolating it keeps the suite
sound without hiding the backend's own failures (the child's assertion output is shown).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from fleet.sim import make_env, make_expert

_IN_CHILD = os.environ.get("FLEET_MUJOCO_CHILD") == "1"


def isolated(test: Callable[..., None]) -> Callable[..., None]:
    """Run the test's body in a child pytest process; the parent passes or fails with it."""

    @functools.wraps(test)
    def wrapper(*args: object, **kwargs: object) -> None:
        if _IN_CHILD:
            test(*args, **kwargs)
            return
        node = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
            env={**os.environ, "FLEET_MUJOCO_CHILD": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert " passed" in result.stdout, result.stdout[-2000:]

    return wrapper


@isolated
def test_sawyer_env_contract_and_determinism() -> None:
    env = make_env("mw-pick-place", "sawyer", seed=0)
    try:
        obs, info = env.reset(seed=3)
        assert set(obs["images"]) == {"front", "wrist"}  # "wrist" is Meta-World's gripperPOV camera
        for image in obs["images"].values():
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert not np.array_equal(obs["images"]["front"], obs["images"]["wrist"])
        assert obs["proprio"].shape == (4,) and obs["proprio"].dtype == np.float32
        assert env.observation_space.contains(obs)
        steps = [env.step(np.array([0.5, -0.5, 0.2, 1.0]))[0] for _ in range(3)]
        again, _ = env.reset(seed=3)
        assert np.array_equal(again["images"]["front"], obs["images"]["front"])
        for first in steps:
            second = env.step(np.array([0.5, -0.5, 0.2, 1.0]))[0]
            assert all(np.array_equal(first["images"][c], second["images"][c]) for c in ("front", "wrist"))
            assert np.array_equal(first["proprio"], second["proprio"])
        with pytest.raises(ValueError, match=r"shape \(4,\)"):
            env.step(np.zeros(5))
    finally:
        env.close()


def test_sawyer_tasks_are_separate_from_the_tabletop_tasks() -> None:
    with pytest.raises(ValueError, match="tasks for 'sawyer'"):
        make_env("pick", "sawyer")
    with pytest.raises(ValueError, match="runs on \\['sawyer'\\]"):
        make_env("mw-push", "panda")


@pytest.mark.parametrize("task", ["mw-reach", "mw-pick-place"])
@isolated
def test_metaworld_expert_solves_the_task(task: str) -> None:
    env = make_env(task, "sawyer", seed=0)
    expert = make_expert(env)
    try:
        obs, info = env.reset(seed=1)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            done = terminated or truncated
        assert info["success"]
    finally:
        env.close()
