"""The canary controller against the real MLflow server and a migrated DB: episodes the recorder wrote decide the
rollout, the decision is audited with its numbers, and the CLI shows and ends it."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from fleet.canary import CANARY, CanaryPolicy, Cohort
from fleet.db import AuditEntry, Episode, Robot
from fleet.registry import PRODUCTION, Registry, VersionInfo
from fleet.settings import Settings
from fleet.stack.launcher import migrate_database
from tests.registry.conftest import publish_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture()
def registry(stack: Settings, db_url: str) -> Registry:
    """A fresh registered model on the shared MLflow server, with the fleet DB on each database fleet supports:
    the controller's time-window query runs on both."""
    settings = stack.model_copy(update={"model_name": f"vla-test-{uuid.uuid4().hex[:8]}", "database_url": db_url})
    migrate_database(settings)
    return Registry(settings)


def _record(registry: Registry, rng: random.Random, version: str, n: int, p: float, *, task: str = "pick",
            ago_s: float = 0.0) -> None:  # fmt: skip
    """`n` finished fleet episodes of `version` as the recorder writes them: success with probability `p`, a failure
    taken over by the supervisor for 8 steps."""
    with registry.sessions.begin() as session:  # type: ignore[union-attr]
        for _ in range(n):
            robot = f"robot-{rng.randrange(8)}"
            if session.get(Robot, robot) is None:
                session.add(Robot(id=robot, embodiment="panda", task=task, state="running"))
                session.flush()
            success = rng.random() < p
            ended = datetime.now(UTC) - timedelta(seconds=ago_s)
            session.add(Episode(
                robot_id=robot, episode_id=uuid.uuid4().hex, embodiment="panda", task=task, instruction="pick it",
                model_version=version, length=30, success=success, interventions=0 if success else 8,
                started_at=ended - timedelta(seconds=3), ended_at=ended,
            ))  # fmt: skip


def _two_versions_on_canary(registry: Registry, tmp_path: Path) -> tuple[VersionInfo, VersionInfo]:
    v1 = publish_bytes(registry, tmp_path, b"one", None)
    registry.promote(v1.version, actor="learner", role="service", reason="first")
    v2 = publish_bytes(registry, tmp_path, b"two", v1.version)
    cohort = Cohort.for_fleet(v2.version, fraction=0.25, known=[f"robot-{i}" for i in range(8)])
    registry.start_canary(v2.version, cohort, actor="alice", role="operator", reason="try")
    return v1, v2


def test_a_worse_canary_is_rolled_back_by_itself_with_the_numbers_in_the_audit(
    registry: Registry, tmp_path: Path
) -> None:
    from fleet.rollout import CanaryController

    v1, v2 = _two_versions_on_canary(registry, tmp_path)
    rng = random.Random(0)
    _record(registry, rng, v1.version, 300, 0.7, ago_s=3600)  # before the rollout: not in its window
    announced: list[tuple[str, str, str | None]] = []
    controller = CanaryController(
        registry, registry.sessions, CanaryPolicy(min_episodes=20),  # type: ignore[arg-type]
        announce=lambda info, event, alias, reason: announced.append((info.version, event, alias)),
    )  # fmt: skip
    _record(registry, rng, v2.version, 10, 0.3)
    _record(registry, rng, v1.version, 30, 0.8)
    status = controller.step()
    assert status is not None and status.decision.action == "continue" and "10 canary" in status.decision.reason
    assert status.comparisons[0].production_n == 30  # the episodes before the rollout are not compared
    _record(registry, rng, v2.version, 50, 0.3)
    _record(registry, rng, v1.version, 150, 0.8)
    _record(registry, rng, v2.version, 40, 0.9, task="push")  # a task production never ran here: left out
    status = controller.step()
    assert status is not None and status.decision.action == "rollback", status.decision
    assert status.tasks == ("pick/panda",)  # push ran on the canary only: not compared
    assert registry.canary() is None and registry.aliases()[PRODUCTION] == v1.version
    assert announced == [(v2.version, "canary_ended", CANARY)]
    with registry.sessions() as session:  # type: ignore[misc]
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "canary_rollback")).one()
    assert audit.actor == "canary-controller" and "regression" in (audit.reason or "")
    success = next(c for c in audit.details["comparisons"] if c["metric"] == "autonomous_success")
    assert success["canary_n"] == 60 and success["hi"] < 0
    assert controller.step() is None  # nothing running any more


def test_the_cli_shows_the_live_ab_and_an_operator_ends_it(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleet.cli import app

    v1, v2 = _two_versions_on_canary(registry, tmp_path)
    rng = random.Random(1)
    _record(registry, rng, v2.version, 40, 0.95)
    _record(registry, rng, v1.version, 120, 0.5)
    # the stack's FLEET_* variables are exported for the session; this test's fleet has its own model and DB
    monkeypatch.setenv("FLEET_MODEL_NAME", registry.name)
    monkeypatch.setenv("FLEET_DATABASE_URL", registry.settings.database_url)
    runner = CliRunner()
    shown = runner.invoke(app, ["models", "canary", "status"])
    assert shown.exit_code == 0, shown.output
    assert f"canary v{v2.version} against production v{v1.version}" in shown.output
    assert "decision: promote" in shown.output and "autonomous_success" in shown.output
    ended = runner.invoke(app, ["models", "canary", "rollback", "--reason", "operator says no"])
    assert ended.exit_code == 0, ended.output
    assert registry.canary() is None
    again = runner.invoke(app, ["models", "canary", "rollback", "--reason", "twice"])
    assert again.exit_code == 1 and "no canary is running" in again.output
