"""PyBullet tabletop scenes: the objects of each task, their randomized layout and the success checks.

Every object is an untextured primitive (boxes), which keeps PyBullet's CPU renderer fast. The table
top is the plane z = 0 in the robot base frame (a scenario may stand everything on a bench `Layout.table_z` high);
the workspace lies in front of the robot (x 0.42..0.66 m, y -0.18..0.18 m). One scene class per task id in
`fleet.sim.tasks.TASKS`.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np
from pybullet_utils.bullet_client import BulletClient

from fleet.sim.base import ObjectState
from fleet.sim.scenarios import Layout
from fleet.sim.tasks import COLORS

CUBE_HALF = 0.02  # half edge of every cube, metres (4 cm cubes fit the Panda's 8 cm opening)
TABLE_RGBA = (0.45, 0.43, 0.40, 1.0)
TRAY_RGBA = (0.78, 0.66, 0.47, 1.0)
TRAY_INNER_HALF = 0.07  # half of the tray's inner width, metres
TRAY_FLOOR = 0.006  # tray floor thickness, metres
TRAY_WALL = (0.01, 0.035)  # tray wall thickness and height, metres
BENCH = ((0.30, 0.90), (-0.45, 0.45))  # a raised bench's x and y extent, metres: the workspace, clear of the robot


def _box(client: BulletClient, half: tuple[float, float, float], rgba: tuple[float, ...], mass: float) -> int:
    collision = client.createCollisionShape(client.GEOM_BOX, halfExtents=half)
    visual = client.createVisualShape(client.GEOM_BOX, halfExtents=half, rgbaColor=rgba)
    return client.createMultiBody(mass, collision, visual, (0.0, 0.0, -1.0))


def _tray(client: BulletClient) -> int:
    inner, (wall, height), floor = TRAY_INNER_HALF, TRAY_WALL, TRAY_FLOOR
    outer = inner + wall
    halves = [(outer, outer, floor / 2)]
    offsets = [(0.0, 0.0, floor / 2)]
    for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        halves.append((wall / 2, outer, height / 2) if sx else (outer, wall / 2, height / 2))
        offsets.append((sx * (inner + wall / 2), sy * (inner + wall / 2), height / 2))
    n = len(halves)
    collision = client.createCollisionShapeArray(
        [client.GEOM_BOX] * n, halfExtents=halves, collisionFramePositions=offsets
    )
    visual = client.createVisualShapeArray(
        [client.GEOM_BOX] * n, halfExtents=halves, visualFramePositions=offsets, rgbaColors=[TRAY_RGBA] * n
    )
    return client.createMultiBody(0.0, collision, visual, (0.0, 0.0, -1.0))


def _jitter(rgb: tuple[float, ...], rng: np.random.Generator, amount: float = 0.06) -> list[float]:
    return [*np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.0, 1.0).tolist(), 1.0]


class TabletopScene(abc.ABC):
    """Cubes (and maybe a tray) on a table; subclasses say how many, where they go and what success is."""

    n_cubes: int = 3  # cubes in the scene: the target first, then the others

    def __init__(self, client: BulletClient, layout: Layout | None = None) -> None:
        self.client = client
        self.layout = layout or Layout()
        self.table = _box(client, (1.2, 1.2, 0.01), TABLE_RGBA, 0.0)
        client.resetBasePositionAndOrientation(self.table, (0.45, 0.0, -0.01), (0, 0, 0, 1))
        self.bench: int | None = None
        if self.table_z > 0:
            (x0, x1), (y0, y1) = BENCH
            self.bench = _box(client, ((x1 - x0) / 2, (y1 - y0) / 2, self.table_z / 2), TABLE_RGBA, 0.0)
            centre = ((x0 + x1) / 2, (y0 + y1) / 2, self.table_z / 2)
            client.resetBasePositionAndOrientation(self.bench, centre, (0, 0, 0, 1))
        self.cubes = [_box(client, (CUBE_HALF,) * 3, (1, 1, 1, 1), 0.1) for _ in range(self.n_cubes)]
        for cube in self.cubes:
            client.changeDynamics(cube, -1, lateralFriction=1.0, spinningFriction=0.001)
        self.colors: list[str] = []
        self.target = "cube_0"
        self.goal: dict[str, Any] = {}
        self.start: dict[str, np.ndarray] = {}

    @property
    def table_z(self) -> float:
        """Height of the surface the objects stand on, metres (the layout's bench; 0 on the table)."""
        return float(self.layout.table_z)

    @property
    def movable(self) -> dict[str, int]:
        """Object name -> body id of everything the gripper can move."""
        return {f"cube_{i}": body for i, body in enumerate(self.cubes)}

    def objects(self) -> dict[str, ObjectState]:
        out = {}
        for i, (name, body) in enumerate(self.movable.items()):
            pos, orn = self.client.getBasePositionAndOrientation(body)
            yaw = self.client.getEulerFromQuaternion(orn)[2]
            out[name] = ObjectState(np.array(pos), yaw, CUBE_HALF, self.colors[i])
        return out

    def position(self, name: str) -> np.ndarray:
        return np.array(self.client.getBasePositionAndOrientation(self.movable[name])[0])

    def reset(self, rng: np.random.Generator, target: tuple[str, tuple[float, ...]] | None = None) -> dict[str, str]:
        """Lay out a new episode; return the instruction's slot values. `target` (name, rgb): the target cube in a
        colour of its own instead of the palette's (same draws, so the same layout as without it)."""
        names = list(COLORS)
        picked = [names[i] for i in rng.permutation(len(names))[: self.n_cubes]]
        rgbs: list[tuple[float, ...]] = [COLORS[color] for color in picked]
        if target is not None:
            name, rgb = target
            if name in COLORS or len(rgb) != 3 or not all(0.0 <= float(v) <= 1.0 for v in rgb):
                raise ValueError(f"a new object needs a colour name outside {sorted(COLORS)} and an rgb in [0, 1]")
            picked[0], rgbs[0] = name, tuple(float(v) for v in rgb)
        self.colors = picked
        for cube, rgb_ in zip(self.cubes, rgbs, strict=True):
            self.client.changeVisualShape(cube, -1, rgbaColor=_jitter(rgb_, rng))
        table_rgba = _jitter(TABLE_RGBA[:3], rng, 0.04)
        for surface in (self.table, self.bench):  # a bench takes the table's colour: the same draws as without it
            if surface is not None:
                self.client.changeVisualShape(surface, -1, rgbaColor=table_rgba)
        slots = self._layout(rng)
        self.start = {name: self.position(name) for name in self.movable}
        return slots

    def _place(self, body: int, xy: np.ndarray, z: float, yaw: float) -> None:
        orn = self.client.getQuaternionFromEuler((0.0, 0.0, yaw))
        self.client.resetBasePositionAndOrientation(body, (float(xy[0]), float(xy[1]), z), orn)
        self.client.resetBaseVelocity(body, (0, 0, 0), (0, 0, 0))

    def _sample_xy(
        self, rng: np.random.Generator, taken: list[tuple[np.ndarray, float]], radius: float, ok: Any = None
    ) -> np.ndarray:
        """Rejection-sample a free spot; `taken` holds (centre, radius) of what is already placed."""
        for _ in range(1000):
            xy = np.array([rng.uniform(*self.layout.x_range), rng.uniform(*self.layout.y_range)])
            if all(np.linalg.norm(xy - c) >= r + radius for c, r in taken) and (ok is None or ok(xy)):
                taken.append((xy, radius))
                return xy
        raise RuntimeError("could not lay out the scene; the workspace is too crowded")

    def _place_cubes(self, rng: np.random.Generator, taken: list[tuple[np.ndarray, float]], ok: Any = None) -> None:
        for i, cube in enumerate(self.cubes):
            xy = self._sample_xy(rng, taken, 0.045, ok if i > 0 else None)
            self._place(cube, xy, self.table_z + CUBE_HALF, float(rng.uniform(-math.pi / 4, math.pi / 4)))

    def on_table(self, name: str) -> bool:
        return bool(self.position(name)[2] < self.table_z + CUBE_HALF + 0.01)

    @abc.abstractmethod
    def _layout(self, rng: np.random.Generator) -> dict[str, str]:
        """Place the objects; return the instruction's slot values."""

    @abc.abstractmethod
    def success(self, held: str | None) -> bool:
        """The task's success check; `held` names the object the gripper holds, if any."""


class PushScene(TabletopScene):
    """Push the named block >= 10 cm to the robot's left (+y) or right (-y)."""

    distance = 0.10  # how far the block must move sideways, metres

    def _layout(self, rng: np.random.Generator) -> dict[str, str]:
        direction = 1.0 if rng.random() < 0.5 else -1.0
        y_lo, y_hi = (-0.14, 0.06) if direction > 0 else (-0.06, 0.14)
        target_xy = np.array([rng.uniform(*self.layout.push_x_range), rng.uniform(y_lo, y_hi)])
        taken = [(target_xy, 0.045)]

        def clear_of_path(xy: np.ndarray) -> bool:
            # Keep the other blocks out of the pushed block's corridor (and the pusher's approach).
            along = direction * (xy[1] - target_xy[1])
            return bool(abs(xy[0] - target_xy[0]) > 0.08 or not -0.12 < along < 0.22)

        z = self.table_z + CUBE_HALF
        self._place(self.cubes[0], target_xy, z, float(rng.uniform(-math.pi / 4, math.pi / 4)))
        for cube in self.cubes[1:]:
            xy = self._sample_xy(rng, taken, 0.045, clear_of_path)
            self._place(cube, xy, z, float(rng.uniform(-math.pi / 4, math.pi / 4)))
        self.goal = {"direction": direction, "distance": self.distance}
        return {"color": self.colors[0], "side": "left" if direction > 0 else "right"}

    def success(self, held: str | None) -> bool:
        moved = self.goal["direction"] * (self.position(self.target)[1] - self.start[self.target][1])
        return bool(moved >= self.distance and self.on_table(self.target) and held is None)


class PickScene(TabletopScene):
    """Pick up the named cube: held >= 6 cm above the table."""

    lift = 0.06  # how high the cube's bottom must be above the table, metres

    def _layout(self, rng: np.random.Generator) -> dict[str, str]:
        self._place_cubes(rng, [])
        self.goal = {"lift": self.lift}
        return {"color": self.colors[0]}

    def success(self, held: str | None) -> bool:
        return bool(held == self.target and self.position(self.target)[2] - CUBE_HALF - self.table_z >= self.lift)


class PlaceScene(TabletopScene):
    """Put the named cube in the tray and let go of it."""

    n_cubes = 2

    def __init__(self, client: BulletClient, layout: Layout | None = None) -> None:
        super().__init__(client, layout)
        self.tray = _tray(client)

    def _layout(self, rng: np.random.Generator) -> dict[str, str]:
        taken: list[tuple[np.ndarray, float]] = []
        tray_xy = self._sample_xy(rng, taken, TRAY_INNER_HALF + TRAY_WALL[0] + 0.02)
        self._place(self.tray, tray_xy, self.table_z, 0.0)
        self._place_cubes(rng, taken)
        self.client.changeVisualShape(self.tray, -1, rgbaColor=_jitter(TRAY_RGBA[:3], rng, 0.05))
        floor = self.table_z + TRAY_FLOOR
        self.goal = {"tray": np.array([tray_xy[0], tray_xy[1], floor]), "tray_inner_half": TRAY_INNER_HALF}
        return {"color": self.colors[0]}

    def success(self, held: str | None) -> bool:
        pos = self.position(self.target)
        inside = np.all(np.abs(pos[:2] - self.goal["tray"][:2]) < TRAY_INNER_HALF - 0.005)
        resting = pos[2] < self.goal["tray"][2] + CUBE_HALF + 0.01
        return bool(inside and resting and held is None)


class StackScene(TabletopScene):
    """Stack the named cube on the base cube and let go of it."""

    def _layout(self, rng: np.random.Generator) -> dict[str, str]:
        self._place_cubes(rng, [])
        self.goal = {"base": "cube_1"}
        return {"color": self.colors[0], "base": self.colors[1]}

    def success(self, held: str | None) -> bool:
        top, base = self.position(self.target), self.position(self.goal["base"])
        aligned = np.linalg.norm(top[:2] - base[:2]) < CUBE_HALF
        on_top = abs(top[2] - base[2] - 2 * CUBE_HALF) < 0.01
        return bool(aligned and on_top and self.on_table(self.goal["base"]) and held is None)


SCENES: dict[str, type[TabletopScene]] = {
    "push": PushScene,
    "pick": PickScene,
    "place": PlaceScene,
    "stack": StackScene,
}
