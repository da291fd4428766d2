"""FleetConfig: how a simulated fleet places its robots (the Ray side runs in test_fleet_loop)."""

from __future__ import annotations

import pytest

from actors.sim_fleet import FleetConfig


def test_robots_fetch_a_new_version_at_spread_out_moments() -> None:
    delays = [robot.reload_delay_s for robot in FleetConfig(n=4, reload_stagger_s=0.4).robots()]
    assert delays == [0.0, 0.1, 0.2, 0.3]
    eight = [robot.reload_delay_s for robot in FleetConfig(n=8).robots()]
    assert len(set(eight)) == 8 and max(eight) < FleetConfig().reload_stagger_s
    assert {robot.reload_delay_s for robot in FleetConfig(n=3, reload_stagger_s=0).robots()} == {0.0}
    with pytest.raises(ValueError, match="reload_stagger_s"):
        FleetConfig(reload_stagger_s=-0.1)


@pytest.mark.parametrize(("n", "tasks", "embodiments"), [(2, 2, 2), (3, 3, 2), (4, 3, 2), (6, 3, 2)])
def test_small_fleets_cover_as_many_tasks_and_embodiments_as_they_can(n: int, tasks: int, embodiments: int) -> None:
    robots = FleetConfig(n=n, tasks=("pick", "push", "place"), embodiments=("panda", "kuka")).robots()
    assert len({r.task for r in robots}) == tasks and len({r.embodiment for r in robots}) == embodiments
    assert [r.robot_id for r in robots] == [f"sim-{i}" for i in range(n)] and [r.seed for r in robots] == list(range(n))
    if n == 6:  # a full grid runs every pair once
        assert len({(r.task, r.embodiment) for r in robots}) == 6


def test_rotating_robots_keep_their_arm_and_work_through_every_task_it_can_do() -> None:
    robots = FleetConfig(n=4, rotate_tasks=True).robots()
    assert len({(r.task, r.embodiment) for r in robots}) == 4  # 4 of the 6 pairs at any one time ...
    assert {(t, r.embodiment) for r in robots for t in r.task_rotation} == {
        (t, e) for t in ("pick", "push", "place") for e in ("panda", "kuka")
    }  # ... all 6 over the episodes
    assert all(r.task in r.task_rotation and len(r.task_rotation) == 3 for r in robots)
    assert all(r.task_rotation == () for r in FleetConfig(n=4).robots())


def test_a_replaced_robot_reports_every_incarnation_once() -> None:
    from actors.sim_fleet import _Slot

    robot = FleetConfig(n=1).robots()[0]
    slot = _Slot(robot, actor=None, run=None)
    first = {"robot_id": "sim-0", "episodes": 3, "successes": 2, "interventions": 5, "recent": [1, 2, 3], "swaps": []}
    slot.status = first
    assert slot.report() == {**first, "restarts": 0}
    slot.earlier.append(first)  # the process died after that report
    slot.status = None
    assert slot.report()["episodes"] == 3 and slot.report()["restarts"] == 1  # not counted twice while it restarts
    slot.status = {"robot_id": "sim-0", "episodes": 1, "successes": 1, "interventions": 0, "recent": [4], "swaps": []}
    report = slot.report()
    assert (report["episodes"], report["successes"], report["interventions"]) == (4, 3, 5)
    assert report["recent"] == [1, 2, 3, 4] and report["restarts"] == 1
    slot.earlier.append(slot.status)  # died again, and was given up on: what it did still counts
    slot.status, slot.done = None, {"robot_id": "sim-0", "state": "lost"}
    assert slot.report()["episodes"] == 4 and slot.report()["state"] == "lost" and slot.report()["restarts"] == 2
