"""A real robot's process streams through `fleet.client` alone: no torch, MLflow, database or Ray imported, and what
it sends is what the recorder and the learner make episodes of."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fleet.client import RobotClient
from fleet.episodes import episode_from_segments
from fleet.schemas import Command, Correction, Heartbeat, TrajectorySegment
from fleet.settings import Settings
from fleet.transport import (
    COMMANDS,
    CORRECTIONS,
    HEARTBEATS,
    TRAJECTORIES,
    KafkaTransport,
    TransportConfig,
    ensure_topics,
    publish,
)
from tests.data import client_robot
from tests.envs import client_python
from tests.faults.helpers import group_stable, read_from, topic_ends, wait_for

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mlflow", "sqlalchemy", "ray", "actors", "learner", "dashboards")


def test_the_client_imports_none_of_the_servers_dependencies() -> None:
    code = f"import sys, fleet.client; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "[]", loaded.stdout


def _check_received(kafka_bootstrap: str, start: dict, robot: str, sent: list[str]) -> None:
    """What the recorder and the learner would read of `robot`'s two client_robot episodes is what it sent."""
    mine = read_from(kafka_bootstrap, start, robot)
    for episode_id in sent:
        segments = sorted((m for m in mine if isinstance(m, TrajectorySegment) and m.episode_id == episode_id),
                          key=lambda s: s.segment_index)  # fmt: skip
        episode = episode_from_segments(segments)
        assert (episode.meta.length, episode.meta.interventions, episode.meta.model_version) == (
            client_robot.STEPS, len(client_robot.HUMAN), client_robot.VERSION)  # fmt: skip
        np.testing.assert_array_equal(episode.proprio[:, 0], np.arange(client_robot.STEPS))
        [correction] = [m for m in mine if isinstance(m, Correction) and m.episode_id == episode_id]
        assert (correction.step_start, len(correction.actions)) == (client_robot.HUMAN.start, len(client_robot.HUMAN))
    beats = [m for m in mine if isinstance(m, Heartbeat)]
    assert [b.episode_id for b in beats] == sent and {b.model_version for b in beats} == {client_robot.VERSION}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_robot_streams_two_episodes_and_heartbeats_through_the_client(stack: Settings, kafka_bootstrap: str,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    robot = f"arm-{uuid.uuid4().hex[:6]}"
    ensure_topics(TransportConfig.from_settings(stack))  # a fresh stack has none until a producer connects
    start = topic_ends(kafka_bootstrap, [TRAJECTORIES, CORRECTIONS, HEARTBEATS])
    client = RobotClient.from_settings(robot, "panda", stack.model_copy(update={"home": tmp_path}), segment_steps=10)
    sent = client_robot.run(client)
    assert client.transport.flush(timeout_s=30)
    client.close()
    _check_received(kafka_bootstrap, start, robot, sent)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_robot_on_kafka_hears_its_own_commands_through_the_client(stack: Settings, tmp_path: Path) -> None:
    robot = f"arm-{uuid.uuid4().hex[:6]}"
    ensure_topics(TransportConfig.from_settings(stack))  # as `fleet up` leaves them: a group starts at their end
    client = RobotClient.from_settings(robot, "panda", stack.model_copy(update={"home": tmp_path}))
    heard: list[Command] = []
    listener = client.listen(heard.append)
    operator = KafkaTransport(TransportConfig.from_settings(stack, client_id="test-operator"))
    try:

        def command(robot_id: str, action: str) -> Command:
            return Command(command_id=uuid.uuid4().hex, robot_id=robot_id, action=action, issued_by="op",  # type: ignore[arg-type]
                           created_at=time.time())  # fmt: skip

        wait_for(lambda: group_stable(stack.bootstrap_servers, f"robot-{robot}"), 60, "the listener to join")
        for sent in (command("someone-else", "stop"), command(robot, "pause"), command(robot, "resume")):
            publish(operator, sent)
        operator.send(COMMANDS, b"\xc1 not msgpack", key=robot)  # logged and skipped, the listener goes on
        publish(operator, command(robot, "stop"))
        assert operator.flush(timeout_s=30)
        wait_for(lambda: len(heard) >= 3, 30, "the robot's three commands")
        time.sleep(1.0)  # nothing else arrives
        assert [c.action for c in heard] == ["pause", "resume", "stop"] and {c.robot_id for c in heard} == {robot}
    finally:
        listener.stop()
        operator.close()
        client.close()


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_fleet_client_installs_without_torch_and_a_robot_streams_through_it(stack: Settings, kafka_bootstrap: str,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    """`pip install "fleet[client]"` into an empty environment brings no torch, MLflow, database or Ray, and a robot
    process running from that install alone streams its episodes to the fleet."""
    python = client_python(tmp_path / "src")
    for heavy in ("torch", "mlflow", "sqlalchemy", "ray", "typer"):
        probe = subprocess.run([python, "-c", f"import {heavy}"], capture_output=True, text=True)
        assert probe.returncode != 0, f"{heavy} is installed with fleet[client]"
    command = subprocess.run([str(Path(python).parent / "fleet"), "--help"], capture_output=True, text=True)
    assert command.returncode != 0 and "fleet[server]" in command.stderr  # says what to install, no traceback
    robot = f"arm-{uuid.uuid4().hex[:6]}"
    ensure_topics(TransportConfig.from_settings(stack))
    start = topic_ends(kafka_bootstrap, [TRAJECTORIES, CORRECTIONS, HEARTBEATS])
    script = tmp_path / "robot.py"  # outside the repository: `fleet` comes from the install, not the checkout
    shutil.copy(Path(client_robot.__file__), script)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "FLEET_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "FLEET_HOME": str(tmp_path / "home")}  # fmt: skip
    ran = subprocess.run([python, str(script), robot], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    _check_received(kafka_bootstrap, start, robot, ran.stdout.split())
