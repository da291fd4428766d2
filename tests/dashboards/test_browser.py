"""Browser tests: Playwright driving Debian's headless Chromium against the dashboard on a real broker.

Needs /usr/bin/chromium (scripts/chromium.sh installs it; the `browser` fixture is in conftest.py) and
the `stack` fixture (Kafka, MLflow). Screenshots of every page go to docs/screenshots/. The tests that
close the loop with the learner and the simulated fleet are in test_browser_loop.py.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dashboards.app import create_app
from fleet.db import Correction
from fleet.settings import Settings
from fleet.transport import TransportConfig
from tests.dashboards.conftest import Dash, local_settings, make_dash
from tests.dashboards.factories import add_correction, add_episode, add_learner_run, store_episode
from tests.dashboards.fakes import FakeRegistry
from tests.dashboards.live import FakeRobot, LiveServer, login, shot
from tests.faults.record import record_fault

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def live(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory, template_db: Path, password_hash: str
) -> Iterator[tuple[Dash, LiveServer, FakeRobot]]:
    home = tmp_path_factory.mktemp("browser")
    shutil.copy(template_db, home / "fleet.db")
    settings = local_settings(home, f"sqlite:///{home / 'fleet.db'}")
    seed = make_dash(settings, password_hash)  # users and tokens in the DB
    seed.services.stop()
    store_episode(seed.services.episodes)
    with seed.services.sessions() as s:
        add_episode(s, success=False, interventions=9)
        add_correction(s, correction_id="c-browser")
        s.commit()
    registry = FakeRegistry.with_versions(3)
    app = create_app(settings, registry=registry, connect=True)  # real Kafka transport + heartbeat consumer
    dash = Dash(app, seed.client, settings, seed.transport, registry, seed.tokens)
    robot_config = TransportConfig.from_settings(settings, client_id="fake-robot")
    with LiveServer(app) as server, FakeRobot(robot_config, "robot-1") as robot:
        yield dash, server, robot


def test_login_page(browser: Any, live: tuple[Dash, LiveServer, FakeRobot]) -> None:
    _, server, _ = live
    page = browser.new_page(viewport={"width": 1000, "height": 600})
    page.goto(f"{server.url}/fleet")
    assert "/login" in page.url
    shot(page, "login")
    page.close()


@pytest.mark.parametrize("role", ["viewer", "reviewer", "operator", "admin"])
def test_each_role_logs_in_and_sees_the_live_fleet(
    browser: Any, live: tuple[Dash, LiveServer, FakeRobot], role: str
) -> None:
    _, server, _ = live
    page = login(browser, server, role)
    page.wait_for_selector('tr[data-robot="robot-1"]', timeout=15_000)  # arrived through Kafka + SSE
    assert page.locator(".who .role").inner_text() == role
    page.close()


def test_viewer_sees_no_mutating_buttons_and_gets_403(browser: Any, live: tuple[Dash, LiveServer, FakeRobot]) -> None:
    _, server, _ = live
    page = login(browser, server, "viewer")
    page.wait_for_selector('tr[data-robot="robot-1"]', timeout=15_000)
    shot(page, "fleet-viewer")
    for path in ("/fleet", "/corrections", "/models"):
        page.goto(server.url + path)
        assert (
            page.locator(
                "button[data-cmd], button[data-fleet-action], button[data-review], button[data-model-action]"
            ).count()
            == 0
        ), path
    status = page.evaluate("""async () => {
        const csrf = document.querySelector('meta[name="csrf-token"]').content;
        const r = await fetch('/api/v1/robots/robot-1/commands', {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
            body: JSON.stringify({action: 'stop'})});
        return r.status; }""")
    assert status == 403
    page.close()


def test_operator_pauses_a_robot_and_sees_it_paused_within_2s(
    browser: Any, live: tuple[Dash, LiveServer, FakeRobot]
) -> None:
    dash, server, robot = live
    page = login(browser, server, "operator")
    row = page.locator('tr[data-robot="robot-1"]')
    row.locator("td .state-acting").wait_for(timeout=15_000)
    shot(page, "fleet")
    started = time.monotonic()
    row.locator('button[data-cmd="pause"]').click()
    page.wait_for_selector('tr[data-robot="robot-1"][data-state="paused"]', timeout=2_000)
    elapsed = time.monotonic() - started
    page.wait_for_selector('tr[data-robot="robot-1"] .cmd-applied', timeout=2_000)
    assert robot.state == "paused" and robot.received[-1].issued_by == "operator" and elapsed < 2.0
    shot(page, "fleet-paused")
    row.locator('button[data-cmd="resume"]').click()
    page.wait_for_selector('tr[data-robot="robot-1"][data-state="acting"]', timeout=2_000)
    page.goto(f"{server.url}/models")
    shot(page, "models")
    page.goto(f"{server.url}/audit")
    assert page.locator("#audit").inner_text().count("command.pause") >= 1
    shot(page, "audit")
    losses, rates = [0.9, 0.62, 0.45, 0.41, 0.33, 0.3], [11.0, 14.0, 13.0, 15.0, 14.0, 16.0]
    add_learner_run(dash.settings.tracking_uri, losses=losses, rates=rates)
    page.goto(f"{server.url}/training")
    page.wait_for_selector('#learner-charts svg[data-title="losses/action"] polyline')
    shot(page, "training")
    page.close()


def test_reviewer_rejects_a_correction(browser: Any, live: tuple[Dash, LiveServer, FakeRobot]) -> None:
    dash, server, _ = live
    page = login(browser, server, "reviewer")
    page.goto(f"{server.url}/corrections?selected=c-browser")  # the queue may also hold corrections from Kafka
    page.wait_for_selector("#correction[data-id=c-browser] .filmstrip img")
    shot(page, "corrections")
    page.keyboard.press("r")  # the reject shortcut
    page.wait_for_selector("#correction-status.status-rejected", timeout=5_000)
    with dash.services.sessions() as s:
        assert s.scalar(select(Correction).where(Correction.id == "c-browser")).status == "rejected"
    page.close()


HOSTILE = '</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def test_a_hostile_heartbeat_runs_no_script(browser: Any, live: tuple[Dash, LiveServer, FakeRobot]) -> None:
    """Free text a robot sends (embodiment, error, version) reaches the fleet page twice: in the JSON the page starts
    from and in the live stream. Neither may run it: the text shows as text, and the page's policy forbids inline
    script anyway."""
    from fleet.schemas import Heartbeat, LoopStats
    from fleet.transport import publish

    _, server, robot = live
    loop = LoopStats(control_hz=10, ticks=2, missed_ticks=0, tick_ms_p50=2, tick_ms_p99=4, tick_ms_max=5)
    beat = Heartbeat(
        robot_id="robot-hostile", embodiment=HOSTILE, state="error", model_version=HOSTILE, sent_at=time.time(),
        loop=loop, error=HOSTILE,
    )  # fmt: skip
    page = login(browser, server, "viewer")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    publish(robot.transport, beat)
    row = page.wait_for_selector('tr[data-robot="robot-hostile"]', timeout=15_000)  # through Kafka and the stream
    assert HOSTILE in row.inner_text()
    response = page.goto(f"{server.url}/fleet")  # now in the page's initial JSON too
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "\\u003c/script\\u003e" in response.text() and HOSTILE not in response.text()
    row = page.wait_for_selector('tr[data-robot="robot-hostile"]', timeout=15_000)
    assert HOSTILE in row.inner_text()
    rows = len(page.query_selector_all('tr[data-robot="robot-hostile"]'))
    ran = int(page.evaluate("window.__pwned") is not None) + len(dialogs)
    record_fault("hostile_heartbeat", lost=int(rows == 0), duplicated=max(rows - 1, 0), scripts_run=ran)
    assert rows == 1 and ran == 0
    page.close()


def test_an_operator_reads_the_canarys_live_ab_and_rolls_it_back(
    browser: Any, live: tuple[Dash, LiveServer, FakeRobot]
) -> None:
    from fleet.canary import Cohort

    dash, server, _ = live
    dash.registry.start_canary("2", Cohort("2", robots=("robot-1",)), actor="alice", role="operator", reason="try")
    with dash.services.sessions.begin() as s:
        for i in range(30):
            # the same outcomes on both sides: the background controller (every 15 s) has nothing to decide
            ok = i % 5 != 0
            add_episode(s, episode_id=f"canary-{i}", version="2", success=ok, interventions=0 if ok else 7,
                        ended_ago_s=0)  # fmt: skip
            add_episode(s, robot_id="robot-2", episode_id=f"production-{i}", version="3", success=ok,
                        interventions=0 if ok else 7, ended_ago_s=0)  # fmt: skip
    page = login(browser, server, "operator")
    page.goto(f"{server.url}/canary")
    row = page.wait_for_selector('#ab tr[data-metric="autonomous_success"]')
    assert "30" in row.inner_text() and "0.800" in row.inner_text()  # 24 of the canary's 30 episodes
    assert page.locator("#decision").inner_text() == "continue"
    shot(page, "canary")
    page.once("dialog", lambda d: d.accept("canary drops cubes"))
    page.locator('button[data-canary-action="rollback"]').click()
    page.wait_for_selector("text=No canary running", timeout=5_000)
    assert dash.registry.calls[-1] == ("end_canary", {"outcome": "rollback", "actor": "operator", "reason":
                                                      "canary drops cubes"})  # fmt: skip
    assert "canary" not in dash.registry.alias_map
    page.close()
