"""Authorization matrix: every API route and HTML page × every caller → 401 (nobody; pages: the login page),
403 (below the role, or a robot token on a page), allowed.

The route table is checked against the app's OpenAPI spec and the page table against the pages router, so a new
route or page without a row here fails `test_matrix_covers_every_route` / `test_matrix_covers_every_page`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboards import crud
from dashboards.auth import ROLES
from tests.dashboards.conftest import Dash, local_settings, make_dash
from tests.dashboards.factories import add_correction, heartbeat

pytestmark = pytest.mark.timeout(60)

# (method, path, json body, least role). Bodies are valid so the only possible refusal is auth. "robot": only the
# robot token bound to that robot; "viewer+robot": viewers and up, and robot tokens (they read models).
ROUTES: list[tuple[str, str, dict | None, str]] = [
    ("POST", "/api/v1/users", {"username": "new", "password": "long enough pw", "role": "viewer"}, "admin"),
    ("PATCH", "/api/v1/users/{username}", {"role": "viewer", "reason": "matrix"}, "admin"),
    ("POST", "/api/v1/tokens", {"name": "t", "scopes": ["role:viewer"]}, "admin"),
    ("POST", "/api/v1/tokens/{token_id}/revoke", {"reason": "matrix"}, "admin"),
    ("POST", "/api/v1/robots/{robot_id}/commands", {"action": "pause", "reason": "matrix"}, "operator"),
    ("POST", "/api/v1/fleet/commands", {"action": "resume", "reason": "matrix"}, "operator"),
    ("POST", "/api/v1/corrections/{correction_id}/review", {"decision": "approve"}, "reviewer"),
    ("POST", "/api/v1/models/{version}/promote", {"reason": "matrix"}, "operator"),
    ("POST", "/api/v1/models/{version}/rollback", {"reason": "matrix"}, "operator"),
    ("POST", "/api/v1/models/pin", {"reason": "matrix"}, "operator"),
    ("POST", "/api/v1/models/unpin", {"reason": "matrix"}, "operator"),
    ("POST", "/api/v1/canary", {"version": "2", "robots": ["robot-1"], "reason": "matrix"}, "operator"),
    ("POST", "/api/v1/canary/promote", {"reason": "matrix"}, "operator"),
    ("POST", "/api/v1/canary/rollback", {"reason": "matrix"}, "operator"),
    ("GET", "/api/v1/canary", None, "viewer"),
    ("GET", "/api/v1/users", None, "admin"),
    ("GET", "/api/v1/tokens", None, "admin"),
    ("GET", "/api/v1/fleet", None, "viewer"),
    ("GET", "/api/v1/fleet/events", None, "viewer"),
    ("GET", "/api/v1/robots/{robot_id}", None, "viewer"),
    ("GET", "/api/v1/commands", None, "viewer"),
    ("GET", "/api/v1/corrections", None, "viewer"),
    ("GET", "/api/v1/corrections/{correction_id}", None, "viewer"),
    ("GET", "/api/v1/corrections/{correction_id}/frames/{step}.png", None, "viewer"),
    ("GET", "/api/v1/corrections/{correction_id}/actions.svg", None, "viewer"),
    ("GET", "/api/v1/models", None, "viewer+robot"),
    ("GET", "/api/v1/models/curve.svg", None, "viewer+robot"),
    ("GET", "/api/v1/models/{version}", None, "viewer+robot"),
    ("POST", "/api/v1/robots/{robot_id}/messages", None, "robot"),  # only robot-1's own token; no body: 415
    ("GET", "/api/v1/robots/{robot_id}/commands", None, "robot"),  # only robot-1's own token; no feed here: 503
    ("GET", "/api/v1/audit", None, "viewer"),
    ("GET", "/api/v1/training", None, "viewer"),
    ("GET", "/api/v1/auth/me", None, "any"),
    ("POST", "/api/v1/auth/logout", None, "any"),
]
PUBLIC = {("POST", "/api/v1/auth/login"), ("GET", "/healthz"), ("GET", "/metrics")}  # /metrics: scrape token, if set
PARAMS = {"username": "viewer", "robot_id": "robot-1", "correction_id": "c-1", "version": "2", "step": "3"}
CALLERS = [None, *ROLES, "robot"]


def expected(least: str, caller: str | None) -> str:
    if caller is None:
        return "401"
    if least == "any":
        return "allowed"
    if least == "robot":
        return "allowed" if caller == "robot" else "403"
    if least == "viewer+robot":
        least = "viewer"
        if caller == "robot":
            return "allowed"
    if caller == "robot" or ROLES.index(caller) < ROLES.index(least):
        return "403"
    return "allowed"


@pytest.fixture(scope="module")
def mdash(tmp_path_factory: pytest.TempPathFactory, template_db: Path, password_hash: str) -> Iterator[Dash]:
    import shutil

    home = tmp_path_factory.mktemp("matrix")
    shutil.copy(template_db, home / "fleet.db")
    d = make_dash(local_settings(home, f"sqlite:///{home / 'fleet.db'}"), password_hash)
    d.services.fleet.apply(heartbeat("robot-1"))
    with d.services.sessions() as s:
        add_correction(s)
        spare, _ = crud.create_token(s, name="spare", scopes=["role:viewer"])
        PARAMS["token_id"] = str(spare.id)
        s.commit()
    yield d
    d.services.stop()


def test_matrix_covers_every_route(mdash: Dash) -> None:
    spec = mdash.client.get("/api/v1/openapi.json").json()
    in_app = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    in_matrix = {(m, p) for m, p, _, _ in ROUTES} | PUBLIC
    assert in_app == in_matrix


# The HTML pages: (path, least role). Anonymous callers are sent to the login page; robot tokens get a 403 (their
# credentials read models, not the fleet's pages).
PAGES: list[tuple[str, str]] = [
    ("/fleet", "viewer"),
    ("/corrections", "viewer"),
    ("/models", "viewer"),
    ("/canary", "viewer"),
    ("/audit", "viewer"),
    ("/training", "viewer"),
]
PUBLIC_PAGES = {("GET", "/"), ("GET", "/login"), ("POST", "/login")}


def test_matrix_covers_every_page() -> None:
    from fastapi.routing import APIRoute

    from dashboards.routes import pages

    in_app = {(m, r.path) for r in pages.router.routes if isinstance(r, APIRoute) for m in r.methods}
    assert in_app == {("GET", p) for p, _ in PAGES} | PUBLIC_PAGES


@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c or "anonymous")
@pytest.mark.parametrize(("path", "least"), PAGES, ids=[p for p, _ in PAGES])
def test_page_authorization(mdash: Dash, path: str, least: str, caller: str | None) -> None:
    r = mdash.client.get(path, headers=mdash.auth(caller), follow_redirects=False)
    want = expected(least, caller)
    if want == "401":
        assert r.status_code == 303 and r.headers["location"] == f"/login?next={path}"
    elif want == "403":
        assert r.status_code == 403 and "robot token" in r.text, r.text
    else:
        assert r.status_code == 200 and "text/html" in r.headers["content-type"], r.text


@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c or "anonymous")
@pytest.mark.parametrize(("method", "path", "body", "least"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_authorization(mdash: Dash, method: str, path: str, body: dict | None, least: str, caller: str | None) -> None:
    url = path.format(**PARAMS)
    if url.endswith("/events") and expected(least, caller) == "allowed":  # endless stream: refusals only here
        pytest.skip("the stream itself is tested in test_fleet_api")
    r = mdash.client.request(method, url, json=body, headers=mdash.auth(caller))
    want = expected(least, caller)
    if want == "allowed":
        assert r.status_code not in (401, 403), r.text
        assert r.status_code < 500 or r.status_code == 503, r.text  # 503: no Kafka in this test for /training
    else:
        assert r.status_code == int(want), r.text
