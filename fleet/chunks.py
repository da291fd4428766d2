"""The chunk schedule: how a chunking policy's (H, A) action chunks become one action per control tick.

Robots (`actors/runtime.py`) and every evaluation (`fleet.recipe.evaluate.ChunkedController`: the gate, `fleet eval`,
the benches) act through this one schedule, so a version is scored the way the fleet runs it. The first
`execute_steps` actions of a chunk are executed; the next chunk is inferred `prefetch_steps` before the current one
runs out, from the observation of that step, and its first actions, meant for the steps executed while it was
inferred, are skipped.

Measured on the bench's version 1 (the eval gate: 30 held-out episodes per pair of pick/push/place x panda/kuka):
the whole 8-step chunk 0.53; re-planning every 4 steps 0.61, every 2 steps 0.66 with the next chunk inferred 1 step
ahead and 0.63 with 2 steps ahead. Two steps give inference 200 ms at 10 Hz (it takes ~7 ms idle; a late one under
load waited ~78 ms in bench/latency.py).
"""

from __future__ import annotations

from typing import Any

EXECUTE_STEPS = 2  # actions executed per chunk before re-planning
PREFETCH_STEPS = 2  # the next chunk is inferred this many steps before the current one runs out


class ChunkSchedule:
    """Which action of which chunk a tick executes, and when the next chunk is due. The caller infers (at once or
    in a worker thread) and says so: `requested()` when it starts inferring the next chunk, `start(chunk)` when
    that chunk is the current one.

        schedule.reset(); schedule.requested(); schedule.start(infer(obs))
        every tick:
            if schedule.exhausted: (infer now if nothing is pending), then schedule.start(next chunk)
            if nothing is pending and schedule.due: schedule.requested(), start inferring from obs
            action = schedule.take()
    """

    def __init__(self, execute_steps: int | None = EXECUTE_STEPS, prefetch_steps: int = PREFETCH_STEPS) -> None:
        if execute_steps is not None and execute_steps <= 0:
            raise ValueError(f"execute_steps must be positive (or None: the whole chunk), got {execute_steps}")
        if prefetch_steps < 0:
            raise ValueError(f"prefetch_steps must be >= 0, got {prefetch_steps}")
        self.execute_steps, self.prefetch_steps = execute_steps, prefetch_steps
        self.reset()

    def reset(self) -> None:
        """A new episode."""
        self.chunk: Any = None
        self.cursor = self.end = 0  # the current chunk runs actions [cursor, end)
        self.step = 0  # ticks of this episode so far
        self.requested_at = 0  # the step whose observation the latest requested chunk is inferred from

    def requested(self) -> None:
        self.requested_at = self.step

    def start(self, chunk: Any) -> None:
        """Make `chunk` (the one last requested) current: its actions for the steps gone since it was requested
        are skipped."""
        self.chunk = chunk
        self.cursor = min(self.step - self.requested_at, len(chunk) - 1)
        self.end = min(len(chunk), self.cursor + (self.execute_steps or len(chunk)))

    @property
    def exhausted(self) -> bool:
        return self.cursor >= self.end

    @property
    def due(self) -> bool:
        """The next chunk should be requested now (also right after a switch, so a short run gets its full lead)."""
        return self.end - self.cursor <= self.prefetch_steps

    def take(self) -> Any:
        """This tick's action."""
        action = self.chunk[self.cursor]
        self.cursor += 1
        self.step += 1
        return action
