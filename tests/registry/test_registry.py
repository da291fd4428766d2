"""The registry against the real MLflow server and a migrated DB: publish, promote, rollback, pin."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from fleet.db import AuditEntry, Deployment, ModelVersion
from fleet.registry import CANDIDATE, PRODUCTION, PinnedError, Registry, RegistryError, VersionInfo
from fleet.settings import Settings
from fleet.stack.launcher import migrate_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture()
def registry(stack: Settings, tmp_path: Path) -> Registry:
    # A fresh registered model and DB per test keep tests independent on the shared server
    # (one fleet = one registered model = one DB, as in production).
    settings = stack.model_copy(
        update={"model_name": f"vla-test-{uuid.uuid4().hex[:8]}", "database_url": f"sqlite:///{tmp_path}/fleet.db"}
    )
    migrate_database(settings)
    return Registry(settings)


def _checkpoint(tmp_path: Path, payload: bytes) -> tuple[Path, str]:
    directory = tmp_path / hashlib.sha1(payload).hexdigest()[:8]
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(payload)
    (directory / "config.json").write_text("{}")
    return directory, hashlib.sha256(payload).hexdigest()


def test_publish_sets_candidate_with_lineage_tags(registry: Registry, tmp_path: Path) -> None:
    ckpt, sha = _checkpoint(tmp_path, b"weights v1")
    info = registry.publish(ckpt, sha256=sha, parent_version=None, tags={"eval/mean": "0.5", "gate_passed": "true"})
    assert info.sha256 == sha
    assert registry.aliases() == {CANDIDATE: info.version}
    assert info.eval_metrics == {"mean": 0.5}
    downloaded = registry.download(info.version, tmp_path / "dl")
    assert hashlib.sha256((downloaded / "model.safetensors").read_bytes()).hexdigest() == sha
    with registry.sessions() as session:  # type: ignore[misc]
        assert session.get(ModelVersion, info.version).sha256 == sha


def test_rollback_pins_and_blocks_automatic_promotion(registry: Registry, tmp_path: Path) -> None:
    v1 = _publish(registry, tmp_path, b"one", None)
    registry.promote(v1.version, actor="learner", role="service", reason="gate", automatic=True)
    v2 = _publish(registry, tmp_path, b"two", v1.version)
    registry.promote(v2.version, actor="learner", role="service", reason="gate", automatic=True)
    assert registry.aliases()[PRODUCTION] == v2.version

    back = registry.rollback(actor="alice", role="operator", reason="v2 drops cubes")
    assert back.version == v1.version
    assert registry.is_pinned()
    v3 = _publish(registry, tmp_path, b"three", v2.version)
    with pytest.raises(PinnedError):
        registry.promote(v3.version, actor="learner", role="service", reason="gate", automatic=True)
    assert registry.aliases() == {CANDIDATE: v3.version, PRODUCTION: v1.version}

    registry.unpin(actor="alice", role="operator", reason="fixed")
    registry.promote(v3.version, actor="learner", role="service", reason="gate", automatic=True)
    assert registry.aliases()[PRODUCTION] == v3.version

    with registry.sessions() as session:  # type: ignore[misc]
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions[-4:] == ["promote", "rollback", "unpin", "promote"]
        rollback_row = session.scalars(select(Deployment).where(Deployment.action == "rollback")).one()
        assert rollback_row.pinned and rollback_row.actor == "alice" and rollback_row.reason == "v2 drops cubes"


def test_unknown_version_is_a_clear_error(registry: Registry, tmp_path: Path) -> None:
    _publish(registry, tmp_path, b"x", None)
    with pytest.raises(RegistryError, match="has no version 99"):
        registry.promote("99", actor="a", role="admin", reason="typo")


def _publish(registry: Registry, tmp_path: Path, payload: bytes, parent: str | None) -> VersionInfo:
    ckpt, sha = _checkpoint(tmp_path, payload)
    return registry.publish(ckpt, sha256=sha, parent_version=parent)


def test_unreachable_server_says_what_to_do(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, mlflow_tracking_uri="http://127.0.0.1:9", database_url=f"sqlite:///{tmp_path}/x.db"
    )
    with pytest.raises(RegistryError, match="fleet up"):
        Registry(settings, sessions=None).list_versions()
