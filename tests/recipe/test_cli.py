"""The recipe commands: every one answers --help; `demos collect` writes to --out; bad input exits 1 with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fleet.episodes import EpisodeStore
from fleet.recipe.cli import register

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.mark.parametrize(
    "args", [["demos", "collect"], ["train", "pretrain"], ["train", "posttrain"], ["eval"], ["demos"], ["train"]]
)
def test_commands_answer_help(args: list[str]) -> None:
    result = runner.invoke(_app(), [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_demos_collect_writes_the_store(tmp_path: Path) -> None:
    out = tmp_path / "demos"
    args = ["demos", "collect", "--tasks", "push", "--embodiments", "kuka", "--episodes", "1", "--out", str(out)]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "wrote 1 demonstrations" in result.output
    assert len(EpisodeStore(out).list()) == 1


def test_bad_input_exits_with_a_hint(tmp_path: Path) -> None:
    result = runner.invoke(_app(), ["demos", "collect", "--tasks", "psh", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "push" in result.output
    result = runner.invoke(_app(), ["eval", "--episodes", "1"])
    assert result.exit_code == 1 and "--checkpoint" in result.output
