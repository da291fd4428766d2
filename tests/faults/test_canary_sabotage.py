"""A sabotaged version on canary: the fleet rolls it back by itself, and its robots return to production at once.

Version 2 is version 1 with noise on its action head: it loads, its signature verifies, and it acts worse. Four
robots built by `actors.robot.build_robot` (Kafka transport, hot reloader following production and the canary
for its cohort) run `JudgedEnv`, whose episodes fail when the commands exceed a speed limit; the recorder
(`fleet record`, a child process) writes their episodes to the fleet DB; the canary controller (what the
dashboard runs every `canary_interval_s`) reads them, and nothing else decides. Half the fleet goes on canary.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy import select

from actors.robot import RobotHandle, build_robot
from actors.runtime import RobotConfig
from fleet.canary import CanaryPolicy, Cohort
from fleet.db import AuditEntry
from fleet.policy import VLAPolicy
from fleet.policy.checkpoint import save_checkpoint
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from fleet.registry import PRODUCTION, Registry, announce, publish_model
from fleet.rollout import CanaryController
from fleet.settings import Settings
from fleet.stack.launcher import migrate_database
from fleet.transport import TRAJECTORIES
from tests.faults.helpers import ChildService, group_stable, start_group_at_end, wait_for
from tests.faults.robots import TinyEnv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ROBOTS, STEPS, HZ = 4, 10, 20.0  # 0.5 s episodes


class JudgedEnv(TinyEnv):
    """`TinyEnv` whose episode succeeds only if the mean commanded speed stayed under `limit` (a safety stop
    fails it otherwise): a policy that flails fails."""

    def __init__(self, limit: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit, self.speeds = limit, [0.0]

    def reset(self, seed: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        self.speeds = []
        return super().reset(seed)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        self.speeds.append(float(np.abs(action).mean()))
        obs, reward, done, truncated, info = super().step(action)
        return obs, reward, done, truncated, {**info, "success": done and float(np.mean(self.speeds)) < self.limit}


def _sabotaged(model: VLAModel, scale: float) -> VLAModel:
    """`model` with Gaussian noise of `scale` times each action-head tensor's spread: it loads and acts, badly."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.startswith("action_head.") and tensor.numel() > 1:
                tensor.add_(torch.randn(tensor.shape, generator=generator) * tensor.std() * scale)
    return model


def _episode_speeds(model: VLAModel, directory: Path, episodes: int = 20) -> np.ndarray:
    """Mean commanded speed of each of `episodes` `TinyEnv` episodes `model` acts in (two actions a chunk, as
    robots re-plan)."""
    save_checkpoint(model, directory)
    policy = VLAPolicy.from_checkpoint(directory, num_threads=1)
    env, out = TinyEnv(steps=STEPS, image_size=64), []
    for _ in range(episodes):
        (obs, _), speeds, done = env.reset(), [], False
        while not done:
            for action in policy.infer(obs)[:2]:
                speeds.append(float(np.abs(action).mean()))
                obs, _, done, _, _ = env.step(action)
                if done:
                    break
        out.append(np.mean(speeds))
    return np.array(out)


def test_a_sabotaged_canary_is_rolled_back_by_the_fleet_itself(
    stack: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"cs{uuid.uuid4().hex[:6]}"
    settings = stack.model_copy(
        update={"model_name": f"vla-{prefix}", "database_url": f"sqlite:///{tmp_path / 'fleet.db'}"}
    )
    migrate_database(settings)
    registry = Registry(settings)
    torch.manual_seed(0)
    good = VLAModel(debug_model_config())
    bad = VLAModel(debug_model_config())
    bad.load_state_dict(good.state_dict())
    bad = _sabotaged(bad, 10.0)
    good_speed, bad_speed = _episode_speeds(good, tmp_path / "good"), _episode_speeds(bad, tmp_path / "bad")
    assert good_speed.max() < bad_speed.min(), (good_speed, bad_speed)  # the sabotage shows in the commands
    limit = (good_speed.max() + bad_speed.min()) / 2  # version 1's episodes keep under it, version 2's do not
    v1 = publish_model(registry, good, parent_version=None)
    registry.promote(v1.version, actor="test", role="admin", reason="seed")
    v2 = publish_model(registry, bad, parent_version=v1.version)
    registry.verify(v2)  # signed by the learner's key, like any version: the robots will load it

    group = f"recorder-{prefix}"
    start_group_at_end(kafka_bootstrap, group, [TRAJECTORIES])
    recorder = ChildService(
        ["fleet.recorder_cli", "--group", group],
        env={"FLEET_HOME": str(tmp_path / "recorder"), "FLEET_DATABASE_URL": settings.db_url,
             "FLEET_METRICS_PORT_RECORDER": "0"},
        log_path=tmp_path / "recorder.log",
    )  # fmt: skip
    robot_ids = [f"{prefix}-r{i}" for i in range(ROBOTS)]
    robots: list[RobotHandle] = []
    threads: list[threading.Thread] = []
    stop = threading.Event()
    controller = CanaryController(
        registry,
        registry.sessions,  # type: ignore[arg-type]
        CanaryPolicy(min_episodes=20),
        announce=lambda info, event, alias, reason: announce(
            settings, info, event=event, alias=alias, actor="canary-controller", reason=reason
        ),
    )
    try:
        recorder.start()
        wait_for(lambda: group_stable(kafka_bootstrap, group), 60, "the recorder to join its group")
        for rid in robot_ids:
            config = RobotConfig(robot_id=rid, embodiment="panda", task="pick", control_hz=HZ, realtime=True)
            env = JudgedEnv(limit, steps=STEPS, image_size=64)
            robots.append(build_robot(settings, config, env=env, supervision="off", poll_interval_s=1.0))
        threads = [threading.Thread(target=r.runtime.run, kwargs={"stop": stop}) for r in robots]
        for t in threads:
            t.start()
        cohort = Cohort.for_fleet(v2.version, fraction=0.5, known=robot_ids)
        on_canary = [r for r in robots if cohort.includes(r.runtime.config.robot_id)]
        assert len(on_canary) == ROBOTS // 2
        started = time.time()
        registry.start_canary(v2.version, cohort, actor="alice", role="operator", reason="try the new version")
        controller.start(interval_s=1.0)
        wait_for(lambda: all(r.runtime.version == v2.version for r in on_canary), 60, "the cohort on the canary")
        wait_for(lambda: registry.canary() is None, 120, "the controller to decide")
        decided = time.time()
        wait_for(lambda: all(r.runtime.version == v1.version for r in robots), 30, "every robot on production")
        back = max(r.runtime.swaps[-1][1] for r in on_canary)
        errors = [r.runtime.error for r in robots if r.runtime.error is not None]
    finally:
        controller.stop()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for r in robots:
            r.close()
        recorder.stop()

    with registry.sessions() as session:  # type: ignore[misc]
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "canary_rollback")).one()
    success = next(c for c in audit.details["comparisons"] if c["metric"] == "autonomous_success")
    outcome = {
        "decide_s": round(decided - started, 1),
        "rollback_converge_s": round(back - decided, 2),
        "canary_episodes": success["canary_n"],
        "production_episodes": success["production_n"],
        "success_difference_ci": [round(success["lo"], 3), round(success["hi"], 3)],
    }
    print("OUTCOME", outcome)
    assert audit.actor == "canary-controller" and "regression" in (audit.reason or ""), audit.reason
    assert success["hi"] < 0  # worse with the policy's confidence, on the fleet's own episodes
    assert registry.aliases()[PRODUCTION] == v1.version and registry.canary() is None
    assert all([v for v, _ in r.runtime.swaps] == [v2.version, v1.version] for r in on_canary)
    assert all(r.runtime.swaps == [] for r in robots if r not in on_canary)  # the rest never left production
    assert errors == []
