"""Helpers for tests against the real broker: the dashboard served by uvicorn, a fake robot, Chromium.

The fake robot is what the online-loop runtime does for commands, reduced to the protocol: it
consumes `fleet.commands` for its id and acknowledges each command in its next heartbeat.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from kafka import KafkaConsumer

from fleet.schemas import Command, Heartbeat, LoopStats, decode
from fleet.stack.process import free_port
from fleet.transport import COMMANDS, KafkaTransport, TransportConfig, assign_at_end, ensure_topics, publish

PASSWORD = "correct horse battery"  # every test user's (tests/dashboards/conftest.py creates them)
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def login(browser: Any, server: LiveServer, role: str) -> Any:
    """A new page logged in as the user named after `role`, on the fleet page."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{server.url}/login?next=/fleet")
    page.fill("input[name=username]", role)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/fleet")
    return page


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


class LiveServer:
    """The app on a real port (uvicorn in a thread)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start in 30 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class FakeRobot:
    """Sends heartbeats at `hz`; applies pause/resume/stop/out_of_rotation from fleet.commands at once."""

    STATES = {"pause": "paused", "resume": "running", "stop": "stopped", "out_of_rotation": "out_of_rotation"}

    def __init__(self, config: TransportConfig, robot_id: str, *, version: str = "3", hz: float = 5.0) -> None:
        self.config, self.robot_id, self.version, self.hz = config, robot_id, version, hz
        self.state = "running"
        self.task_id = "pick"
        self.applied: str | None = None
        self.received: list[Command] = []
        self._stop = threading.Event()
        ensure_topics(config)
        self.transport = KafkaTransport(config)
        self.consumer = KafkaConsumer(bootstrap_servers=config.bootstrap.split(","), group_id=None)
        assign_at_end(self.consumer, COMMANDS)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeRobot:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(10)
        self.consumer.close()
        self.transport.close()

    def _run(self) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
            for records in self.consumer.poll(timeout_ms=50).values():
                for record in records:
                    if record.key != self.robot_id.encode():
                        continue
                    command = decode(record.value, Command)
                    assert isinstance(command, Command)
                    self.received.append(command)
                    self.state = self.STATES.get(command.action, self.state)
                    self.task_id = command.task_id or self.task_id
                    self.applied = command.command_id
                    next_beat = 0.0  # acknowledge in the next heartbeat, right away
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + 1 / self.hz
                loop = LoopStats(control_hz=10, ticks=2, missed_ticks=0, tick_ms_p50=2, tick_ms_p99=4, tick_ms_max=5)
                publish(
                    self.transport,
                    Heartbeat(
                        robot_id=self.robot_id,
                        embodiment="panda",
                        state=self.state,  # type: ignore[arg-type]
                        model_version=self.version,
                        task_id=self.task_id,
                        sent_at=time.time(),
                        loop=loop,
                        applied_command_id=self.applied,
                    ),
                )
