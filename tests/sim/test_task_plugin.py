"""A task added from outside fleet (`fleet.sim.plugins`): one registration in a plugin module named by
`FLEET_TASK_PLUGINS`, and the expert collects its demonstrations, the gate scores it and a Ray worker builds its env,
with no other file changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.sim.base import TaskSpec
from fleet.sim.plugins import load_plugins, register_task
from fleet.sim.tasks import TASKS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_plugin_task_runs_through_demos_the_gate_and_a_ray_worker(tmp_path: Path) -> None:
    env = {**os.environ, "FLEET_TASK_PLUGINS": "tests.sim.toy_task", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
           "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    driver = Path(__file__).with_name("plugin_driver.py")
    ran = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=500)
    assert ran.returncode == 0, ran.stderr[-4000:]
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["registered"] and out["demos"] == [True, True]  # the expert does it, the scene says it succeeded
    assert out["gate"] == ["grasp/panda"]
    assert out["ray_worker"].startswith(("grasp the ", "take hold of the "))  # the worker loaded the plugin too
    assert "grasp" not in TASKS  # this process was not given the plugin


def test_a_task_name_is_registered_once_and_a_missing_plugin_is_named() -> None:
    pick = TASKS["pick"]
    register_task(pick, scene=None, planner=None, remaining=None)  # the same registration again: harmless
    other = TaskSpec("pick", phrasings=("lift the {color} cube", "raise the {color} cube"), max_steps=5,
                     description="not the built-in pick")  # fmt: skip
    with pytest.raises(ValueError, match="already registered"):
        register_task(other, scene=None, planner=None, remaining=None)
    assert TASKS["pick"] is pick
    with pytest.raises(ImportError, match="no_such_plugin_module"):
        load_plugins("no_such_plugin_module")
