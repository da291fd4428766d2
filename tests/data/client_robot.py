"""A robot process that knows only `fleet.client` and numpy: two episodes of a synthetic arm streamed to the fleet.

Run as a script (`python client_robot.py ROBOT_ID`, settings from FLEET_* variables) in an environment where only
`fleet[client]` is installed, or called in-process (`run`). It imports nothing from the test suite, so the copy of
fleet it exercises is the one its interpreter has installed.
"""

from __future__ import annotations

import sys

import numpy as np

from fleet.client import RobotClient
from fleet.embodiments import get_embodiment
from fleet.schemas import LoopStats

STEPS = 25  # per episode
HUMAN = range(5, 8)  # the operator drives these steps
VERSION = "7"


def run(client: RobotClient, episodes: int = 2) -> list[str]:
    """Stream `episodes` episodes (step t's image and proprio hold t) and a heartbeat after each; their ids."""
    loop = LoopStats(control_hz=10, ticks=STEPS, missed_ticks=0, tick_ms_p50=1, tick_ms_p99=2, tick_ms_max=3)
    sent = []
    for _ in range(episodes):
        episode = client.episode("pick", "pick up the red cube")
        sent.append(episode.episode_id)
        for t in range(STEPS):
            human = t in HUMAN
            image = np.full((16, 16, 3), t, dtype=np.uint8)
            proprio = np.full(get_embodiment("panda").proprio_dim, t, dtype=np.float32)
            episode.act({"front": image}, proprio, np.full(4, 0.1 if human else 0.0, np.float32),
                        version=VERSION, human=human)  # fmt: skip
            done = t == STEPS - 1
            episode.result(0.0, done=done, success=done)
        episode.finish(VERSION, success=True)
        client.heartbeat("running", VERSION, loop=loop)
    return sent


def main(robot_id: str) -> None:
    client = RobotClient.from_settings(robot_id, "panda")
    sent = run(client)
    delivered = client.transport.flush(timeout_s=30)
    client.close()
    print(" ".join(sent))
    heavy = sorted(m for m in ("torch", "mlflow", "sqlalchemy", "ray") if m in sys.modules)
    sys.exit(0 if delivered and not heavy else 1)


if __name__ == "__main__":
    main(sys.argv[1])
