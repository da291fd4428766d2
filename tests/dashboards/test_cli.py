"""`fleet users add` (admin bootstrap) and the dashboard's CLI registration."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from dashboards.cli import register
from dashboards.crud import authenticate
from fleet.db import AuditEntry, make_engine, session_factory

pytestmark = pytest.mark.timeout(120)


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_users_add_reads_the_password_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_DATABASE_URL", url)
    runner = CliRunner()
    result = runner.invoke(
        _app(),
        ["users", "add", "--username", "root", "--role", "admin", "--password-stdin"],
        input="a very long secret\n",
    )
    assert result.exit_code == 0, result.output
    again = runner.invoke(
        _app(),
        ["users", "add", "--username", "root", "--role", "admin", "--password-stdin"],
        input="a very long secret\n",
    )
    assert again.exit_code == 1 and "already exists" in again.output
    bad_role = runner.invoke(
        _app(), ["users", "add", "--username", "x", "--role", "god", "--password-stdin"], input="a very long secret\n"
    )
    assert bad_role.exit_code == 1
    engine = make_engine(url)
    with session_factory(engine)() as s:
        assert authenticate(s, username="root", password="a very long secret").role == "admin"
        assert s.scalar(select(AuditEntry)).action == "user.create"
    engine.dispose()


def test_dashboard_command_is_registered() -> None:
    result = CliRunner().invoke(_app(), ["dashboard", "--help"])
    assert result.exit_code == 0 and "--port" in result.output
