"""`fleet train pretrain --preset debug --promote` against the real stack: a logged run and a production version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from fleet.episodes import EpisodeStore
from fleet.recipe.cli import register
from fleet.registry import Registry
from fleet.settings import Settings


@pytest.mark.integration
def test_train_register_promote_creates_a_production_version(
    stack: Settings, demo_store: tuple[EpisodeStore, int], tmp_path: Path
) -> None:
    store, _ = demo_store
    app = typer.Typer()
    register(app)
    args = ["train", "pretrain", "--preset", "debug", "--demos-dir", str(store.root), "--run-dir", str(tmp_path),
            "--register", "--promote", "--threads", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{") :])
    assert out["version"] is not None and "production" in out["aliases"]

    production = Registry(stack).version_for_alias("production")
    assert production is not None and production.version == out["version"]
    assert production.tags["recipe.stage"] == "pretrain"

    client = MlflowClient(tracking_uri=stack.tracking_uri)
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.params["name"] == "pretrain-debug"
    assert any(key.startswith("losses/") for key in run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")} >= {"checkpoint/model.safetensors"}
