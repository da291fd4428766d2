"""The robot side of the loop on real services: Ray robot actors, Kafka, the MLflow registry.

A version published and promoted reaches every robot; a NaN checkpoint promoted by mistake is
refused by every robot (they keep acting on the good one); a rollback pins and every robot converges.
"""

from __future__ import annotations

import math
import time
import uuid

import pytest
import torch

from actors.sim_fleet import FleetConfig, start_fleet
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from fleet.registry import Registry, announce, publish_model
from fleet.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _model(seed: int, *, nan: bool = False) -> VLAModel:
    torch.manual_seed(seed)
    model = VLAModel(debug_model_config())
    if nan:
        with torch.no_grad():
            next(model.parameters()).fill_(math.nan)
    return model


def _wait(actors: list, predicate, timeout_s: float) -> tuple[float, list[dict]]:  # noqa: ANN001
    import ray

    start = time.monotonic()
    while True:
        statuses = ray.get([a.status.remote() for a in actors])
        if predicate(statuses):
            return time.monotonic() - start, statuses
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"robots did not converge in {timeout_s} s: {statuses}")
        time.sleep(0.2)


def test_publish_refuse_and_rollback_reach_every_robot(stack: Settings) -> None:
    import ray

    settings = stack.model_copy(update={"model_name": f"vla-loop-{uuid.uuid4().hex[:6]}"})
    registry = Registry(settings)
    v1 = publish_model(registry, _model(1), parent_version=None)
    registry.promote(v1.version, actor="test", role="admin", reason="seed")

    config = FleetConfig(n=2, tasks=("pick",), embodiments=("panda", "kuka"), duration_s=300, poll_interval_s=600)
    actors = start_fleet(settings, config)
    runs = [a.run.remote(None, 300) for a in actors]
    try:
        _wait(actors, lambda ss: all(s["version"] == v1.version and s["episodes"] >= 1 for s in ss), 120)

        v2 = publish_model(registry, _model(2), parent_version=v1.version)
        promoted_at = time.time()
        registry.promote(v2.version, actor="test", role="admin", reason="better")
        announce(settings, v2, event="promoted", alias="production", actor="test", reason="better")
        # The alias poll comes every 600 s: a robot that converges within these 120 s heard the event (a loaded
        # 2-core machine can take 20 s to download, verify, load and warm up even the small model)
        _wait(actors, lambda ss: all(s["version"] == v2.version for s in ss), 120)
        swapped = ray.get([a.swapped.remote(v2.version, promoted_at) for a in actors])  # each robot's own timestamp
        assert all(promoted_at <= t <= time.time() for t in swapped)
        assert ray.get(actors[0].swapped.remote(v2.version, time.time() + 1)) is None

        bad = publish_model(registry, _model(3, nan=True), parent_version=v2.version)
        registry.promote(bad.version, actor="test", role="admin", reason="mistake")
        announce(settings, bad, event="promoted", alias="production", actor="test", reason="mistake")
        _, statuses = _wait(actors, lambda ss: all(bad.version in s["refused"] for s in ss), 120)
        assert all(s["version"] == v2.version for s in statuses)  # kept acting on the good version
        assert all("CheckpointError" in s["refused"][bad.version] for s in statuses)

        back = registry.rollback(v1.version, actor="test", role="admin", reason="regression")
        announce(settings, back, event="rolled_back", alias="production", actor="test", reason="regression")
        _wait(actors, lambda ss: all(s["version"] == v1.version for s in ss), 120)
        assert registry.is_pinned()
    finally:
        for a in actors:
            a.stop.remote()
        results = ray.get(runs, timeout=60)
        ray.get([a.close.remote() for a in actors], timeout=60)
        for a in actors:
            ray.kill(a)
    assert all(r["episodes"] >= 1 for r in results)
    assert all(r["state"] == "stopped" for r in results)


def test_a_killed_robot_is_replaced_and_the_rest_of_the_fleet_keeps_acting(stack: Settings) -> None:
    """kill -9 of one robot's Ray worker: `run_fleet` replaces that robot for its remaining episodes and returns
    normally; the other robot never stops."""
    import os
    import signal

    import ray

    from actors.sim_fleet import run_fleet

    settings = stack.model_copy(update={"model_name": f"vla-kill-{uuid.uuid4().hex[:6]}"})
    registry = Registry(settings)
    v1 = publish_model(registry, _model(1), parent_version=None)
    registry.promote(v1.version, actor="test", role="admin", reason="seed")
    prefix = f"kill{uuid.uuid4().hex[:4]}"
    config = FleetConfig(n=2, tasks=("pick",), embodiments=("panda", "kuka"), episodes=12, duration_s=None,
                         poll_interval_s=600, robot_prefix=prefix)  # fmt: skip
    killed: dict[str, int] = {}

    def progress(reports: list[dict]) -> None:
        if not killed and all(r.get("episodes", 0) >= 1 for r in reports):
            victim = ray.get_actor(f"{prefix}-0")
            killed["pid"] = ray.get(victim.pid.remote())
            killed["episodes"] = reports[0]["episodes"]
            killed["other"] = reports[1]["episodes"]
            os.kill(killed["pid"], signal.SIGKILL)

    results = run_fleet(settings, config, on_progress=progress)
    assert killed, "the robots never reported an episode"
    victim, other = results
    assert victim["restarts"] == 1 and victim["episodes"] == 12 and victim["state"] != "lost"
    assert killed["episodes"] < 12  # it died with episodes to go; its replacement did them
    assert other["restarts"] == 0 and other["episodes"] == 12 and other["state"] == "stopped"
