"""MLflow down for 30 s in the worst spot: right after the learner registered a version, before any alias.

Two robots built by `actors.robot.build_robot` (Kafka transport, hot reloader on `production`,
`fleet.models` listener; a physics-free env) act on version 1 while the learner (in-process
`LearnerService`, debug preset, starting from production) trains on their stream. The MLflow
server is SIGKILLed the moment the learner's `create_model_version` returns, so version 2 exists
with its artifacts and tags but no alias: half-registered. It comes back 30 s later.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

from actors.robot import RobotHandle, build_robot
from actors.runtime import RobotConfig
from fleet.policy.config import debug_model_config
from fleet.policy.language import default_embedder
from fleet.policy.model import VLAModel
from fleet.registry import CANDIDATE, PRODUCTION, Registry, publish_model
from fleet.settings import Settings
from fleet.stack.mlflow_server import MlflowService
from learner import checkpoints
from learner.config import get_preset
from learner.service import RETRY_BASE_S, RETRY_MAX_S, LearnerService, checkpoints_sha
from learner.service import TOPICS as LEARNER_TOPICS
from tests.faults.helpers import kill_service, restart_stack, start_group_at_end, wait_for
from tests.faults.robots import TinyEnv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
OUTAGE_S = 30.0


class LearnerLoop(threading.Thread):
    """Steps a `LearnerService` until stopped or it has published a version; holding `lock` pauses it."""

    def __init__(self, service: LearnerService) -> None:
        super().__init__(name="learner", daemon=True)
        self.service = service
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set() and not self.service.published:
                with self.lock:
                    self.service.step()
        except BaseException as e:  # surfaced by the test: the learner must never die of the outage
            self.error = e


def test_mlflow_down_30_s_after_registering_a_version_before_its_alias(
    stack: Settings, kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, record_property: Any,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="learner.service")
    torch.set_num_threads(1)
    prefix = f"ml{uuid.uuid4().hex[:6]}"
    settings = stack.model_copy(update={"model_name": f"vla-{prefix}"})
    registry = Registry(settings, sessions=None)
    torch.manual_seed(0)
    v1 = publish_model(registry, VLAModel(debug_model_config()), parent_version=None)
    registry.promote(v1.version, actor="test", role="admin", reason="seed")
    group = f"learner-{prefix}"
    start_group_at_end(kafka_bootstrap, group, LEARNER_TOPICS)

    robots: list[RobotHandle] = []
    threads: list[threading.Thread] = []
    stop_robots = threading.Event()
    mlflow = MlflowService(settings)
    loop: LearnerLoop | None = None
    try:
        for i in range(2):
            config = RobotConfig(robot_id=f"{prefix}-r{i}", embodiment="panda", task="pick", realtime=True)
            env = TinyEnv(steps=40, image_size=64)
            robots.append(build_robot(settings, config, env=env, supervision="off", poll_interval_s=1.0))
        threads = [threading.Thread(target=r.runtime.run, kwargs={"stop": stop_robots}) for r in robots]
        for t in threads:
            t.start()

        config = dataclasses.replace(
            get_preset("debug"), init="production", run_dir=tmp_path / "run", group_id=group, promote=False
        )
        service = LearnerService(config, settings=settings, embedder_factory=default_embedder)
        killed: list[float] = []
        create = service.registry.client.create_model_version

        def create_then_crash(*args: Any, **kwargs: Any) -> Any:
            version = create(*args, **kwargs)
            if not killed:  # registered, tags and artifacts complete; no alias yet
                killed.append(kill_service(mlflow))
            return version

        monkeypatch.setattr(service.registry.client, "create_model_version", create_then_crash)
        loop = LearnerLoop(service)
        loop.start()
        wait_for(lambda: bool(killed) or loop.error is not None, 120, "the learner's first publication")
        assert loop.error is None, repr(loop.error)
        pending = service._unpublished
        assert pending is not None
        sha = checkpoints_sha(pending)
        ckpts_at_kill, updates_at_kill = len(checkpoints.list_checkpoints(service.root)), service.state.updates
        ticks = [r.runtime.ticks_total for r in robots]
        checks = [r.reloader.stats.checks for r in robots]

        # The outage: robots act on v1, the reloaders keep polling, the learner trains and keeps one publication.
        while time.monotonic() - killed[0] < OUTAGE_S:
            assert loop.error is None, repr(loop.error)
            assert [r.runtime.version for r in robots] == [v1.version] * 2
            assert all(r.runtime.error is None and r.runtime.state == "running" for r in robots)
            time.sleep(1.0)
        ticked = [r.runtime.ticks_total - n for r, n in zip(robots, ticks, strict=True)]
        polled = [r.reloader.stats.checks - n for r, n in zip(robots, checks, strict=True)]
        assert min(ticked) > 200, f"robots stalled: {ticked} ticks in {OUTAGE_S} s at 10 Hz"
        assert min(polled) > 0, "a reloader stopped polling"
        assert all("MLflow" in (r.reloader.stats.last_error or "") for r in robots)
        assert service._unpublished == pending and service._publish_failures >= 2
        assert len(checkpoints.list_checkpoints(service.root)) == ckpts_at_kill  # queued, not piling up
        updates_during = service.state.updates - updates_at_kill
        assert updates_during > 0, "training stopped during the outage"

        with loop.lock:  # learner paused: look at the registry as MLflow comes back, before any retry
            restarted = time.monotonic()
            restart_stack(settings)
            healthy = time.monotonic()
            half = registry.list_versions()
            assert [v.version for v in half] == [v1.version, str(int(v1.version) + 1)]
            assert half[1].aliases == () and registry.aliases() == {CANDIDATE: v1.version, PRODUCTION: v1.version}
            assert half[1].sha256 and half[1].tags["data_offsets"] and half[1].parent_version == v1.version
            assert [r.runtime.version for r in robots] == [v1.version] * 2  # never served: no alias points at it
        loop.join(timeout=120)  # it ends once the queued publication went through
        published = time.monotonic()
        assert loop.error is None and service._unpublished is None, repr(loop.error)

        versions = registry.list_versions()
        v2 = versions[1]
        assert [v.version for v in versions] == [v1.version, v2.version], "a version was registered twice"
        assert [v.sha256 for v in versions].count(sha) == 1 and v2.sha256 == sha
        assert [p.version for p in service.published] == [v2.version]
        assert registry.aliases() == {CANDIDATE: v2.version, PRODUCTION: v1.version}
        assert v2.tags["gate_passed"] == "false" and "eval/mean" in v2.tags
        assert any(f"version {v2.version} already holds sha256" in r.getMessage() for r in caplog.records)
        failures = [r.getMessage() for r in caplog.records if "publishing update_" in r.getMessage()]
        delays = [float(m) for m in re.findall(r"retrying in (\d+) s", " ".join(failures))]
        assert len(delays) >= 3 and delays == [min(RETRY_BASE_S * 2**n, RETRY_MAX_S) for n in range(len(delays))]

        # An operator promotes v2: every robot verifies and swaps to it; nothing else was ever loaded.
        registry.promote(v2.version, actor="test", role="operator", reason="outage test")
        wait_for(lambda: all(r.runtime.version == v2.version for r in robots), 60, "robots on v2")
        assert all([v for v, _ in r.runtime.swaps] == [v2.version] for r in robots)
        assert all(r.reloader.stats.refused == {} and r.reloader.stats.loaded == 2 for r in robots)
    finally:
        stop_robots.set()
        if loop is not None:
            loop.stopping.set()
            loop.join(timeout=60)
            loop.service.close()
        for t in threads:
            t.join(timeout=30)
        for r in robots:
            r.close()
        if not mlflow.healthy():
            restart_stack(settings)

    outcome = {
        "outage_s": round(healthy - killed[0], 1),
        "restart_s": round(healthy - restarted, 1),
        "publish_attempts_failed": len(failures),
        "retry_delays_s": delays,
        "published_after_back_s": round(published - healthy, 1),
        "versions": len(versions),
        "robot_ticks_during_outage": ticked,
        "reloader_checks_during_outage": polled,
        "learner_updates_during_outage": updates_during,
    }
    record_property("outcome", outcome)
    print("OUTCOME", outcome)
