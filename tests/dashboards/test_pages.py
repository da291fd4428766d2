"""Server-rendered pages: login flow, role-dependent buttons, no external assets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.dashboards.conftest import PASSWORD, Dash
from tests.dashboards.factories import add_correction, add_episode, heartbeat, store_episode

pytestmark = pytest.mark.timeout(60)
PAGES = ("/fleet", "/corrections", "/models", "/audit", "/training")
DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"


@pytest.fixture()
def seeded(dash: Dash) -> Dash:
    dash.services.fleet.apply(heartbeat("robot-1"))
    store_episode(dash.services.episodes)
    with dash.services.sessions() as s:
        add_episode(s)
        add_correction(s)
        s.commit()
    return dash


def test_pages_redirect_to_login_without_a_session(dash: Dash) -> None:
    for page in PAGES:
        r = dash.client.get(page, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_form_login_then_every_page_renders(seeded: Dash) -> None:
    client = TestClient(seeded.app)
    r = client.post(
        "/login",
        content=f"username=viewer&password={PASSWORD.replace(' ', '+')}&next=/models",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/models"
    for page in PAGES:
        assert client.get(page).status_code == 200, page
    bad = client.post(
        "/login",
        content="username=viewer&password=wrong&next=//evil.example",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert bad.headers["location"] == "/login?next=/fleet&error=1"


@pytest.mark.parametrize(
    "target", ["//evil.example", "/\\evil.example", "/\t/evil.example", "/\n/evil.example", "https://evil.example"]
)
def test_login_never_redirects_off_the_site(seeded: Dash, target: str) -> None:
    from urllib.parse import quote

    client = TestClient(seeded.app)
    r = client.post(
        "/login",
        content=f"username=viewer&password={PASSWORD.replace(' ', '+')}&next={quote(target)}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/fleet"
    assert 'value="/fleet"' in client.get(f"/login?next={quote(target)}").text  # the form carries no hostile next


def test_login_form_refuses_a_huge_body_and_other_sites(seeded: Dash) -> None:
    client = TestClient(seeded.app)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    good = f"username=viewer&password={PASSWORD.replace(' ', '+')}"
    huge = client.post("/login", content=good + "&pad=" + "x" * 20_000, headers=form, follow_redirects=False)
    assert huge.status_code == 413 and "at most" in huge.text
    for hostile in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = client.post("/login", content=good, headers={**form, **hostile}, follow_redirects=False)
        assert r.status_code == 403 and "another site" in r.text and "set-cookie" not in r.headers
    same = client.post("/login", content=good, headers={**form, "Origin": "http://testserver"}, follow_redirects=False)
    assert same.status_code == 303 and same.headers["location"] == "/fleet"


@pytest.mark.parametrize(
    ("role", "fleet", "review", "models"),
    [
        ("viewer", False, False, False),
        ("reviewer", False, True, False),
        ("operator", True, True, True),
        ("admin", True, True, True),
    ],
)
def test_mutating_buttons_follow_the_role(seeded: Dash, role: str, fleet: bool, review: bool, models: bool) -> None:
    client = seeded.login(role)
    assert ('data-fleet-action="pause"' in client.get("/fleet").text) is fleet
    assert ('data-review="reject"' in client.get("/corrections").text) is review
    models_page = client.get("/models").text
    assert ('data-model-action="rollback"' in models_page) is models
    assert 'data-model-action="pin"' in models_page if models else "data-model-action" not in models_page


def test_assets_are_local_only() -> None:
    for path in [*DASHBOARDS.glob("templates/*.html"), *DASHBOARDS.glob("static/*")]:
        text = path.read_text()
        urls = [u for u in re.findall(r"https?://[^\s\"')]+", text) if u != "http://www.w3.org/2000/svg"]
        assert not urls, f"{path.name} references {urls}"


def test_static_files_are_served(dash: Dash) -> None:
    assert dash.client.get("/static/app.js").status_code == 200
    assert dash.client.get("/static/style.css").status_code == 200


def test_the_corrections_page_says_why_the_takeover_fired_escaped(dash: Dash) -> None:
    hostile = 'regress: <img src=x onerror="alert(1)"> 4.0 cm farther'
    with dash.services.sessions() as s:
        add_correction(s)
        add_correction(s, correction_id="c-2", reason=hostile)
        s.commit()
    client = dash.login("viewer")
    page = client.get("/corrections?selected=c-1").text
    assert "because stall: no progress for 10 steps, 3.1 cm still to go" in page
    hostile_page = client.get("/corrections?selected=c-2").text
    assert "<img src=x" not in hostile_page and "&lt;img src=x onerror=" in hostile_page
    listed = client.get("/api/v1/corrections").json()
    assert {row["id"]: row["reason"] for row in listed}["c-2"] == hostile
