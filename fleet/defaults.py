"""What a fleet, its version 1, the learner's gate and an evaluation work on unless told otherwise: one place to
change it (a light module, so command lines can show it without importing the simulator)."""

from __future__ import annotations

DEFAULT_TASKS: tuple[str, ...] = ("pick", "push", "place")  # fleet.sim.tasks.TASKS ids
DEFAULT_EMBODIMENTS: tuple[str, ...] = ("panda", "kuka")  # fleet.embodiments ids
