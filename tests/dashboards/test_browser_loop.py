"""Browser tests that close the loop: a review reaches the learner's replay, a rollback reaches every robot.

Real services only: the broker and MLflow (`stack`), the learner service in-process on its `debug`
preset, the simulated fleet on Ray, the dashboard served by uvicorn with its Kafka consumers, and
Debian's Chromium. Each test keeps its own model name, consumer groups and robot ids, so it reads
nothing another test left on the session's broker as its own.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from actors.sim_fleet import FleetConfig, start_fleet
from dashboards.app import create_app
from dashboards.config import DashboardConfig
from fleet.db import AuditEntry, Correction
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from fleet.registry import PRODUCTION, Registry, publish_model
from fleet.settings import Settings
from fleet.stack.launcher import migrate_database
from fleet.transport import KafkaTransport, TransportConfig, publish
from learner.config import get_preset
from learner.service import LearnerService
from tests.dashboards.conftest import local_settings, make_dash
from tests.dashboards.fakes import FakeRegistry
from tests.dashboards.live import LiveServer, login, shot
from tests.learner.fakes import correction, segments
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder

pytestmark = [pytest.mark.integration]


def _until(what: str, done: Callable[[], bool], timeout_s: float, step: Callable[[], Any] | None = None) -> None:
    """Call `step` (default: a short sleep) until `done()`, failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        (step or (lambda: time.sleep(0.2)))()


def _dashboard_settings(home: Path, template_db: Path, password_hash: str, **update: Any) -> Settings:
    shutil.copy(template_db, home / "fleet.db")
    settings = local_settings(home, f"sqlite:///{home / 'fleet.db'}").model_copy(update=update)
    make_dash(settings, password_hash).services.stop()  # a user per role in the DB
    return settings


@pytest.mark.timeout(240)
def test_reviewer_rejects_a_correction_and_the_learner_drops_it(
    browser: Any,
    stack: Settings,
    kafka_bootstrap: str,
    tmp_path: Path,
    template_db: Path,
    password_hash: str,
) -> None:
    torch.set_num_threads(1)
    suffix = uuid.uuid4().hex[:8]
    robot, episode, cid = f"robot-{suffix}", f"ep-{suffix}", f"c-{suffix}"
    learner_settings = stack.model_copy(update={"model_name": f"vla-review-{suffix}"})
    migrate_database(learner_settings)
    config = dataclasses.replace(
        get_preset("debug"),
        model=debug_model_config(text_encoder=FAKE_ENCODER),
        run_dir=tmp_path / "learner",
        group_id=f"learner-{suffix}",
        checkpoint_every_updates=1_000_000,  # this test is about replay, not publishing
        checkpoint_every_s=3_600.0,
    )
    learner = LearnerService(config, settings=learner_settings, embedder_factory=HashEmbedder)
    dash_settings = _dashboard_settings(tmp_path, template_db, password_hash)
    app = create_app(
        dash_settings,
        config=DashboardConfig(corrections_group=f"dashboard-{suffix}"),
        registry=FakeRegistry.with_versions(1),
        connect=True,
    )
    transport = KafkaTransport(TransportConfig.from_settings(stack, client_id="robot-under-review"))
    try:
        # A robot's episode (steps 2 and 3 driven by a human) and its correction, on the real topics.
        for message in segments(robot, episode, lengths=(5, 5), intervention=(2, 4), success=False):
            publish(transport, message)
        publish(transport, correction(robot, episode, cid, 2, 2))
        assert transport.flush(timeout_s=30.0)

        def steps(source: str) -> list[int]:
            return sorted(
                s.step for s in learner.replay.samples(source) if (s.robot_id, s.episode_id) == (robot, episode)
            )

        _until("the learner's replay to hold the correction", lambda: len(learner.replay.correction_steps(cid)) == 2,
               120, learner.step)  # fmt: skip
        assert steps("online") == list(range(10)) and steps("intervention") == [2, 3]

        with LiveServer(app) as server:
            sessions = app.state.services.sessions

            def queued() -> bool:
                with sessions() as s:
                    return s.get(Correction, cid) is not None

            _until("the dashboard's review queue to hold the correction", queued, 60)
            page = login(browser, server, "reviewer")
            page.goto(f"{server.url}/corrections?robot_id={robot}")
            page.wait_for_selector(f'#correction[data-id="{cid}"] #correction-status.status-pending')
            shot(page, "corrections-before-reject")
            page.keyboard.press("r")  # the reject shortcut
            page.wait_for_selector("#correction-status.status-rejected", timeout=5_000)
            page.close()

        _until("the learner to drop the rejected correction", lambda: not learner.replay.correction_steps(cid),
               60, learner.step)  # fmt: skip
        assert steps("online") == [0, 1, 4, 5, 6, 7, 8, 9]  # exactly the correction's steps left the replay
        assert steps("intervention") == []
        assert all(s.correction_id != cid for src in ("online", "intervention") for s in learner.replay.samples(src))
        with sessions() as s:
            assert s.get(Correction, cid).status == "rejected"  # type: ignore[union-attr]
    finally:
        transport.close()
        learner.close()
        app.state.services.stop()


def _model(seed: int) -> VLAModel:
    torch.manual_seed(seed)
    return VLAModel(debug_model_config())


@pytest.mark.timeout(420)
def test_operator_rolls_back_and_every_robot_reports_the_older_version(
    browser: Any, stack: Settings, tmp_path: Path, template_db: Path, password_hash: str
) -> None:
    import ray

    suffix = uuid.uuid4().hex[:6]
    settings = _dashboard_settings(tmp_path, template_db, password_hash, model_name=f"vla-dash-{suffix}")
    registry = Registry(settings)
    v1 = publish_model(registry, _model(1), parent_version=None, actor="test")
    v2 = publish_model(registry, _model(2), parent_version=v1.version, actor="test")
    registry.promote(v2.version, actor="test", role="admin", reason="v2 is better")

    app = create_app(settings, config=DashboardConfig(corrections_group=f"dashboard-{suffix}"), connect=True)
    fleet = FleetConfig(
        n=2, tasks=("pick",), embodiments=("panda", "kuka"), duration_s=240, poll_interval_s=10,
        robot_prefix=f"dash-{suffix}",
    )  # fmt: skip
    actors = start_fleet(settings, fleet)
    runs = [a.run.remote(None, 240) for a in actors]

    def versions() -> set[str]:
        return {s["version"] for s in ray.get([a.status.remote() for a in actors])}

    try:
        with LiveServer(app) as server:
            _until("robots on v2", lambda: versions() == {v2.version}, 120)
            page = login(browser, server, "operator")
            # converged on v2 with both robots heard from (heartbeats over SSE; one may arrive later)
            page.wait_for_function(
                "v => { const r = document.querySelector('#rollout');"
                " return r && r.querySelector('.badge.ok') && r.textContent.includes(`running v${v}: 2`); }",
                arg=v2.version,
                timeout=30_000,
            )
            assert f"production v{v2.version} · running v{v2.version}: 2" in page.locator("#rollout").inner_text()

            page.goto(f"{server.url}/models")
            page.once("dialog", lambda dialog: dialog.accept("v2 drops cubes"))  # the reason prompt
            page.click(f'tr[data-version="{v1.version}"] button[data-model-action="rollback"]')
            page.wait_for_selector("#pinned.pinned", timeout=15_000)  # the page reloads after the action
            assert page.locator("#production").inner_text() == f"v{v1.version}"
            shot(page, "models-rolled-back")

            _until("every robot to report v1", lambda: versions() == {v1.version}, 90)
            page.goto(f"{server.url}/fleet")
            page.wait_for_function(
                "v => { const r = document.querySelector('#rollout');"
                " return r && r.querySelector('.badge.ok') && r.textContent.includes(`running v${v}: 2`); }",
                arg=v1.version,
                timeout=15_000,
            )
            assert f"production v{v1.version}" in page.locator("#rollout").inner_text()
            rows = page.locator("#robots tbody tr")
            assert rows.count() == 2 and all(f"v{v1.version}" in rows.nth(i).inner_text() for i in range(rows.count()))
            shot(page, "fleet-rolled-back")
            page.close()

        assert registry.is_pinned() and registry.aliases()[PRODUCTION] == v1.version
        with app.state.services.sessions() as s:
            query = select(AuditEntry).where(AuditEntry.actor == "operator", AuditEntry.action != "auth.login")
            entries = s.scalars(query).all()
        assert [(e.action, e.role, e.reason, e.target) for e in entries] == [
            ("rollback", "operator", "v2 drops cubes", f"{settings.model_name} v{v1.version}")
        ]  # once, by the registry: the dashboard writes no second row
    finally:
        for a in actors:
            a.stop.remote()
        ray.get(runs, timeout=60)
        ray.get([a.close.remote() for a in actors], timeout=60)
        for a in actors:
            ray.kill(a)
        app.state.services.stop()
