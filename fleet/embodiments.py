"""The robot bodies fleet knows: action and proprio sizes the policy's adapters are built for.

Shared by the simulator (which implements them), the policy (one input/output adapter per
embodiment) and the wire schemas (which validate array shapes). A real robot registers a spec here.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.naming import lookup


@dataclass(frozen=True)
class EmbodimentSpec:
    """Shape contract of one robot body."""

    name: str  # stable id used on the wire, in the policy and in the dashboard
    action_dim: int  # size of one action step (end-effector deltas, gripper command, ...)
    proprio_dim: int  # size of the proprioceptive state vector
    control_hz: float  # control rate the runtime ticks at
    description: str = ""

    def __post_init__(self) -> None:
        if self.action_dim <= 0 or self.proprio_dim <= 0:
            raise ValueError(f"embodiment {self.name!r}: action_dim and proprio_dim must be positive")
        if self.control_hz <= 0:
            raise ValueError(f"embodiment {self.name!r}: control_hz must be positive")


EMBODIMENTS: dict[str, EmbodimentSpec] = {
    spec.name: spec
    for spec in (
        EmbodimentSpec(
            "panda",
            action_dim=4,
            proprio_dim=10,
            control_hz=10.0,
            description=(
                "Franka Panda, parallel gripper: action = (dx, dy, dz, gripper > 0 closes);"
                " proprio = tool xyz, tool quaternion xyzw, 2 finger positions, gripper closed"
            ),
        ),
        EmbodimentSpec(
            "kuka",
            action_dim=5,
            proprio_dim=8,
            control_hz=10.0,
            description=(
                "KUKA iiwa, suction tool: action = (dx, dy, dz, dyaw, suction > 0 on);"
                " proprio = tool xyz, sin/cos tool yaw, suction on, sealed, tool contact"
            ),
        ),
        EmbodimentSpec(
            "sawyer",
            action_dim=4,
            proprio_dim=4,
            control_hz=10.0,
            description="Meta-World Sawyer: action = (dx, dy, dz, gripper), proprio = hand xyz + gripper",
        ),
    )
}


def get_embodiment(name: str) -> EmbodimentSpec:
    """Look up an embodiment by name, with a did-you-mean hint on typos."""
    return lookup(EMBODIMENTS, name, "embodiment")
