"""Find a simulated env by task and embodiment: `make_env("pick", "panda", seed=0)`.

The embodiment decides the backend ("panda", "kuka" -> PyBullet; "sawyer" -> Meta-World, an optional
install); backends are imported lazily so `import fleet.sim` stays light. Each task lists the
embodiments it runs on (`TaskSpec.embodiments`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleet.embodiments import get_embodiment
from fleet.naming import unknown
from fleet.sim.base import Env, TaskSpec
from fleet.sim.scenarios import DEFAULT_SCENARIO, Scenario, get_scenario
from fleet.sim.tasks import TASKS

# Embodiment -> backend that simulates it.
BACKENDS: dict[str, str] = {"panda": "pybullet", "kuka": "pybullet", "sawyer": "metaworld"}


_unknown = unknown


def get_task(name: str) -> TaskSpec:
    """Look up a task by id, with a did-you-mean hint on typos."""
    try:
        return TASKS[name]
    except KeyError:
        raise _unknown("task", name, sorted(TASKS)) from None


def make_env(
    task: str,
    embodiment: str,
    *,
    seed: int | None = None,
    image_size: int = 64,
    cameras: Sequence[str] | None = None,
    scenario: str | Scenario = DEFAULT_SCENARIO,
) -> Env:
    """Build a simulated env for `task` on `embodiment`; `seed` fixes the sequence of episodes.

    `cameras`: the images each observation holds; None = the backend's default, every camera it has: "front"
    (fixed, facing the robot) and "wrist" (on the hand, looking down past the tool). `scenario`: the deployment
    conditions (`fleet.sim.scenarios`), the demonstrations' by default.
    """
    spec = get_task(task)
    conditions = get_scenario(scenario)
    if embodiment not in BACKENDS:
        raise _unknown("simulated embodiment", embodiment, sorted(BACKENDS))
    if embodiment not in spec.embodiments:
        other = sorted(name for name, t in TASKS.items() if embodiment in t.embodiments)
        raise ValueError(
            f"task {task!r} runs on {list(spec.embodiments)}, not {embodiment!r}; tasks for {embodiment!r}: {other}"
        )
    body = get_embodiment(embodiment)
    chosen: dict[str, Any] = {} if cameras is None else {"cameras": tuple(cameras)}
    if BACKENDS[embodiment] == "metaworld":
        if not conditions.is_nominal:
            raise ValueError(f"scenario {conditions.name!r} runs on the PyBullet arms only, not {embodiment!r}")
        from fleet.sim.metaworld_env import MetaWorldConfig, MetaWorldEnv

        return MetaWorldEnv(spec, body, config=MetaWorldConfig(image_size=image_size, **chosen), seed=seed)
    from fleet.sim.pybullet_env import PyBulletConfig, PyBulletEnv

    config = PyBulletConfig(image_size=image_size, **chosen, **conditions.pybullet_overrides())  # type: ignore[arg-type]
    return PyBulletEnv(spec, body, config=config, seed=seed)
