"""Scripted experts: a task-solving controller per task x embodiment, from privileged state.

The expert is the simulated human supervisor: it can take over from any mid-episode state, so it
keeps no memory between calls and decides each action from the current `SimState` alone (where the
tool is, what it holds, where the objects and the goal are). Usage::

    env = make_env("place", "panda", seed=0)
    expert = make_expert(env)
    obs, info = env.reset()
    action = expert(obs)  # or expert.act_on_state(env.privileged_state())

Backend-agnostic: any env whose `privileged_state()` fills `SimState` can be driven by it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fleet.sim.base import Env, Observation, SimState

TRAVEL_Z = 0.12  # tool height for moving over other objects and tray walls, metres
HOVER = 0.07  # how far above a cube the tool lines up before descending, metres
PUSH_Z = 0.018  # tool height while pushing (below the cube's centre), metres
ALIGN = 0.008  # xy error under which the tool counts as lined up, metres
PUSH_BACKOFF = 0.035  # gap between the tool and the block's back face where a push starts, metres
CLEAR = 0.015  # in place: how far above a cube's top face the tool lines up again after coming down off it, metres


@dataclass(frozen=True)
class Plan:
    """What the expert wants for this step, before it becomes an action."""

    position: np.ndarray  # tool target, world xyz, metres
    close: bool  # gripper closed / suction on
    speed: float = 1.0  # fraction of the maximum step size
    # The tool is low and off to the side of where the task needs it, so the demonstrations' expert rises before it
    # moves on (come down beside the cube, a held cube lowered away from its goal): what `off_target` reports.
    realign: bool = False


def _above(xy: np.ndarray, z: float) -> np.ndarray:
    return np.array([xy[0], xy[1], z])


def _grasp_height(state: SimState, centre_z: float, half: float) -> float:
    """Tool height that grasps a cube: its centre for fingers, its top face (pressed in) for suction."""
    if state.embodiment == "kuka":
        return centre_z + half - 0.006
    return max(centre_z, state.table_z + 0.015)


def _pick(state: SimState, name: str, *, in_place: bool = False) -> Plan:
    """Go to the named cube and grasp it (fingers or suction), from wherever the tool is.

    Come down off the cube (below hover, > 2 cm off), the demonstrations' expert rises back to hover before
    lining up; `in_place` (a supervisor correcting a robot) rises only to clear the cube's top face and lines up
    from there, as an operator nudges a misaligned approach instead of starting it over.
    """
    obj = state.objects[name]
    ee = state.ee_position
    xy_err = float(np.linalg.norm(ee[:2] - obj.position[:2]))
    grasp_z = _grasp_height(state, obj.position[2], obj.half_size)
    if state.gripper_closed and state.held is None:
        still_closing = state.embodiment == "panda" and state.gripper_opening > 0.3 and xy_err < 0.02
        sealing = state.embodiment == "kuka" and xy_err < 0.02 and ee[2] < grasp_z + 0.03
        if still_closing:
            return Plan(ee.copy(), close=True)
        if sealing:
            return Plan(_above(obj.position, grasp_z - 0.01), close=True, speed=0.5)
        return Plan(_above(ee, max(ee[2], obj.position[2] + HOVER)), close=False)  # missed: open and back off
    if xy_err > ALIGN:
        if in_place and xy_err > 0.02:
            clear = obj.position[2] + obj.half_size + CLEAR
            if ee[2] < clear - 0.005:
                return Plan(_above(ee, clear), close=False)  # just clear of the cube
            return Plan(_above(obj.position, min(ee[2], obj.position[2] + HOVER)), close=False)  # line up here
        if ee[2] < obj.position[2] + HOVER - 0.02 and xy_err > 0.02:
            return Plan(_above(ee, obj.position[2] + HOVER), close=False, realign=True)  # rise before travelling
        return Plan(_above(obj.position, max(min(ee[2], obj.position[2] + HOVER), grasp_z)), close=False)
    if ee[2] > grasp_z + 0.008:
        return Plan(_above(obj.position, grasp_z), close=False, speed=0.7)
    return Plan(_above(obj.position, grasp_z), close=True)


def _carry_to(state: SimState, name: str, goal_xy: np.ndarray, release_z: float, tolerance: float) -> Plan:
    """Carry the held cube over `goal_xy` at travel height, lower it to `release_z` (cube centre), let go.

    `tolerance` is how far (xy, metres) from `goal_xy` the cube may be when it is lowered.
    """
    obj = state.objects[name]
    ee = state.ee_position
    offset = ee - obj.position  # where the tool holds the cube, relative to its centre
    xy_err = float(np.linalg.norm(obj.position[:2] - goal_xy))
    tool_goal = _above(goal_xy + offset[:2], release_z + offset[2])
    if xy_err > tolerance:
        travel = state.table_z + TRAVEL_Z
        if ee[2] < travel - 0.03 and xy_err > tolerance + 0.015:
            return Plan(_above(ee, travel), close=True, realign=True)  # lift clear before travelling
        return Plan(_above(tool_goal, max(ee[2], travel) if xy_err > tolerance + 0.015 else ee[2]), close=True)
    if obj.position[2] > release_z + 0.006:
        return Plan(tool_goal, close=True, speed=0.6)
    return Plan(ee.copy(), close=False)


def _retreat(state: SimState) -> Plan:
    ee = state.ee_position
    return Plan(_above(ee, max(ee[2], state.table_z + TRAVEL_Z)), close=False)


def pick_plan(state: SimState, *, in_place: bool = False) -> Plan:
    target = state.target
    if state.held == target:
        ee = state.ee_position
        return Plan(_above(ee, state.table_z + 0.16), close=True)
    return _pick(state, target, in_place=in_place)


def place_plan(state: SimState, *, in_place: bool = False) -> Plan:
    target = state.objects[state.target]
    tray = np.asarray(state.goal["tray"])
    inner = float(state.goal["tray_inner_half"])
    in_tray = bool(np.all(np.abs(target.position[:2] - tray[:2]) < inner - 0.005))
    if state.held == state.target:
        return _carry_to(state, state.target, tray[:2], tray[2] + target.half_size + 0.004, inner / 2)
    if in_tray and target.position[2] < tray[2] + 3 * target.half_size:
        return _retreat(state)  # dropped in the tray: let go and get out of the way
    return _pick(state, state.target, in_place=in_place)


def stack_plan(state: SimState, *, in_place: bool = False) -> Plan:
    target = state.objects[state.target]
    base = state.objects[state.goal["base"]]
    on_base = (
        np.linalg.norm(target.position[:2] - base.position[:2]) < target.half_size
        and target.position[2] > base.position[2] + 1.5 * base.half_size
    )
    if state.held == state.target:
        return _carry_to(state, state.target, base.position[:2], base.position[2] + 2 * base.half_size + 0.004, 0.006)
    if on_base:
        return _retreat(state)
    return _pick(state, state.target, in_place=in_place)


def push_start(state: SimState) -> np.ndarray:
    """Where the tool starts a push (xy, metres): behind the target block along the push, lined up with its centre."""
    obj = state.objects[state.target]
    behind = obj.position[1] - float(state.goal["direction"]) * (obj.half_size + PUSH_BACKOFF)
    return np.array([obj.position[0], behind])


def push_plan(state: SimState, *, in_place: bool = False) -> Plan:
    # `in_place` changes nothing here: the push's line-up already starts from where the tool is.
    obj = state.objects[state.target]
    ee = state.ee_position
    d = float(state.goal["direction"])
    close = state.embodiment == "panda"  # closed fingers make a stiff pusher; suction stays off
    push_z, hover, travel = (state.table_z + z for z in (PUSH_Z, HOVER, TRAVEL_Z))  # over the surface
    if state.held is not None:
        return Plan(_above(ee, travel), close=False)
    gap = d * (obj.position[1] - ee[1])  # distance of the tool behind the block's centre, along the push
    lined_up = abs(ee[0] - obj.position[0]) < 0.015
    if ee[2] < push_z + 0.02 and lined_up and 0.0 < gap < obj.half_size + 0.06:
        return Plan(np.array([obj.position[0], ee[1] + d * 0.03, push_z]), close=close, speed=0.7)
    start = push_start(state)
    xy_err = float(np.linalg.norm(ee[:2] - start))
    if xy_err > 0.012:
        near_block = np.linalg.norm(ee[:2] - obj.position[:2]) < 0.08
        if ee[2] < hover - 0.02 and near_block:
            return Plan(_above(ee, hover), close=close, realign=True)  # rise before crossing over the block
        return Plan(_above(start, max(hover, min(ee[2], travel))), close=close)
    return Plan(_above(start, push_z), close=close)


def _tool_to(state: SimState, name: str) -> float:
    """How far the tool still has to go to hold `name` (0 once it holds it), metres."""
    if state.held == name:
        return 0.0
    return float(np.linalg.norm(state.ee_position - state.objects[name].position))


def _remaining_into(state: SimState, name: str, goal_xy: np.ndarray, rest_z: float, tolerance: float) -> float:
    """Tool to the cube, cube over `goal_xy` (within `tolerance`), then down to `rest_z` (height counts over it)."""
    pos = state.objects[name].position
    xy = max(0.0, float(np.linalg.norm(pos[:2] - goal_xy)) - tolerance)
    down = max(0.0, float(pos[2]) - rest_z) if xy == 0.0 else 0.0
    return (_tool_to(state, name) if state.held != name and xy > 0.0 else 0.0) + xy + down


def pick_remaining(state: SimState, start: SimState) -> float:
    obj = state.objects[state.target]
    lift = float(state.goal.get("lift", 0.06))
    return _tool_to(state, state.target) + max(0.0, lift - (float(obj.position[2]) - obj.half_size - state.table_z))


def push_remaining(state: SimState, start: SimState) -> float:
    obj = state.objects[state.target]
    moved = float(state.goal["direction"]) * float(obj.position[1] - start.objects[state.target].position[1])
    to_go = max(0.0, float(state.goal["distance"]) - moved)
    return (_tool_to(state, state.target) if to_go > 0.0 else 0.0) + to_go


def place_remaining(state: SimState, start: SimState) -> float:
    obj = state.objects[state.target]
    tray = np.asarray(state.goal["tray"])
    tolerance = float(state.goal["tray_inner_half"]) / 2
    return _remaining_into(state, state.target, tray[:2], float(tray[2]) + obj.half_size, tolerance)


def stack_remaining(state: SimState, start: SimState) -> float:
    obj, base = state.objects[state.target], state.objects[state.goal["base"]]
    rest_z = float(base.position[2]) + base.half_size + obj.half_size
    return _remaining_into(state, state.target, base.position[:2], rest_z, obj.half_size / 2)


# How far (metres of tool and object travel) a state still is from the task's success, given the episode's
# first state: a monotone-ish progress measure a watching human would judge by. Falls while the robot gets
# on with the task; flat or rising while it is stuck, lost or working on the wrong object.
REMAINING: dict[str, Callable[[SimState, SimState], float]] = {
    "push": push_remaining,
    "pick": pick_remaining,
    "place": place_remaining,
    "stack": stack_remaining,
}


STALL_STEPS = 10  # steps (1 s at 10 Hz) without progress before the task counts as stuck
PROGRESS = 0.005  # metres REMAINING must fall below its best to count as progress


class ProgressWatch:
    """Says when a task has stopped progressing: `REMAINING` has not fallen below its best by `progress`
    metres for `stall_steps` steps. What the simulated supervisor takes over on, and what the learner's
    eval gate counts as a failure, so both judge an episode the way the fleet's success metric does.

        watch = ProgressWatch("pick")  # or ProgressWatch.for_task(task): None for tasks without a measure
        stuck = watch.update(env.privileged_state())
    """

    def __init__(self, task: str, *, stall_steps: int = STALL_STEPS, progress: float = PROGRESS) -> None:
        self.remaining = REMAINING[task]
        self.stall_steps, self.progress = stall_steps, progress
        self.reset()

    @classmethod
    def for_task(cls, task: str, *, stall_steps: int = STALL_STEPS, progress: float = PROGRESS) -> ProgressWatch | None:
        """A watch for `task`, or None when the task has no progress measure (backends' own tasks)."""
        return cls(task, stall_steps=stall_steps, progress=progress) if task in REMAINING else None

    def reset(self) -> None:
        """A new episode: the next state seen is its start."""
        self._start: SimState | None = None
        self.restart()

    def restart(self) -> None:
        """A fresh window (after a takeover): progress is counted from the next state on."""
        self._best = float("inf")
        self._idle = 0
        self._current = float("inf")

    @property
    def current(self) -> float:
        """`REMAINING` at the last update, metres (inf before the first)."""
        return self._current

    @property
    def best(self) -> float:
        """The lowest `REMAINING` since the window started, metres (inf before the first update)."""
        return self._best

    @property
    def idle(self) -> int:
        """Steps since the task last progressed (0: it did on the last update)."""
        return self._idle

    def update(self, state: SimState) -> bool:
        """Record one step's state; True once the task has not progressed for `stall_steps` steps."""
        if self._start is None:
            self._start = state
        remaining = self._current = self.remaining(state, self._start)
        if remaining < self._best - self.progress:
            self._best, self._idle = remaining, 0
        else:
            self._idle += 1
        return self._idle >= self.stall_steps


PLANNERS: dict[str, Callable[..., Plan]] = {  # (state, *, in_place=False) -> Plan
    "push": push_plan,
    "pick": pick_plan,
    "place": place_plan,
    "stack": stack_plan,
}


def off_target(state: SimState) -> bool:
    """The tool is low and off to the side of where the task needs it (`Plan.realign`): coming down beside the cube,
    or lowering a held cube away from its goal. False for tasks without a planner."""
    plan = PLANNERS.get(state.task)
    return plan is not None and plan(state).realign


def plan_to_action(state: SimState, plan: Plan, action_dim: int) -> np.ndarray:
    """Turn a tool target into a normalized action: proportional steps, clipped to one unit."""
    translation, rotation = state.action_scale
    delta = (plan.position - state.ee_position) / translation
    norm = float(np.max(np.abs(delta)))
    if norm > plan.speed:
        delta = delta * (plan.speed / norm)  # keep the direction, cap the speed
    gripper = 1.0 if plan.close else -1.0
    if action_dim == 5:
        dyaw = float(np.clip(-state.ee_yaw / rotation, -1.0, 1.0))  # keep the tool square to the table
        return np.array([*delta, dyaw, gripper], dtype=np.float32)
    return np.array([*delta, gripper], dtype=np.float32)


class ScriptedExpert:
    """Drives `env` to success from its current state; callable like a policy.

    The tabletop tasks use the planners above; a backend with its own scripted policies (Meta-World)
    offers them as `env.expert_action(state)`.
    """

    def __init__(self, env: Env, *, noise_std: float = 0.0, seed: int | None = None, in_place: bool = False) -> None:
        backend_expert = getattr(env, "expert_action", None)
        if env.task.name in PLANNERS:
            plan = PLANNERS[env.task.name]
            dim = env.embodiment.action_dim
            self._act: Callable[[SimState], np.ndarray] = lambda state: plan_to_action(
                state, plan(state, in_place=in_place), dim
            )
        elif backend_expert is not None:
            self._act = backend_expert
        else:
            raise KeyError(f"no scripted expert for task {env.task.name!r}; experts exist for {sorted(PLANNERS)}")
        self.env = env
        self.noise_std = noise_std  # std of Gaussian noise on the translation (for diverse demos)
        self._rng = np.random.default_rng(seed)

    def act_on_state(self, state: SimState) -> np.ndarray:
        """The expert's action for `state` (deterministic: no noise)."""
        return self._act(state)

    def __call__(self, obs: Observation | None = None) -> np.ndarray:
        """The expert's action now; `obs` is accepted for policy compatibility, the env's state is used."""
        action = self.act_on_state(self.env.privileged_state())
        if self.noise_std > 0:
            action[:3] += self._rng.normal(0.0, self.noise_std, 3).astype(np.float32)
        return np.clip(action, -1.0, 1.0)

    act = __call__


def make_expert(env: Env, *, noise_std: float = 0.0, seed: int | None = None, in_place: bool = False) -> ScriptedExpert:
    """The scripted expert (simulated supervisor) for `env`'s task and embodiment; `in_place`: corrects a misaligned
    approach from where the tool is (a supervisor), instead of starting it over from hover (the demonstrations)."""
    return ScriptedExpert(env, noise_std=noise_std, seed=seed, in_place=in_place)
