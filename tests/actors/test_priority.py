"""A real-time robot's process priority (actors.priority): every thread, inherited by new ones, refused cleanly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from actors.runtime import RobotConfig

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")

# Each case runs in a child process: the test process keeps its own priority (it could not raise it back).
CHILD = """
import json, os, resource, sys, threading
from actors.priority import set_niceness

target, drop_privilege = int(sys.argv[1]), sys.argv[2] == "drop"
if drop_privilege:  # no CAP_SYS_NICE and no RLIMIT_NICE allowance: a priority above normal is refused
    resource.setrlimit(resource.RLIMIT_NICE, (0, resource.getrlimit(resource.RLIMIT_NICE)[1]))
    if os.geteuid() == 0:
        os.setuid(65534)  # nobody
started, finish, ids = threading.Event(), threading.Event(), {}

def worker():
    ids["old"] = threading.get_native_id()
    started.set()
    finish.wait()

old = threading.Thread(target=worker)
old.start()
started.wait()
base = os.getpriority(os.PRIO_PROCESS, 0)
now, refused = set_niceness(base + target if target > 0 else target)
new = {}
later = threading.Thread(target=lambda: new.update(nice=os.getpriority(os.PRIO_PROCESS, 0)))
later.start()
later.join()
print(json.dumps({"base": base, "now": now, "refused": refused,
                  "old_thread": os.getpriority(os.PRIO_PROCESS, ids["old"]), "new_thread": new["nice"]}))
finish.set()
old.join()
"""


def _child(target: int, privilege: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(target), privilege], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_thread_of_the_process_gets_the_niceness_and_new_threads_inherit_it() -> None:
    seen = _child(3, "keep")  # 3 above the inherited niceness: allowed without privilege
    assert seen["base"] <= 16, "the test runs at too low a priority to lower it by 3"
    assert seen["refused"] is None
    assert seen["now"] == seen["old_thread"] == seen["new_thread"] == seen["base"] + 3


def test_a_priority_above_normal_without_privilege_is_refused_with_the_reason_and_nothing_changes() -> None:
    seen = _child(-5, "drop")
    assert seen["refused"] is not None and "CAP_SYS_NICE" in seen["refused"]
    assert seen["now"] == seen["old_thread"] == seen["new_thread"] == seen["base"]


def test_niceness_outside_the_kernels_range_is_a_config_error() -> None:
    assert RobotConfig(robot_id="r", embodiment="panda", task="pick").niceness < 0  # real-time robots go first
    for bad in (-21, 20):
        with pytest.raises(ValueError, match="niceness"):
            RobotConfig(robot_id="r", embodiment="panda", task="pick", niceness=bad)
