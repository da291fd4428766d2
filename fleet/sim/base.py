"""The backend-agnostic simulator interface: what every simulated robot env offers the rest of fleet.

A backend (PyBullet here; Meta-World/MuJoCo can follow) implements `Env`, usually by subclassing
`EnvBase`, which owns the bookkeeping every backend must get the same way: seeding, action checks,
step counting, the time limit, the sparse success reward and the `info` keys. A backend supplies the
scene: `_reset_scene`, `_apply_action`, `_observe_proprio`, `_render`, `_is_success`, `privileged_state`.

Conventions (shared by the policy, the actors and the wire schemas):
  * actions are normalized to [-1, 1], one step of `embodiment.action_dim` values;
  * an observation is `{"images": {camera: uint8 (H, W, 3)}, "proprio": float32 (proprio_dim,),
    "instruction": str, "task": str, "embodiment": str}`;
  * `reward` is 1.0 on the step that reaches success, else 0.0; `info["success"]` says whether the
    task is solved after the step; an episode is `terminated` on success and `truncated` at the
    task's time limit.
  * `privileged_state()` exposes what a scripted supervisor needs (object poses, the goal); it is
    never part of the policy's observation.
"""

from __future__ import annotations

import abc
import string
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, runtime_checkable

import gymnasium as gym
import numpy as np
from numpy.typing import ArrayLike

from fleet.embodiments import EmbodimentSpec

# Characters an instruction may contain (gymnasium's Text space rejects anything outside its charset).
_INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"


CAMERAS = ("front", "wrist")  # camera names the backends render: fixed facing the robot, and on the hand
# Bumped whenever what a camera sees changes: demonstrations and checkpoints cached before it are stale (the benches
# cache under a directory named after it). 2: the wrist camera behind the fingers, not above them.
CAMERA_REVISION = 2


def check_cameras(cameras: tuple[str, ...]) -> None:
    """ValueError unless `cameras` is a non-empty tuple of distinct names from CAMERAS."""
    if not cameras or set(cameras) - set(CAMERAS) or len(set(cameras)) != len(cameras):
        raise ValueError(f"cameras must be distinct names from {list(CAMERAS)}, got {list(cameras)}")


class Observation(TypedDict):
    """What a policy sees at one step."""

    images: dict[str, np.ndarray]  # camera name -> uint8 (H, W, 3) RGB
    proprio: np.ndarray  # float32 (proprio_dim,), see the embodiment's description
    instruction: str  # natural-language instruction of this episode
    task: str  # task id, e.g. "pick"
    embodiment: str  # embodiment id, e.g. "panda"


@dataclass(frozen=True)
class TaskSpec:
    """One language-conditioned task, independent of the backend that simulates it."""

    name: str  # stable id used on the wire and in the registry, e.g. "pick"
    phrasings: tuple[str, ...]  # instruction templates; slots like {color} are filled per episode
    max_steps: int  # time limit in env steps (control ticks); the episode is truncated after it
    description: str  # one line for humans: what success means
    slots: tuple[str, ...] = ("color",)  # template slots every phrasing must use
    embodiments: tuple[str, ...] = ("panda", "kuka")  # embodiments (hence backends) that simulate this task

    def __post_init__(self) -> None:
        if len(self.phrasings) < 2:
            raise ValueError(f"task {self.name!r}: give at least two phrasings of the instruction")
        if self.max_steps <= 0:
            raise ValueError(f"task {self.name!r}: max_steps must be positive")
        for phrasing in self.phrasings:
            fields = {f for _, f, _, _ in string.Formatter().parse(phrasing) if f}
            if fields != set(self.slots):
                raise ValueError(f"task {self.name!r}: phrasing {phrasing!r} uses {sorted(fields)}, not {self.slots}")

    def instruction(self, rng: np.random.Generator, **slots: str) -> str:
        """Pick a phrasing with `rng` and fill its slots."""
        template = self.phrasings[int(rng.integers(len(self.phrasings)))]
        return template.format(**slots)


@dataclass(frozen=True)
class ObjectState:
    """Pose of one movable object, as the supervisor sees it."""

    position: np.ndarray  # float64 (3,) world xyz of the object's centre, metres
    yaw: float  # rotation about world z, radians
    half_size: float  # half of the cube's edge, metres
    color: str  # colour name used in instructions


@dataclass(frozen=True)
class SimState:
    """Privileged world state for scripted experts and success metrics (never given to the policy)."""

    task: str  # task id
    embodiment: str  # embodiment id
    step: int  # env steps taken in this episode
    ee_position: np.ndarray  # float64 (3,) tool centre point (between the fingertips / suction tip)
    ee_yaw: float  # tool yaw about world z, radians
    gripper_closed: bool  # fingers commanded closed (panda) or suction on (kuka)
    gripper_opening: float  # 1.0 fully open .. 0.0 fully closed (suction: 0.0 when on)
    held: str | None  # name of the object the gripper holds, if any
    objects: dict[str, ObjectState]  # every movable object by name
    target: str  # name of the object the instruction is about
    goal: dict[str, Any] = field(default_factory=dict)  # task-specific goal, e.g. {"direction": 1.0}
    success: bool = False  # the task's success check on this state
    action_scale: tuple[float, float] = (0.03, 0.25)  # metres / radians one unit of action moves the tool per step
    table_z: float = 0.0  # height of the surface the objects stand on, metres (a scenario's raised bench)
    backend_state: np.ndarray | None = None  # the backend's full state vector, for backend-specific experts


@runtime_checkable
class Env(Protocol):
    """A simulated robot the fleet can drive (Gymnasium-style)."""

    task: TaskSpec  # what the episode asks for
    embodiment: EmbodimentSpec  # action / proprio sizes
    max_steps: int  # time limit of an episode, env steps

    @property
    def instruction(self) -> str: ...  # what the current episode asks, in words

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Observation, dict]: ...

    def step(self, action: ArrayLike) -> tuple[Observation, float, bool, bool, dict[str, Any]]: ...

    def privileged_state(self) -> SimState: ...

    def close(self) -> None: ...


class EnvBase(gym.Env, abc.ABC):  # type: ignore[misc]
    """Shared bookkeeping for backends: seeding, action checks, time limit, reward and info keys."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: TaskSpec, embodiment: EmbodimentSpec, *, image_size: int, seed: int | None) -> None:
        self.task = task
        self.embodiment = embodiment
        self.image_size = image_size
        self.render_mode = "rgb_array"
        self.max_steps = task.max_steps
        self.action_space = gym.spaces.Box(-1.0, 1.0, (embodiment.action_dim,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "images": gym.spaces.Dict(
                    {name: gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8) for name in self.cameras}
                ),
                "proprio": gym.spaces.Box(-np.inf, np.inf, (embodiment.proprio_dim,), np.float32),
                "instruction": gym.spaces.Text(200, charset=_INSTRUCTION_CHARSET),
                "task": gym.spaces.Text(64, charset=_INSTRUCTION_CHARSET + "_"),
                "embodiment": gym.spaces.Text(64, charset=_INSTRUCTION_CHARSET + "_"),
            }
        )
        self._rng = np.random.default_rng(seed)
        self._steps = 0
        self._success = False
        self._instruction = ""
        self._needs_reset = True

    # --- what a backend implements -------------------------------------------------------------
    cameras: tuple[str, ...] = ("front",)

    @abc.abstractmethod
    def _reset_scene(self, rng: np.random.Generator) -> str:
        """Randomize the scene for a new episode from `rng`; return the episode's instruction."""

    @abc.abstractmethod
    def _apply_action(self, action: np.ndarray) -> None:
        """Execute one clipped, validated action (float32, in [-1, 1]) for one control tick."""

    @abc.abstractmethod
    def _observe_proprio(self) -> np.ndarray:
        """Proprioceptive state, float32 (proprio_dim,)."""

    @abc.abstractmethod
    def _render(self) -> dict[str, np.ndarray]:
        """Camera images, uint8 (H, W, 3) per camera name."""

    @abc.abstractmethod
    def _is_success(self) -> bool:
        """The task's success check on the current state."""

    @abc.abstractmethod
    def privileged_state(self) -> SimState:
        """World state for scripted supervisors (object poses, goal); never for the policy."""

    # --- the Gymnasium API ---------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        """Instruction of the current episode."""
        return self._instruction

    @property
    def steps(self) -> int:
        """Env steps taken in the current episode."""
        return self._steps

    def rephrase(self, template: str, words: dict[str, str]) -> str:
        """This episode's instruction as `template` says it (see `reset`); ValueError for a template that does not
        fit the task or a character instructions may not hold."""
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        if fields != set(self._slots):
            raise ValueError(
                f"phrasing {template!r} must use the slots {sorted(self._slots)} of task {self.task.name!r}"
            )
        text = template.format(**{slot: words.get(value, value) for slot, value in self._slots.items()})
        if len(text) > 200 or not set(text) <= set(_INSTRUCTION_CHARSET):
            raise ValueError(
                f"instruction {text!r}: at most 200 characters of letters, digits and {_INSTRUCTION_CHARSET[62:]!r}"
            )
        return text

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Observation, dict]:
        """Start an episode; the same `seed` gives the same scene, instruction and observations.

        `options={"phrasing": template, "words": {...}}` asks for the episode's instruction in other words (an
        evaluation of language the policy was not trained on): `template` uses the task's slots, filled with this
        episode's values, each replaced by `words.get(value, value)` (e.g. {"red": "crimson"}).
        `options={"new_object": {"name": "orange", "rgb": [r, g, b]}}` paints the task's target in a colour no
        demonstration had and names it so (a scene that cannot: ValueError). The scene is the one `seed` gives
        either way: the same layout, draws and other objects."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._slots: dict[str, str] = {}
        self._new_object = (options or {}).get("new_object")
        self._instruction = self._reset_scene(self._rng)
        if options and options.get("phrasing"):
            self._instruction = self.rephrase(str(options["phrasing"]), options.get("words") or {})
        self._steps = 0
        self._success = self._is_success()
        self._needs_reset = False
        return self._observation(), self._info()

    def step(self, action: ArrayLike) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Advance one control tick; see the module docstring for reward and termination."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step(): the episode has ended or never started")
        self._apply_action(self._check_action(action))
        self._steps += 1
        was_success = self._success
        self._success = self._is_success()
        reward = 1.0 if self._success and not was_success else 0.0
        terminated = self._success
        truncated = not terminated and self._steps >= self.max_steps
        self._needs_reset = terminated or truncated
        return self._observation(), reward, terminated, truncated, self._info()

    def render(self) -> np.ndarray:  # type: ignore[override]
        """The first camera's current image, uint8 (H, W, 3)."""
        return self._render()[self.cameras[0]]

    def _check_action(self, action: ArrayLike) -> np.ndarray:
        a = np.asarray(action, dtype=np.float32)
        want = self.embodiment.action_dim
        if a.shape != (want,):
            raise ValueError(
                f"{self.embodiment.name} takes actions of shape ({want},) [{self.embodiment.description}];"
                f" got shape {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a.tolist()}")
        return np.clip(a, -1.0, 1.0)

    def _observation(self) -> Observation:
        return Observation(
            images=self._render(),
            proprio=self._observe_proprio(),
            instruction=self._instruction,
            task=self.task.name,
            embodiment=self.embodiment.name,
        )

    def _info(self) -> dict[str, Any]:
        return {
            "success": self._success,
            "step": self._steps,
            "max_steps": self.max_steps,
            "task": self.task.name,
            "embodiment": self.embodiment.name,
            "instruction": self._instruction,
        }
