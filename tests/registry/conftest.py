"""Registry fixtures: a fresh registered model and DB per test on the shared MLflow server."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from fleet.registry import Registry, VersionInfo
from fleet.settings import Settings
from fleet.stack.launcher import migrate_database


@pytest.fixture()
def registry(stack: Settings, tmp_path: Path) -> Registry:
    # A fresh registered model and DB per test keep tests independent on the shared server
    # (one fleet = one registered model = one DB, as in production).
    settings = stack.model_copy(
        update={"model_name": f"vla-test-{uuid.uuid4().hex[:8]}", "database_url": f"sqlite:///{tmp_path}/fleet.db"}
    )
    migrate_database(settings)
    return Registry(settings)


def checkpoint_of(tmp_path: Path, payload: bytes) -> tuple[Path, str]:
    """A checkpoint directory whose weights file holds `payload`, and its sha256."""
    directory = tmp_path / hashlib.sha1(payload).hexdigest()[:8]
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(payload)
    (directory / "config.json").write_text("{}")
    return directory, hashlib.sha256(payload).hexdigest()


def publish_bytes(registry: Registry, tmp_path: Path, payload: bytes, parent: str | None) -> VersionInfo:
    ckpt, sha = checkpoint_of(tmp_path, payload)
    return registry.publish(ckpt, sha256=sha, parent_version=parent)
