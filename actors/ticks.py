"""What a robot's control loop needs to explain a missed tick: per-thread CPU and scheduling counters, the garbage
collector's pauses, and the heap freeze that keeps full collections short. The loop itself is actors/runtime.py;
these are its diagnostics (each missed tick's record in `RobotRuntime.missed_log` is built from them)."""

from __future__ import annotations

import gc
import resource
import time
from collections import deque
from typing import Any

RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)  # Linux; elsewhere the whole process


def thread_usage() -> tuple[float, float, int, int, int]:
    """The calling thread's (CPU s, process CPU s, voluntary and involuntary context switches, major faults).

    CPU times from the scheduler's exact clocks: getrusage's user + system time is scaled from tick samples and
    over a 20 ms tick could exceed the process's exact time or the tick's wall time by a tick (CI saw it).
    """
    usage = resource.getrusage(RUSAGE_THREAD)
    return (time.thread_time(), time.process_time(), usage.ru_nvcsw, usage.ru_nivcsw, usage.ru_majflt)


def usage_delta(
    before: tuple[float, float, int, int, int], after: tuple[float, float, int, int, int]
) -> dict[str, float]:
    """What a missed tick's thread did between two `thread_usage` readings.

    `blocked`: times it went to sleep on something (a lock, I/O, its chunk: see waited_ms); `preempted`: times the
    scheduler took the core away from it; `major_faults`: pages it had to wait for from disk.
    """
    return {
        "cpu_ms": round((after[0] - before[0]) * 1000, 1),
        "process_cpu_ms": round((after[1] - before[1]) * 1000, 1),
        "blocked": after[2] - before[2],
        "preempted": after[3] - before[3],
        "major_faults": after[4] - before[4],
    }


class CollectorPauses:
    """This process's garbage-collector pauses (via `gc.callbacks`), so a missed tick can say what it lost to them."""

    def __init__(self, min_s: float = 0.002) -> None:
        self.min_s = min_s
        self.pauses: deque[tuple[float, float, int]] = deque(maxlen=512)  # (monotonic start, end, generation)
        self._started = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if phase == "start":
            self._started = now
        elif now - self._started >= self.min_s:
            self.pauses.append((self._started, now, int(info.get("generation", -1))))

    def within(self, start: float, end: float) -> float:
        """Seconds of [start, end] (monotonic) the collector held the process."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b, _ in list(self.pauses))


GC_PAUSES = CollectorPauses()  # one per process: gc.callbacks are process-wide


def freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's sight (`gc.freeze`), once the robot is built.

    A full (generation-2) collection walks every tracked object of the process: with torch, the simulator and
    the language model imported that is millions of objects, and on a loaded 2-core machine one pass took
    0.3-0.66 s — the missed ticks around swaps were those passes, triggered by the allocations of loading a
    new version (bench/latency.py). What is alive when the control loop starts (modules, the env, the first
    model, the language model its first inference imports) lives as long as the process, so it need not be
    walked again; later passes walk only what the loop and the reloader allocated since.
    """
    gc.collect()
    gc.freeze()
