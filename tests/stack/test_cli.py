"""Every `fleet` command answers --help (fast: no heavy imports at CLI load)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from fleet.cli import app


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for info in group.registered_commands:
        found.append((*prefix, info.name or info.callback.__name__))
    for sub in group.registered_groups:
        name = sub.name or sub.typer_instance.info.name
        found.append((*prefix, name))
        found.extend(_commands(sub.typer_instance, (*prefix, name)))
    return found


def test_every_command_has_help() -> None:
    runner = CliRunner()
    commands = _commands(app)
    assert ("up",) in commands and ("down",) in commands and ("status",) in commands
    for command in [(), *commands]:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


def test_robots_run_refuses_an_unknown_supervision_mode_before_starting_anything() -> None:
    result = CliRunner().invoke(app, ["robots", "run", "--n", "1", "--episodes", "1", "--supervision", "watch"])
    assert result.exit_code == 1
    assert "supervision must be one of ('takeover', 'stop', 'off')" in result.output
