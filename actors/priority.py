"""CPU priority of a robot's process: control ticks first, batch work (learner, broker, uploads) after.

A robot's 10 Hz tick needs ~5-10 ms of CPU, but on a machine whose cores are all busy it may wait for
one: bench/latency.py's missed ticks on 2 shared cores were ticks whose process got 6-11 ms of CPU in their
~100 ms (preempted the rest of the time). Ray starts its workers at niceness 15 (`RAY_worker_niceness`), so
the sim fleet's robots, Ray actors, ran *below* the broker, MLflow and the learner. Real robots run their
control loop ahead of everything else on the computer; `set_niceness` does that for the robot's whole process
(its inference worker and reloader too, so a tick never waits on a lower-priority thread of its own that holds
the interpreter lock). Measured (bench/latency.py, 4 robots, 2 cores): 5 missed ticks in 12,825 (1 in a swap)
at Ray's niceness 15; 0 in 12,823 (0 in 160 swaps) at -5.

    niceness, refused = set_niceness(-5)  # refused: why it could not (no CAP_SYS_NICE / RLIMIT_NICE), else None
"""

from __future__ import annotations

import os


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except FileNotFoundError:  # no /proc (macOS): setpriority on the process covers every thread there
        return [0]


def check_niceness(niceness: int) -> None:
    """ValueError unless `niceness` is one the kernel has (-20 highest priority .. 19 lowest)."""
    if not -20 <= niceness <= 19:
        raise ValueError(f"niceness must be in [-20, 19], got {niceness}")


def set_niceness(niceness: int) -> tuple[int, str | None]:
    """Give every thread of this process `niceness` (-20..19; new threads inherit it from their creator).

    Linux keeps a niceness per thread, so each running thread is set. Returns the calling thread's niceness
    afterwards and, when the system refused a higher priority, why (the process then keeps its own).
    """
    check_niceness(niceness)
    refused = None
    for tid in _threads():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except PermissionError:
            refused = (
                f"niceness {niceness} refused: a priority above normal needs CAP_SYS_NICE or an RLIMIT_NICE "
                "allowance (systemd LimitNICE=, /etc/security/limits.conf)"
            )
            break
    return os.getpriority(os.PRIO_PROCESS, 0), refused
