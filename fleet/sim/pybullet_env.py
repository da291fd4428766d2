"""The PyBullet backend of `fleet.sim`: a headless tabletop env for the "panda" and "kuka" embodiments.

Speed: DIRECT mode (no GUI), the CPU tiny renderer, primitive objects and coarse robot meshes (see
`fleet.sim.pybullet_robots`); one env step (IK + physics substeps + a 64x64 image) takes a few ms
on one core. Determinism: every `reset` rebuilds the world from nothing before laying out the episode, so the
same seed gives bit-identical observations whatever ran before.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pybullet
from numpy.typing import ArrayLike
from pybullet_utils.bullet_client import BulletClient

from fleet.embodiments import EmbodimentSpec
from fleet.sim.base import CAMERAS, EnvBase, Observation, SimState, TaskSpec, check_cameras
from fleet.sim.grounding import Grounded
from fleet.sim.pybullet_robots import ArmLimits, KukaSuctionArm, PandaArm, PyBulletArm
from fleet.sim.pybullet_scene import SCENES, TabletopScene
from fleet.sim.scenarios import HOME, HOME_JITTER, Layout

ARMS: dict[str, type[PyBulletArm]] = {"panda": PandaArm, "kuka": KukaSuctionArm}


@dataclass(frozen=True)
class PyBulletConfig:
    """Knobs of the PyBullet backend; the defaults are what the benchmarks and experts are tuned for."""

    image_size: int = 64  # side of the square RGB image, pixels
    camera_eye: tuple[float, float, float] = (1.0, 0.0, 0.5)  # front camera position, robot frame, metres
    camera_target: tuple[float, float, float] = (0.54, 0.0, 0.09)  # point the front camera looks at
    camera_fov: float = 42.0  # vertical field of view, degrees
    # Cameras rendered each step: "front" (fixed, facing the robot) and/or "wrist" (on the back of the hand,
    # looking forward and down past the fingertips and turning with the tool's yaw, as wrist cameras are mounted
    # on real VLA arms: the fingertips and the cube under them in one view). Straight above the tool centre looking
    # down, the Panda's closed fingers filled its whole view (push).
    cameras: tuple[str, ...] = CAMERAS
    wrist_height: float = 0.10  # wrist camera above the tool centre point, metres
    wrist_back: float = 0.08  # wrist camera behind the tool centre point (against the tool's heading), metres
    wrist_ahead: float = 0.03  # it looks at a point this far ahead of the tool centre and 2 cm below it, metres
    wrist_fov: float = 80.0  # wrist camera's field of view, degrees
    shadows: bool = False  # tiny-renderer shadows: nicer images, about half the frame rate
    physics_hz: int = 240  # physics rate; control_hz comes from the embodiment (substeps = ratio)
    solver_iterations: int = 50  # constraint solver iterations per physics step (grasp stability)
    home: tuple[float, float, float] = HOME  # tool start position, jittered per episode
    home_jitter: float = HOME_JITTER  # +- uniform jitter of the tool start position, metres
    limits: ArmLimits = field(default_factory=ArmLimits)  # action scaling and workspace bounds
    layout: Layout = field(default_factory=Layout)  # where the scene puts its objects
    max_steps: int | None = None  # override the task's time limit (env steps)

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in 16..512, got {self.image_size}")
        check_cameras(self.cameras)
        if self.wrist_height <= 0 or self.wrist_back < 0 or not 0 < self.wrist_fov < 180:
            raise ValueError(
                "wrist_height must be positive, wrist_back >= 0 and wrist_fov in (0, 180), got"
                f" {self.wrist_height}, {self.wrist_back}, {self.wrist_fov}"
            )
        if self.physics_hz <= 0 or self.solver_iterations <= 0:
            raise ValueError("physics_hz and solver_iterations must be positive")


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence what the PyBullet C library prints on connect ("argv[0]=") without losing Python's stdout."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout replaced (pytest capture, notebooks)
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


class PyBulletEnv(Grounded, EnvBase):  # Grounded: the runtime's check of operators' instructions
    """A tabletop task on a Panda (parallel gripper) or a KUKA iiwa (suction), simulated by PyBullet."""

    def __init__(
        self,
        task: TaskSpec,
        embodiment: EmbodimentSpec,
        *,
        config: PyBulletConfig | None = None,
        seed: int | None = None,
    ) -> None:
        config = config or PyBulletConfig()
        if embodiment.name not in ARMS:
            raise ValueError(f"the PyBullet backend simulates {sorted(ARMS)}, not {embodiment.name!r}")
        if task.name not in SCENES:
            raise ValueError(f"the PyBullet backend has no scene for task {task.name!r}; it has {sorted(SCENES)}")
        self.cameras = config.cameras  # before EnvBase builds the observation space from it
        super().__init__(task, embodiment, image_size=config.image_size, seed=seed)
        self.config = config
        if config.max_steps is not None:
            self.max_steps = config.max_steps
        self.substeps = max(1, round(config.physics_hz / embodiment.control_hz))

        with _quiet_stdout():
            self.client = BulletClient(connection_mode=pybullet.DIRECT)
        c = self.client
        self.scene, self.arm = self._build_world()
        size = config.image_size
        self._view = c.computeViewMatrix(config.camera_eye, config.camera_target, (0, 0, 1))
        self._proj = c.computeProjectionMatrixFOV(config.camera_fov, 1.0, 0.05, 4.0)
        self._wrist_proj = c.computeProjectionMatrixFOV(config.wrist_fov, 1.0, 0.01, 2.0)
        self._size = size
        self._frames: dict[str, np.ndarray] | None = None  # the current images, rendered at most once per state
        self._closed = False
        self._used = False  # the world has been stepped since it was built

    def _build_world(self) -> tuple[TabletopScene, PyBulletArm]:
        """Create the world from nothing (~20 ms).

        Done on every reset: restoring a `saveState` snapshot is not enough for bit-identical replays,
        because Bullet's broadphase and contact caches keep history that changes the solver's order.
        """
        c, config = self.client, self.config
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(
            fixedTimeStep=1.0 / config.physics_hz,
            numSolverIterations=config.solver_iterations,
            deterministicOverlappingPairs=1,
        )
        return SCENES[self.task.name](c, config.layout), ARMS[self.embodiment.name](c, config.limits)

    # --- EnvBase hooks ---------------------------------------------------------------------------
    def _reset_scene(self, rng: np.random.Generator) -> str:
        if self._used:
            self.scene, self.arm = self._build_world()
        self._used = True
        new = getattr(self, "_new_object", None)
        slots = self.scene.reset(rng, target=(str(new["name"]), tuple(new["rgb"])) if new else None)
        self._slots = dict(slots)  # for `rephrase`
        instruction = self.task.instruction(rng, **slots)
        jitter = rng.uniform(-self.config.home_jitter, self.config.home_jitter, 3)
        self.arm.reset(np.array(self.config.home) + jitter)
        self._frames = None
        return instruction

    def _apply_action(self, action: np.ndarray) -> None:
        self.arm.apply(action)
        for _ in range(self.substeps):
            self.client.stepSimulation()
            self.arm.after_physics(self.scene.movable)
        self._frames = None

    def _observe_proprio(self) -> np.ndarray:
        return self.arm.proprio()

    def _render(self) -> dict[str, np.ndarray]:
        if self._frames is None:
            self._frames = {
                name: self._camera_image(*(self._wrist_view() if name == "wrist" else (self._view, self._proj)))
                for name in self.cameras
            }
        return {name: frame.copy() for name, frame in self._frames.items()}

    def _wrist_view(self) -> tuple[list[float], list[float]]:
        """The wrist camera's view: above and behind the tool centre, looking forward and down past the fingertips,
        image "up" along the tool's heading (its yaw)."""
        config = self.config
        ee, yaw = self.arm.ee_position(), self.arm.ee_yaw()
        heading = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        eye = ee - config.wrist_back * heading + (0.0, 0.0, config.wrist_height)
        target = ee + config.wrist_ahead * heading - (0.0, 0.0, 0.02)
        return self.client.computeViewMatrix(eye.tolist(), target.tolist(), heading.tolist()), self._wrist_proj

    def _camera_image(self, view: list[float], projection: list[float]) -> np.ndarray:
        _, _, rgba, _, _ = self.client.getCameraImage(
            self._size,
            self._size,
            view,
            projection,
            shadow=int(self.config.shadows),
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
        )
        return np.ascontiguousarray(np.asarray(rgba, dtype=np.uint8).reshape(self._size, self._size, 4)[..., :3])

    def _is_success(self) -> bool:
        return self.scene.success(self.arm.held(self.scene.movable))

    def privileged_state(self) -> SimState:
        held = self.arm.held(self.scene.movable)
        return SimState(
            task=self.task.name,
            embodiment=self.embodiment.name,
            step=self.steps,
            ee_position=self.arm.ee_position(),
            ee_yaw=self.arm.ee_yaw(),
            gripper_closed=self.arm.closed,
            gripper_opening=self.arm.opening(),
            held=held,
            objects=self.scene.objects(),
            target=self.scene.target,
            goal=dict(self.scene.goal),
            success=self.scene.success(held),
            action_scale=(self.config.limits.max_translation, self.config.limits.max_rotation),
            table_z=self.scene.table_z,
        )

    def place_tool(self, position: ArrayLike) -> Observation:
        """Put the tool at `position` (world xyz, metres; pointing down, gripper open) mid-episode, without
        simulating the way there, and return the new observation. For probes that ask what a policy does from
        a chosen state (research/servo.py); the objects stay where they are."""
        target = np.asarray(position, dtype=np.float64)
        if target.shape != (3,) or not np.all(np.isfinite(target)):
            raise ValueError(f"tool position must be 3 finite numbers (x, y, z metres), got {target.tolist()}")
        self.arm.reset(target)
        self._frames = None
        return self._observation()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.disconnect()

    def __repr__(self) -> str:
        return f"PyBulletEnv(task={self.task.name!r}, embodiment={self.embodiment.name!r}, image_size={self._size})"
