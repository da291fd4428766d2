"""The tabletop tasks fleet simulates: ids, instruction phrasings, time limits and the colour palette.

Backend-agnostic: a backend builds the scene and checks success for each task id listed here.
"push", "pick", "place", "stack" run on PyBullet ("panda", "kuka"); the "mw-*" tasks are Meta-World
tasks on its Sawyer ("sawyer", optional packages; goals there are shown as a marker in the image).
Directions ("left", "right") are the robot's own: left is +y in the robot base frame, which appears on
the right of the front camera's image (the camera faces the robot).
"""

from __future__ import annotations

from fleet.sim.base import TaskSpec

# Colour names the instructions use and the RGB they are rendered with (jittered per episode).
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.92, 0.82, 0.10),
    "purple": (0.55, 0.15, 0.70),
}

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "push",
            phrasings=(
                "push the {color} block to the {side}",
                "slide the {color} block to the {side}",
                "nudge the {color} block over to the {side}",
            ),
            max_steps=60,
            description="the named block ends >= 10 cm to the robot's left/right of where it started, on the table",
            slots=("color", "side"),
        ),
        TaskSpec(
            "pick",
            phrasings=(
                "pick up the {color} cube",
                "lift the {color} cube",
                "grab the {color} cube and raise it",
            ),
            max_steps=60,
            description="the named cube is held >= 6 cm above the table",
        ),
        TaskSpec(
            "place",
            phrasings=(
                "put the {color} cube in the tray",
                "place the {color} cube into the tray",
                "drop the {color} cube in the tray",
            ),
            max_steps=100,
            description="the named cube rests inside the tray and the gripper has let go of it",
        ),
        TaskSpec(
            "stack",
            phrasings=(
                "stack the {color} cube on the {base} cube",
                "put the {color} cube on top of the {base} cube",
                "place the {color} cube onto the {base} cube",
            ),
            max_steps=100,
            description="the named cube rests on top of the base cube and the gripper has let go of it",
            slots=("color", "base"),
        ),
        TaskSpec(
            "mw-reach",
            phrasings=("reach the target", "move the gripper to the goal marker"),
            max_steps=100,
            description="Meta-World reach-v3: the gripper is within 5 cm of the goal",
            slots=(),
            embodiments=("sawyer",),
        ),
        TaskSpec(
            "mw-push",
            phrasings=("push the puck to the goal", "slide the puck onto the target"),
            max_steps=120,
            description="Meta-World push-v3: the puck is within 5 cm of the goal",
            slots=(),
            embodiments=("sawyer",),
        ),
        TaskSpec(
            "mw-pick-place",
            phrasings=("pick up the puck and place it at the goal", "move the puck to the target through the air"),
            max_steps=120,
            description="Meta-World pick-place-v3: the puck is within 7 cm of the goal",
            slots=(),
            embodiments=("sawyer",),
        ),
        TaskSpec(
            "mw-drawer-open",
            phrasings=("open the drawer", "pull the drawer open"),
            max_steps=150,
            description="Meta-World drawer-open-v3: the drawer is pulled open",
            slots=(),
            embodiments=("sawyer",),
        ),
        TaskSpec(
            "mw-button-press",
            phrasings=("press the button", "push the button down"),
            max_steps=120,
            description="Meta-World button-press-topdown-v3: the button is pressed down",
            slots=(),
            embodiments=("sawyer",),
        ),
    )
}
