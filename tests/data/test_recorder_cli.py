"""`fleet record` is a thin typer command the fleet CLI registers."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from fleet.recorder_cli import register


def test_record_command_registers_and_documents_its_options() -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command keeps typer from collapsing the app into `record`
        pass

    result = CliRunner().invoke(app, ["record", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--group", "--store", "--no-db", "--verbose"):
        assert option in result.output


def test_record_reports_an_unreachable_broker(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["record", "--no-db"])
    assert result.exit_code == 1
    assert "run `fleet up` or set FLEET_KAFKA_BOOTSTRAP" in result.output
