"""Dashboard fixtures: a migrated SQLite DB per test, the app on fakes, users and tokens per role."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from dashboards import crud
from dashboards.app import create_app
from dashboards.auth import ROLES, hash_password
from dashboards.services import Services
from fleet.db import User
from fleet.db.migrate import upgrade
from fleet.settings import Settings
from tests.dashboards.fakes import FakeRegistry
from tests.dashboards.live import CHROMIUM, CHROMIUM_ARGS, PASSWORD
from tests.data.fakes import FakeTransport


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)  # argon2 is deliberately slow: hash once per session


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dash-template") / "fleet.db"
    upgrade(f"sqlite:///{path}")
    return path


@dataclass
class Dash:
    """The app under test and handles on its fakes."""

    app: FastAPI
    client: TestClient
    settings: Settings
    transport: FakeTransport
    registry: FakeRegistry
    tokens: dict[str, str] = field(default_factory=dict)  # role -> bearer token

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    def auth(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    def login(self, role: str) -> TestClient:
        """A client logged in with the session cookie, sending the CSRF header like the pages do."""
        client = TestClient(self.app)
        r = client.post("/api/v1/auth/login", json={"username": role, "password": PASSWORD})
        assert r.status_code == 200, r.text
        client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return client


def make_dash(settings: Settings, password_hash: str) -> Dash:
    transport, registry = FakeTransport(), FakeRegistry.with_versions(3)
    app = create_app(settings, transport=transport, registry=registry, connect=False)
    dash = Dash(app, TestClient(app), settings, transport, registry)
    with dash.services.sessions() as session:
        for role in ROLES:
            session.add(User(username=role, password_hash=password_hash, role=role, disabled=False))
            _, dash.tokens[role] = crud.create_token(session, name=f"{role}-token", scopes=[f"role:{role}"])
        _, dash.tokens["robot"] = crud.create_token(
            session, name="robot-1", scopes=["robot:produce", "models:read"], robot_id="robot-1"
        )
        session.commit()
    return dash


def local_settings(home: Path, db_url: str) -> Settings:
    return Settings(home=home, database_url=db_url, secret_key=SecretStr("test-secret-key-0123456789abcdef"))


@pytest.fixture()
def dash(tmp_path: Path, template_db: Path, password_hash: str) -> Iterator[Dash]:
    db = tmp_path / "fleet.db"
    shutil.copy(template_db, db)
    d = make_dash(local_settings(tmp_path, f"sqlite:///{db}"), password_hash)
    yield d
    d.services.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: run scripts/chromium.sh (Debian packages chromium, chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
