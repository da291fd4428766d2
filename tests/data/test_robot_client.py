"""A real robot's process streams through `fleet.client` alone: no torch, MLflow, database or Ray imported, and what
it sends is what the recorder and the learner make episodes of."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from fleet.client import RobotClient
from fleet.episodes import episode_from_segments
from fleet.schemas import Correction, Heartbeat, LoopStats, TrajectorySegment
from fleet.settings import Settings
from fleet.transport import CORRECTIONS, HEARTBEATS, TRAJECTORIES, TransportConfig, ensure_topics
from tests.faults.helpers import read_from, topic_ends
from tests.faults.robots import TinyEnv

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mlflow", "sqlalchemy", "ray", "actors", "learner", "dashboards")


def test_the_client_imports_none_of_the_servers_dependencies() -> None:
    code = f"import sys, fleet.client; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "[]", loaded.stdout


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_robot_streams_two_episodes_and_heartbeats_through_the_client(stack: Settings, kafka_bootstrap: str,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    robot = f"arm-{uuid.uuid4().hex[:6]}"
    ensure_topics(TransportConfig.from_settings(stack))  # a fresh stack has none until a producer connects
    start = topic_ends(kafka_bootstrap, [TRAJECTORIES, CORRECTIONS, HEARTBEATS])
    client = RobotClient.from_settings(robot, "panda", stack.model_copy(update={"home": tmp_path}), segment_steps=10)
    env = TinyEnv(steps=25)
    loop = LoopStats(control_hz=10, ticks=25, missed_ticks=0, tick_ms_p50=1, tick_ms_p99=2, tick_ms_max=3)
    sent = []
    for k in range(2):
        episode = client.episode("pick", "pick up the red cube")
        sent.append(episode.episode_id)
        obs, _ = env.reset(seed=k)
        done = False
        while not done:
            human = 5 <= env.t < 8  # the operator drives three steps
            action = np.full(4, 0.1 if human else 0.0, np.float32)
            episode.act(obs["images"], obs["proprio"], action, version="7", human=human)
            obs, reward, done, _, info = env.step(action)
            episode.result(reward, done=done, success=info["success"])
        episode.finish("7", success=True)
        client.heartbeat("running", "7", loop=loop)
    assert client.transport.flush(timeout_s=30)
    client.close()

    mine = read_from(kafka_bootstrap, start, robot)
    for episode_id in sent:
        segments = sorted((m for m in mine if isinstance(m, TrajectorySegment) and m.episode_id == episode_id),
                          key=lambda s: s.segment_index)  # fmt: skip
        episode = episode_from_segments(segments)
        assert (episode.meta.length, episode.meta.interventions, episode.meta.model_version) == (25, 3, "7")
        np.testing.assert_array_equal(episode.proprio[:, 0], np.arange(25))
        [correction] = [m for m in mine if isinstance(m, Correction) and m.episode_id == episode_id]
        assert (correction.step_start, len(correction.actions)) == (5, 3)
    beats = [m for m in mine if isinstance(m, Heartbeat)]
    assert [b.episode_id for b in beats] == sent and {b.model_version for b in beats} == {"7"}
