"""The demo's table, read off the fleet's streams: every version that ran and every episode, each counted for the
version that acted most of it (the episode store's rule), and which version each robot runs now."""

from __future__ import annotations

import numpy as np

from fleet.demo import FleetWatch
from fleet.episodes import episode_from_segments
from fleet.schemas import TrajectorySegment
from fleet.settings import Settings
from tests.dashboards.factories import heartbeat
from tests.data.factories import make_segment


def _episode(
    robot: str, episode: str, versions: list[str], *, success: bool, corrected: int
) -> list[TrajectorySegment]:
    """An episode of one segment per entry of `versions` (the version acting it), `corrected` steps by a human."""
    segments = []
    for i, version in enumerate(versions):
        seg = make_segment(robot, episode, i, segments_per_episode=len(versions), model_version=version)
        mask = np.zeros(seg.length, bool)
        mask[: max(0, min(seg.length, corrected - i * seg.length))] = True
        segments.append(seg.model_copy(update={"intervention": mask, "success": success, "created_at": 100.0 + i}))
    return segments


def test_the_table_counts_every_episode_for_the_version_the_store_counts_it_for() -> None:
    watch = FleetWatch(Settings())
    episodes = [
        _episode("sim-0", "e1", ["1", "1"], success=False, corrected=13),
        _episode("sim-1", "e2", ["1"], success=True, corrected=0),
        _episode("sim-0", "e3", ["1", "2", "2"], success=True, corrected=0),  # hot-reloaded mid-episode
        _episode("sim-1", "e4", ["2", "2"], success=True, corrected=4),
    ]
    for segment in [s for pair in zip(episodes[0], episodes[2], strict=False) for s in pair] + episodes[2][2:]:
        watch.handle(segment)  # two robots' segments interleaved, as they arrive
    for segment in episodes[1] + episodes[3][:1]:
        watch.handle(segment)
    watch.handle(heartbeat("sim-0", version="2"))
    watch.handle(heartbeat("sim-1", version="1"))
    watch.handle(heartbeat("sim-1", version="2"))  # its latest heartbeat counts

    summary = watch.summary()
    assert summary["episodes"] == 3  # e4 has not ended yet
    assert list(summary["versions"]) == ["1", "2"]
    assert summary["versions"]["1"] == {"episodes": 2, "success": 0.5, "autonomous_success": 0.5,
                                        "interventions_per_episode": 13 / 2}  # fmt: skip
    assert summary["versions"]["2"]["episodes"] == 1
    assert episode_from_segments(episodes[2]).meta.model_version == "2"  # the store agrees on e3
    assert summary["rollout"] == {"2": 2}

    watch.handle(episodes[3][1])
    assert watch.summary()["versions"]["2"] == {"episodes": 2, "success": 1.0, "autonomous_success": 0.5,
                                                "interventions_per_episode": 2.0}  # fmt: skip
