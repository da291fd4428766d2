"""Failed-login throttling: N failures per user name (or more per client) in the window → 429 + Retry-After;
the window passing or a successful login lets the user in again; the HTML form login counts the same."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dashboards.throttle import LoginThrottle
from tests.dashboards.conftest import PASSWORD, Dash

pytestmark = pytest.mark.timeout(60)
LOGIN = "/api/v1/auth/login"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(dash: Dash, clock: Clock, *, per_user: int = 5, per_client: int = 20) -> None:
    dash.services.login_throttle = LoginThrottle(
        max_per_user=per_user, max_per_client=per_client, window_s=60.0, clock=clock
    )


def _login(client: TestClient, username: str, password: str) -> object:
    return client.post(LOGIN, json={"username": username, "password": password})


def test_defaults_come_from_settings(dash: Dash) -> None:
    throttle = dash.services.login_throttle
    assert (throttle.max_per_user, throttle.max_per_client, throttle.window_s) == (5, 20, 60.0)


def test_user_is_locked_after_n_failures_and_unlocked_by_the_window(dash: Dash) -> None:
    clock = Clock()
    _throttle(dash, clock)
    for i in range(5):
        clock.now += 1
        assert _login(dash.client, "operator", f"wrong-{i}").status_code == 401
    locked = _login(dash.client, "operator", PASSWORD)  # even the right password: no guessing while locked
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "56"  # first failure at t+1 leaves the window at t+61; now t+5
    assert "too many failed logins" in locked.json()["detail"]
    assert _login(dash.client, "viewer", PASSWORD).status_code == 200  # other users are not affected
    clock.now += 56
    assert _login(dash.client, "operator", PASSWORD).status_code == 200


def test_success_resets_the_user_count(dash: Dash) -> None:
    clock = Clock()
    _throttle(dash, clock)
    for _ in range(4):
        assert _login(dash.client, "reviewer", "wrong").status_code == 401
    assert _login(dash.client, "reviewer", PASSWORD).status_code == 200
    for _ in range(4):  # a fresh budget of 5 after the success
        assert _login(dash.client, "reviewer", "wrong").status_code == 401
    assert _login(dash.client, "reviewer", PASSWORD).status_code == 200


def test_user_name_case_and_spaces_share_one_counter(dash: Dash) -> None:
    _throttle(dash, Clock(), per_user=2)
    assert _login(dash.client, "Admin", "wrong").status_code == 401
    assert _login(dash.client, " admin", "wrong").status_code == 401
    assert _login(dash.client, "admin", PASSWORD).status_code == 429


def test_one_client_spraying_many_user_names_is_locked(dash: Dash) -> None:
    _throttle(dash, Clock(), per_user=5, per_client=6)
    for i in range(6):
        assert _login(dash.client, f"ghost-{i}", "wrong").status_code == 401
    r = _login(dash.client, "viewer", PASSWORD)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_html_form_login_is_throttled_too(dash: Dash) -> None:
    _throttle(dash, Clock(), per_user=2)
    client = TestClient(dash.app, follow_redirects=False)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for _ in range(2):
        r = client.post("/login", content="username=viewer&password=wrong&next=/fleet", headers=form)
        assert r.status_code == 303 and r.headers["location"].endswith("error=1")
    r = client.post("/login", content=f"username=viewer&password={PASSWORD.replace(' ', '+')}", headers=form)
    assert r.status_code == 429 and r.headers["Retry-After"] == "60"
    assert "Too many failed logins" in r.text
    assert _login(dash.client, "viewer", PASSWORD).status_code == 429  # the JSON login shares the counter


def test_tracked_keys_are_bounded() -> None:
    throttle = LoginThrottle(max_per_user=1, max_per_client=10**6, window_s=60.0, max_keys=100, clock=Clock())
    for i in range(1000):
        throttle.failed(f"user-{i}", "10.0.0.1")
    assert len(throttle._failures) <= 100


def test_concurrent_guesses_cannot_all_pass_one_check() -> None:
    """50 guesses at once for one account (each would then spend ~0.1 s on argon2): only as many as the limit get to
    the password check; the check and the count are one step."""
    import threading

    throttle = LoginThrottle(max_per_user=5, max_per_client=10**6, window_s=60.0)
    start, results = threading.Barrier(50), []

    def guess(i: int) -> None:
        start.wait()
        results.append(throttle.begin("admin", f"10.0.0.{i}"))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    passed = [r for r in results if not r.refused]
    assert len(passed) == 5 and all(r.retry_after_s == 60 for r in results if r.refused)


def test_a_successful_login_does_not_count_against_its_client() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_per_user=5, max_per_client=3, window_s=60.0, clock=clock)
    for _ in range(10):  # ten good logins from one address: none is a failure
        attempt = throttle.begin("viewer", "10.0.0.1")
        assert not attempt.refused and attempt.stamp is not None
        throttle.succeeded("viewer", "10.0.0.1", attempt.stamp)
    for name in ("a", "b", "c"):  # three failures for other names from it: now it is locked
        assert not throttle.begin(name, "10.0.0.1").refused
    assert throttle.begin("viewer", "10.0.0.1").retry_after_s == 60
