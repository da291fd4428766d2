"""Tasks from outside fleet: one registration each, loaded in every process that simulates.

A plugin is a module that calls `register_task` once per task: the `TaskSpec` (name, phrasings, time limit, the
embodiments it runs on), the PyBullet scene that lays it out and says what success is, the scripted expert's
planner, and the progress measure supervisors watch (`REMAINING`). Nothing else in fleet changes: the fleet, the
gate, `fleet eval`, demo collection and the learner find the task by its name.

`FLEET_TASK_PLUGINS` names the plugin modules (comma-separated, importable); `fleet.sim` imports them when it is
first imported, in every process: the CLI, the learner and its evaluator, and each Ray robot (Ray workers inherit
the environment of the node that started them; on a cluster set the variable on every node).

    # my_tasks.py
    from fleet.sim.plugins import register_task
    register_task(TaskSpec("grasp", phrasings=(...), max_steps=40, description=...),
                  scene=GraspScene, planner=grasp_plan, remaining=grasp_remaining)

    FLEET_TASK_PLUGINS=my_tasks fleet robots run --tasks grasp
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

from fleet.sim.base import SimState, TaskSpec

log = logging.getLogger(__name__)
ENV_VAR = "FLEET_TASK_PLUGINS"
_loaded: set[str] = set()


def register_task(
    spec: TaskSpec,
    *,
    scene: type | None,
    planner: Callable[..., Any] | None,
    remaining: Callable[[SimState, SimState], float] | None,
) -> None:
    """Make `spec` a task like the built-in ones: `scene` (a `fleet.sim.pybullet_scene.TabletopScene` subclass, for
    the PyBullet arms), `planner` ((state, *, in_place=False) -> `fleet.sim.experts.Plan`, the scripted expert and
    supervisor) and `remaining` ((state, first state) -> metres still to go, what stall and regress rules watch).
    Registering a name twice is an error unless it is the same registration (a module imported twice)."""
    from fleet.sim.experts import PLANNERS, REMAINING
    from fleet.sim.tasks import TASKS

    existing = TASKS.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"task {spec.name!r} is already registered (a built-in task, or another plugin's)")
    TASKS[spec.name] = spec
    if scene is not None:
        from fleet.sim.pybullet_scene import SCENES

        SCENES[spec.name] = scene
    if planner is not None:
        PLANNERS[spec.name] = planner
    if remaining is not None:
        REMAINING[spec.name] = remaining


def load_plugins(names: str | None = None) -> list[str]:
    """Import the plugin modules `names` (default: `FLEET_TASK_PLUGINS`), each once; returns the ones imported now.
    A module that cannot be imported is an error naming it: a fleet missing a task would fail later and vaguely."""
    wanted = [n.strip() for n in (os.environ.get(ENV_VAR, "") if names is None else names).split(",") if n.strip()]
    imported = []
    for name in wanted:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"{ENV_VAR}: task plugin {name!r} cannot be imported: {e}") from e
        _loaded.add(name)
        imported.append(name)
        log.info("task plugin %s loaded", name)
    return imported
