"""A task plugin as a user would write one (`FLEET_TASK_PLUGINS=tests.sim.toy_task`): "grasp", done as soon as the
named cube is held, on the pick scene's layout, with the pick expert's planner. Registered in one call."""

from __future__ import annotations

import numpy as np

from fleet.sim.base import SimState, TaskSpec
from fleet.sim.experts import pick_plan
from fleet.sim.plugins import register_task
from fleet.sim.pybullet_scene import PickScene


class GraspScene(PickScene):
    """The pick scene; success is holding the named cube, at any height."""

    def success(self, held: str | None) -> bool:
        return held == self.target


def grasp_remaining(state: SimState, start: SimState) -> float:
    """Metres from the tool to the cube; 0 once it is held."""
    if state.held == state.target:
        return 0.0
    return float(np.linalg.norm(state.ee_position - state.objects[state.target].position))


register_task(
    TaskSpec(
        "grasp",
        phrasings=("grasp the {color} cube", "take hold of the {color} cube"),
        max_steps=40,
        description="the named cube is held by the gripper",
    ),  # fmt: skip
    scene=GraspScene,
    planner=pick_plan,
    remaining=grasp_remaining,
)
