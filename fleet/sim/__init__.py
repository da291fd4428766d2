"""Simulated robots for fleet: language-conditioned tabletop tasks, scripted experts, rollouts.

    from fleet.sim import TASKS, make_env, make_expert, rollout
    env = make_env("pick", "panda", seed=0)      # PyBullet, 64x64 RGB, action (dx, dy, dz, gripper)
    obs, info = env.reset()
    expert = make_expert(env)                    # the simulated supervisor
    obs, reward, terminated, truncated, info = env.step(expert(obs))

Tasks: `fleet.sim.tasks`; the env interface: `fleet.sim.base`; backends: `fleet.sim.pybullet_env`.
Importing this package does not import PyBullet; `make_env` does.
"""

from fleet.sim.base import Env, EnvBase, ObjectState, Observation, SimState, TaskSpec
from fleet.sim.experts import ScriptedExpert, make_expert
from fleet.sim.plugins import load_plugins, register_task
from fleet.sim.registry import BACKENDS, get_task, make_env
from fleet.sim.rollout import collect_demos, expert_rollout, rollout, save_gif
from fleet.sim.tasks import COLORS, TASKS

load_plugins()  # FLEET_TASK_PLUGINS: tasks registered from outside fleet (fleet.sim.plugins)

__all__ = [
    "BACKENDS",
    "COLORS",
    "TASKS",
    "Env",
    "EnvBase",
    "ObjectState",
    "Observation",
    "ScriptedExpert",
    "SimState",
    "TaskSpec",
    "collect_demos",
    "expert_rollout",
    "get_task",
    "load_plugins",
    "register_task",
    "make_env",
    "make_expert",
    "rollout",
    "save_gif",
]
