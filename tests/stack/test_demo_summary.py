"""The demo's closing table: every version that ran and every episode, not only the robots' latest reports."""

from __future__ import annotations

from fleet.demo import collect, summarize


def _report(robot: str, version: str, episodes: list[tuple[str, bool, int, float]]) -> dict:
    recent = [(v, success, interventions, 50, finished, finished - 5.0, "pick")
              for v, success, interventions, finished in episodes]  # fmt: skip
    return {"robot_id": robot, "version": version, "episodes": len(episodes), "recent": recent}


def test_every_version_and_episode_the_robots_reported_over_the_run_is_in_the_table() -> None:
    events: dict = {}
    early = [_report("sim-0", "1", [("1", False, 3, 10.0), ("1", True, 0, 20.0)]),
             _report("sim-1", "1", [("1", True, 2, 12.0)])]  # fmt: skip
    collect(events, early)
    # later reports hold only their latest episodes: version 1's have scrolled out of sim-0's
    late = [_report("sim-0", "3", [("2", True, 0, 30.0), ("3", True, 0, 40.0)]),
            _report("sim-1", "3", [("1", True, 2, 12.0), ("3", False, 1, 41.0)])]  # fmt: skip
    summary = summarize(late, collect(events, late))
    assert list(summary["versions"]) == ["1", "2", "3"] and summary["episodes"] == 6
    assert summary["versions"]["1"] == {"episodes": 3, "success": 2 / 3, "autonomous_success": 1 / 3,
                                        "interventions_per_episode": 5 / 3}  # fmt: skip
    assert summary["versions"]["3"]["episodes"] == 2 and summary["rollout"] == {"3": 2}
