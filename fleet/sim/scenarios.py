"""Deployment scenarios: the conditions a deployed fleet meets, named once and accepted everywhere.

Version 1 learns from scripted demonstrations in the `nominal` conditions. A fleet earns its keep where
deployment differs from them, and online fine-tuning helps most with execution shifts (object positions,
start poses: rlvla.github.io, arXiv 2505.19789). A scenario names such conditions so that a fleet
(`fleet robots run --scenario`), an evaluation (`fleet eval --scenario`), the learner's gate
(`GateConfig.scenario`), the demo and the benchmarks all run the same ones:

    env = make_env("pick", "panda", seed=0, scenario="far-reach")
    get_scenario("far-reach").tasks         # the tasks its fleet works on

    nominal     the demonstrations' conditions
    high-start  the tool starting higher and nearer the base (home 0.42, 0, 0.30 +- 6 cm; the demonstrations:
                0.52, 0, 0.22 +- 4 cm), objects where the demonstrations put them: the approach starts from poses
                version 1 never saw, the grasp and the rest are its own
    far-reach   objects farther out and wider to the sides (x 0.56-0.74 m, |y| <= 0.24 m; the demonstrations:
                x 0.42-0.66, |y| <= 0.18) and the tool starting higher and nearer the base (home 0.42, 0, 0.28 +- 6 cm;
                the demonstrations: 0.52, 0, 0.22 +- 4 cm): an execution shift on the tasks version 1 knows
    raised-bench  pick and place on a bench 6 cm above the demonstrations' table (objects where they put them,
                the tool starting where it did): every height the policy learnt is off by the bench
    new-task    stacking, a task version 1 never saw, seeded with 20 demonstrations per embodiment

Only the PyBullet embodiments ("panda", "kuka") run scenarios other than `nominal`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.defaults import DEFAULT_EMBODIMENTS, DEFAULT_TASKS
from fleet.naming import lookup

DEFAULT_SCENARIO = "nominal"
X_RANGE = (0.42, 0.66)  # where the demonstrations' objects are placed, metres (robot frame)
Y_RANGE = (-0.18, 0.18)
HOME = (0.52, 0.0, 0.22)  # the tool's start position in the demonstrations, robot frame, metres
HOME_JITTER = 0.04  # +- uniform jitter of it per episode, metres


@dataclass(frozen=True)
class Layout:
    """Where a tabletop scene puts its objects (`fleet.sim.pybullet_scene`)."""

    x_range: tuple[float, float] = X_RANGE  # cubes and the tray, metres (robot frame)
    y_range: tuple[float, float] = Y_RANGE
    push_x_range: tuple[float, float] = (0.45, 0.63)  # the pushed block (its sideways room is set by the task)
    # Height of the work surface above the demonstrations' table top, metres: > 0 puts a bench of that height on the
    # table under the workspace (not under the robot, whose base stays where it was), and everything stands on it.
    table_z: float = 0.0

    def __post_init__(self) -> None:
        for name in ("x_range", "y_range", "push_x_range"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"Layout.{name} must be (low, high) with low < high, got {(lo, hi)}")
        if not 0.0 <= self.table_z <= 0.10:
            raise ValueError(f"Layout.table_z must be in [0, 0.10] metres, got {self.table_z}")


@dataclass(frozen=True)
class Scenario:
    """One set of deployment conditions (see the module docstring)."""

    name: str  # id used on every command line (`--scenario`)
    description: str  # one line for people: what differs from the demonstrations
    tasks: tuple[str, ...] = DEFAULT_TASKS  # the tasks a fleet in this scenario works on
    embodiments: tuple[str, ...] = DEFAULT_EMBODIMENTS  # the arms that run it
    layout: Layout = field(default_factory=Layout)  # where objects go
    home: tuple[float, float, float] = HOME  # the tool's start position, robot frame, metres
    home_jitter: float = HOME_JITTER  # +- uniform jitter of the start position per episode, metres
    # Demonstrations a deployment is seeded with per task x embodiment (a new task); None = version 1's own.
    demos_per_pair: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.tasks or not self.embodiments:
            raise ValueError("Scenario needs a name, tasks and embodiments")
        if self.home_jitter < 0 or (self.demos_per_pair is not None and self.demos_per_pair < 1):
            raise ValueError("Scenario: home_jitter must be >= 0 and demos_per_pair >= 1 (or None)")

    @property
    def is_nominal(self) -> bool:
        return self.layout == Layout() and self.home == HOME and self.home_jitter == HOME_JITTER

    def pybullet_overrides(self) -> dict[str, object]:
        """`PyBulletConfig` fields this scenario sets."""
        return {"layout": self.layout, "home": self.home, "home_jitter": self.home_jitter}


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("nominal", "the demonstrations' conditions"),
        Scenario(
            "high-start",
            "the tool starting higher and nearer the base than in any demonstration",
            home=(0.42, 0.0, 0.30),
            home_jitter=0.06,
        ),
        Scenario(
            "far-reach",
            "objects farther out and wider to the sides, the tool starting higher and nearer the base",
            layout=Layout(x_range=(0.56, 0.74), y_range=(-0.24, 0.24), push_x_range=(0.60, 0.72)),
            home=(0.42, 0.0, 0.28),
            home_jitter=0.06,
        ),
        Scenario(
            "raised-bench",
            "the work surface 6 cm higher than the demonstrations' table (a bench on it), pick and place",
            tasks=("pick", "place"),
            layout=Layout(table_z=0.06),
        ),
        Scenario(
            "new-task",
            "stacking one cube on another, a task version 1 never saw, seeded with 20 demonstrations per arm",
            tasks=("stack",),
            demos_per_pair=20,
        ),
    )
}


SCENARIO_NAMES = ", ".join(SCENARIOS)  # for command-line help


def get_scenario(name: str | Scenario) -> Scenario:
    """A scenario by name (with a did-you-mean hint), or the scenario itself."""
    return name if isinstance(name, Scenario) else lookup(SCENARIOS, name, "scenario")
