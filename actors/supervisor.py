"""The supervisor hook: where a human (in sim, the scripted expert) takes over from the policy.

HG-DAgger style: the supervisor watches every step. When the policy drifts off course (its action
disagrees with what the supervisor would do for `patience` steps in a row) or stalls (the end
effector barely moves for `stall_steps`), it takes over for `takeover_steps` steps, then hands
control back. Those steps are marked in the intervention mask and sent as `Correction`s.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Supervisor(Protocol):
    """Decides, each step, whether a human drives; returns the human's action when it does."""

    def reset(self) -> None: ...

    def step(self, obs: Any, policy_action: np.ndarray) -> np.ndarray | None: ...


@dataclass(frozen=True)
class SupervisorConfig:
    """When the simulated human steps in."""

    disagreement: float = 0.6  # L2 distance between policy and expert translation commands counted as "off course"
    patience: int = 3  # consecutive off-course steps before taking over
    stall_steps: int = 12  # steps with (almost) no end-effector motion before taking over
    stall_motion: float = 0.05  # summed |translation command| over the stall window below which it is a stall
    takeover_steps: int = 10  # steps the human drives once it has taken over


class ExpertSupervisor:
    """The scripted expert of the env's task, acting as the simulated human supervisor."""

    name = "supervisor:scripted-expert"

    def __init__(self, env: Any, config: SupervisorConfig | None = None) -> None:
        from fleet.sim.experts import make_expert

        self.config = config or SupervisorConfig()
        self.expert = make_expert(env)
        self.reset()

    def reset(self) -> None:
        self._off = 0
        self._left = 0
        self._motion: deque[float] = deque(maxlen=self.config.stall_steps)

    def step(self, obs: Any, policy_action: np.ndarray) -> np.ndarray | None:
        expert = np.asarray(self.expert(obs), dtype=np.float32)
        if self._left > 0:
            self._left -= 1
            return expert
        cfg = self.config
        self._off = self._off + 1 if float(np.linalg.norm(policy_action[:3] - expert[:3])) > cfg.disagreement else 0
        self._motion.append(float(np.abs(policy_action[:3]).sum()))
        stalled = len(self._motion) == cfg.stall_steps and sum(self._motion) < cfg.stall_motion
        if self._off >= cfg.patience or stalled:
            self._off = 0
            self._motion.clear()
            self._left = cfg.takeover_steps - 1
            return expert
        return None
