"""The Meta-World backend of `fleet.sim`: Sawyer tasks simulated by MuJoCo, for the "sawyer" embodiment.

Needs the optional packages `metaworld` (3.1.1) and `mujoco` (3.3.0). Rendering is offscreen through
EGL (Mesa's llvmpipe on a CPU-only machine; `MUJOCO_GL` and `LP_NUM_THREADS` default to "egl" and
"1" unless set) with shadows, reflections and multisampling off and a 64x64 framebuffer, which makes
it several times faster than Meta-World's own `render()`.

Each episode draws a Meta-World seed from the env's generator, so object and goal positions are
random but reproducible. The policy sees the image and proprio (hand xyz + gripper opening); the full
39-d Meta-World state, goal included, goes only into `privileged_state()`, where the expert (Meta-World's
own scripted policy, stateless, so it can take over mid-episode) reads it.
"""

from __future__ import annotations

import atexit
import math
import os
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from fleet.embodiments import EmbodimentSpec
from fleet.sim.base import CAMERAS, EnvBase, ObjectState, SimState, TaskSpec, check_cameras
from fleet.sim.grounding import Grounded

# fleet task id -> (Meta-World env name, Meta-World scripted policy class)
METAWORLD_TASKS: dict[str, tuple[str, str]] = {
    "mw-reach": ("reach-v3", "SawyerReachV3Policy"),
    "mw-push": ("push-v3", "SawyerPushV3Policy"),
    "mw-pick-place": ("pick-place-v3", "SawyerPickPlaceV3Policy"),
    "mw-drawer-open": ("drawer-open-v3", "SawyerDrawerOpenV3Policy"),
    "mw-button-press": ("button-press-topdown-v3", "SawyerButtonPressTopdownV3Policy"),
}


# Envs still open at interpreter exit: closed in an atexit hook, because MuJoCo's EGL context raises
# noisy errors when it is garbage-collected after EGL itself has been torn down.
_OPEN: weakref.WeakSet[MetaWorldEnv] = weakref.WeakSet()


@atexit.register
def _close_open_envs() -> None:
    for env in list(_OPEN):
        env.close()


@dataclass(frozen=True)
class MetaWorldConfig:
    """Knobs of the Meta-World backend."""

    image_size: int = 64  # side of the square RGB image, pixels
    camera: str = "corner"  # Meta-World camera of "front" ("corner", "corner2", "corner3", "corner4", "topview")
    # Cameras rendered each step: "front" (`camera`) and "wrist" (Meta-World's "gripperPOV", on the hand).
    cameras: tuple[str, ...] = CAMERAS
    max_steps: int | None = None  # override the task's time limit (env steps)

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in 16..512, got {self.image_size}")
        check_cameras(self.cameras)

    def mujoco_camera(self, name: str) -> str:
        return self.camera if name == "front" else "gripperPOV"


def _import_metaworld() -> Any:
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must be set before mujoco is imported
    os.environ.setdefault("LP_NUM_THREADS", "1")  # llvmpipe: one render thread per env (one core per robot)
    try:
        import metaworld.env_dict
        import metaworld.policies
        import mujoco
        import mujoco.gl_context
    except ImportError as err:
        raise ImportError(
            f"the 'sawyer' embodiment needs Meta-World: install metaworld==3.1.1 mujoco==3.3.0 ({err})"
        ) from err
    windowed = getattr(mujoco.gl_context.GLContext, "__module__", "") == "mujoco.glfw"
    if windowed and not os.environ.get("DISPLAY"):
        # mujoco was imported before MUJOCO_GL was set (e.g. by `import metaworld`) and picked the
        # windowed GLFW context; with no display, switch to the headless EGL one.
        from mujoco.egl import GLContext

        mujoco.gl_context.GLContext = GLContext
    return metaworld, mujoco


class MetaWorldEnv(Grounded, EnvBase):  # Grounded: the runtime's check of operators' instructions
    """One Meta-World task on the Sawyer arm, behind fleet's env interface."""

    def __init__(
        self,
        task: TaskSpec,
        embodiment: EmbodimentSpec,
        *,
        config: MetaWorldConfig | None = None,
        seed: int | None = None,
    ) -> None:
        config = config or MetaWorldConfig()
        if task.name not in METAWORLD_TASKS:
            raise ValueError(f"the Meta-World backend has no task {task.name!r}; it has {sorted(METAWORLD_TASKS)}")
        self.cameras = config.cameras  # before EnvBase builds the observation space from it
        super().__init__(task, embodiment, image_size=config.image_size, seed=seed)
        self.config = config
        if config.max_steps is not None:
            self.max_steps = config.max_steps
        metaworld, mujoco = _import_metaworld()
        env_name, policy_name = METAWORLD_TASKS[task.name]
        env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[env_name]()
        env._partially_observable = False  # keep the goal in the (privileged) state vector
        vars(env).pop("sawyer_observation_space", None)  # a cached_property computed for the hidden goal
        env._set_task_called = True  # we randomize through env.seed() instead of Meta-World's task lists
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        self._env = env
        self._policy = getattr(metaworld.policies, policy_name)()
        model = env.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(config.image_size, 16)
        model.vis.global_.offheight = max(config.image_size, 16)
        self._renderer = mujoco.Renderer(model, config.image_size, config.image_size)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            self._renderer.scene.flags[flag] = 0
        self._state = np.zeros(39)
        self._closed_cmd = False
        self._mw_success = False
        self._frames: dict[str, np.ndarray] | None = None  # the current images, rendered at most once per state
        self._closed = False
        _OPEN.add(self)

    # --- EnvBase hooks ---------------------------------------------------------------------------
    def _reset_scene(self, rng: np.random.Generator) -> str:
        if getattr(self, "_new_object", None):
            raise ValueError(f"Meta-World's {self.task.name} scene has no object to paint in a new colour")
        self._env.seed(int(rng.integers(2**31 - 1)))
        obs, _ = self._env.reset()
        self._state = np.asarray(obs, dtype=np.float64)
        self._closed_cmd = False
        self._mw_success = False
        self._frames = None
        return self.task.instruction(rng)

    def _apply_action(self, action: np.ndarray) -> None:
        obs, _, _, _, info = self._env.step(action)
        self._state = np.asarray(obs, dtype=np.float64)
        self._closed_cmd = bool(action[-1] > 0.0)
        self._mw_success = bool(info.get("success", False))
        self._frames = None

    def _observe_proprio(self) -> np.ndarray:
        return self._state[:4].astype(np.float32)  # hand xyz, gripper opening

    def _render(self) -> dict[str, np.ndarray]:
        if self._frames is None:
            self._frames = {}
            for name in self.cameras:
                self._renderer.update_scene(self._env.data, camera=self.config.mujoco_camera(name))
                self._frames[name] = np.ascontiguousarray(self._renderer.render()[::-1])  # MuJoCo's rows are bottom-up
        return {name: frame.copy() for name, frame in self._frames.items()}

    def _is_success(self) -> bool:
        return self._mw_success

    def privileged_state(self) -> SimState:
        s = self._state
        x, y, z, w = s[7:11]
        yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
        return SimState(
            task=self.task.name,
            embodiment=self.embodiment.name,
            step=self.steps,
            ee_position=s[:3].copy(),
            ee_yaw=0.0,
            gripper_closed=self._closed_cmd,
            gripper_opening=float(s[3]),
            held=None,
            objects={"object": ObjectState(s[4:7].copy(), yaw, 0.02, "")},
            target="object",
            goal={"position": s[-3:].copy()},
            success=self._mw_success,
            action_scale=(float(self._env.action_scale), 0.0),
            backend_state=s.copy(),
        )

    def expert_action(self, state: SimState) -> np.ndarray:
        """Meta-World's scripted policy for this task, on the full state vector (stateless)."""
        assert state.backend_state is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips, as intended
            action = self._policy.get_action(state.backend_state)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._renderer.close()
            self._env.close()

    def __repr__(self) -> str:
        return f"MetaWorldEnv(task={self.task.name!r}, image_size={self.image_size})"
