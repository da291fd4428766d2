"""Every `fleet` command answers --help (fast: no heavy imports at CLI load)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from fleet.cli import app


def _commands(group: TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group`, the services' lazily loaded ones included."""
    found = []
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        found.append((*prefix, name))
        if isinstance(command, TyperGroup):
            found.extend(_commands(command, (*prefix, name)))
    return found


def test_every_command_has_help() -> None:
    runner = CliRunner()
    commands = _commands(typer.main.get_group(app))
    assert {
        ("up",),
        ("down",),
        ("status",),
        ("robots", "run"),
        ("learner", "run"),
        ("dashboard",),
        ("users", "add"),
    } <= set(commands)
    for command in [(), *commands]:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


def test_the_foundation_imports_no_service() -> None:
    """`fleet/` is what every service imports; it names their commands (fleet.cli.SERVICE_COMMANDS) and never
    imports them, so loading the CLI or any foundation module loads no service."""
    root = Path(__file__).resolve().parents[2]
    found = set()
    for path in (root / "fleet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found |= {
                (str(path.relative_to(root)), n)
                for n in names
                if n.split(".")[0] in ("actors", "learner", "dashboards")
            }
    assert not found
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, fleet.cli; print(sorted({m.split('.')[0] for m in sys.modules}))"],
        capture_output=True, text=True, check=True, cwd=root,
    ).stdout  # fmt: skip
    assert not {"actors", "learner", "dashboards"} & set(eval(loaded)), loaded  # noqa: S307 - our own printout


def test_robots_run_refuses_an_unknown_supervision_mode_before_starting_anything() -> None:
    result = CliRunner().invoke(app, ["robots", "run", "--n", "1", "--episodes", "1", "--supervision", "watch"])
    assert result.exit_code == 1
    assert "supervision must be one of ('takeover', 'stop', 'off')" in result.output
