"""The registry against the real MLflow server and a migrated DB: publish (signed), promote, rollback, pin; a robot
loads only versions the learner's key signed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from actors.robot import NoProductionModel, build_robot
from actors.runtime import RobotConfig
from fleet.canary import CANARY, Cohort
from fleet.db import AuditEntry, Deployment, ModelVersion
from fleet.policy.checkpoint import save_checkpoint
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from fleet.registry import (
    CANDIDATE,
    EXPERIMENT,
    PRODUCTION,
    PinnedError,
    Registry,
    RegistryError,
    VersionInfo,
    publish_model,
    scratch_dir,
)
from fleet.settings import Settings
from fleet.signing import SignatureError, load_trusted_keys
from tests.faults.record import record_fault
from tests.registry.conftest import checkpoint_of, publish_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_publish_sets_candidate_with_lineage_tags(registry: Registry, tmp_path: Path) -> None:
    ckpt, sha = checkpoint_of(tmp_path, b"weights v1")
    info = registry.publish(ckpt, sha256=sha, parent_version=None, tags={"eval/mean": "0.5", "gate_passed": "true"})
    assert info.sha256 == sha
    assert registry.aliases() == {CANDIDATE: info.version}
    assert info.eval_metrics == {"mean": 0.5}
    downloaded = registry.download(info.version, tmp_path / "dl")
    assert hashlib.sha256((downloaded / "model.safetensors").read_bytes()).hexdigest() == sha
    with registry.sessions() as session:  # type: ignore[misc]
        assert session.get(ModelVersion, info.version).sha256 == sha


def test_rollback_pins_and_blocks_automatic_promotion(registry: Registry, tmp_path: Path) -> None:
    v1 = publish_bytes(registry, tmp_path, b"one", None)
    registry.promote(v1.version, actor="learner", role="service", reason="gate", automatic=True)
    v2 = publish_bytes(registry, tmp_path, b"two", v1.version)
    registry.promote(v2.version, actor="learner", role="service", reason="gate", automatic=True)
    assert registry.aliases()[PRODUCTION] == v2.version

    back = registry.rollback(actor="alice", role="operator", reason="v2 drops cubes")
    assert back.version == v1.version
    assert registry.is_pinned()
    v3 = publish_bytes(registry, tmp_path, b"three", v2.version)
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


def test_a_canary_runs_beside_production_and_ends_promoted_or_rolled_back_with_its_numbers_audited(
    registry: Registry, tmp_path: Path
) -> None:
    v1 = publish_bytes(registry, tmp_path, b"one", None)
    registry.promote(v1.version, actor="learner", role="service", reason="first")
    v2 = publish_bytes(registry, tmp_path, b"two", v1.version)
    robots = [f"r{i}" for i in range(8)]
    with pytest.raises(RegistryError, match="drawn for version"):
        registry.start_canary(v2.version, Cohort.for_fleet("9", fraction=0.25, known=robots), **ALICE)
    with pytest.raises(RegistryError, match="already production"):
        registry.start_canary(v1.version, Cohort.for_fleet(v1.version, fraction=0.25, known=robots), **ALICE)
    cohort = Cohort.for_fleet(v2.version, fraction=0.25, known=robots)
    registry.start_canary(v2.version, cohort, **ALICE)
    assert registry.aliases() == {CANDIDATE: v2.version, PRODUCTION: v1.version, CANARY: v2.version}
    running = registry.canary()
    assert running is not None and running[0].version == v2.version and running[1] == cohort  # as robots read it
    v3 = publish_bytes(registry, tmp_path, b"three", v2.version)
    with pytest.raises(RegistryError, match="is on canary"):
        registry.start_canary(v3.version, Cohort.for_fleet(v3.version, robots=["r1"]), **ALICE)

    registry.end_canary("rollback", actor="controller", role="service", reason="regression", details={"n": 40})
    assert registry.canary() is None and registry.aliases()[PRODUCTION] == v1.version and not registry.is_pinned()
    registry.start_canary(v3.version, Cohort.for_fleet(v3.version, robots=["r1"]), **ALICE)
    registry.pin(**ALICE)
    with pytest.raises(PinnedError):
        registry.end_canary("promote", actor="controller", role="service", reason="better", automatic=True)
    registry.end_canary("promote", **ALICE)  # an operator may; only automatic moves respect the pin
    assert registry.canary() is None and registry.aliases()[PRODUCTION] == v3.version
    with pytest.raises(PinnedError):
        registry.start_canary(v2.version, cohort, actor="learner", role="service", reason="gate", automatic=True)
    with pytest.raises(RegistryError, match="no canary"):
        registry.end_canary("rollback", **ALICE)

    with registry.sessions() as session:  # type: ignore[misc]
        rows = session.scalars(select(Deployment).order_by(Deployment.id)).all()
        assert [(r.alias, r.action, r.version) for r in rows if r.action != "candidate"][1:] == [
            (CANARY, "canary", v2.version), (CANARY, "canary_rollback", v2.version),
            (CANARY, "canary", v3.version), (PRODUCTION, "pin", v1.version), (PRODUCTION, "promote", v3.version),
        ]  # fmt: skip
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "canary_rollback")).one()
        assert audit.actor == "controller" and audit.details["n"] == 40 and audit.details["canary"] is True


ALICE = {"actor": "alice", "role": "operator", "reason": "try it"}


def test_unknown_version_is_a_clear_error(registry: Registry, tmp_path: Path) -> None:
    publish_bytes(registry, tmp_path, b"x", None)
    with pytest.raises(RegistryError, match="has no version 99"):
        registry.promote("99", actor="a", role="admin", reason="typo")


def test_unreachable_server_says_what_to_do(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, mlflow_tracking_uri="http://127.0.0.1:9", database_url=f"sqlite:///{tmp_path}/x.db"
    )
    with pytest.raises(RegistryError, match="fleet up"):
        Registry(settings, sessions=None).list_versions()


def _register_without_the_key(registry: Registry, model: VLAModel) -> VersionInfo:
    """What anyone who can write to MLflow can do: upload a checkpoint and register it, sha256 tag and all."""
    directory = scratch_dir()
    sha = save_checkpoint(model, directory)
    client = registry.client
    registry._ensure_model()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    run_id = client.create_run(experiment_id).info.run_id
    client.log_artifacts(run_id, str(directory), artifact_path="checkpoint")
    mv = client.create_model_version(
        registry.name, source=f"runs:/{run_id}/checkpoint", run_id=run_id, tags={"sha256": sha, "parent_version": "1"}
    )
    return registry.get_version(registry._wait_ready(mv).version)


def test_robots_load_only_versions_signed_by_the_learners_key(registry: Registry, tmp_path: Path) -> None:
    from actors.reload import HotReloader, ReloadConfig
    from actors.robot import policy_loader

    torch.manual_seed(0)
    v1 = publish_model(registry, VLAModel(debug_model_config()), parent_version=None)
    assert {"signature", "signature_key", "config_sha256"} <= set(v1.tags)
    assert registry.verify(v1).weights_sha256 == v1.sha256
    registry.promote(v1.version, actor="test", role="admin", reason="seed")
    robot = HotReloader(
        ReloadConfig(download_root=tmp_path / "robot"), registry=Registry(registry.settings, sessions=None),
        loader=policy_loader, keys=load_trusted_keys(registry.settings),
    )  # fmt: skip
    assert robot.check_once() is not None and robot.take_ready().version == v1.version  # type: ignore[union-attr]

    unsigned = _register_without_the_key(registry, VLAModel(debug_model_config()))
    foreign = publish_model(
        registry, VLAModel(debug_model_config()), parent_version="1", signing_key=Ed25519PrivateKey.generate()
    )
    for case, bad, reason in (
        ("unsigned_version", unsigned, "is unsigned"),
        ("foreign_signed_version", foreign, "signature by an untrusted key"),
    ):
        registry.promote(bad.version, actor="mallory", role="admin", reason="try it")
        loaded = robot.check_once(), robot.take_ready()
        with pytest.raises(SignatureError, match=reason):  # nor does the learner train or score on it
            registry.verify(registry.get_version(bad.version))
        record_fault(case, foreign_weights_loaded=sum(x is not None for x in loaded))
        assert loaded == (None, None)  # keeps acting on version 1
        assert reason in robot.stats.refused[bad.version], robot.stats.refused
    with pytest.raises(NoProductionModel, match="signature by an untrusted key"):  # the start-up fetch checks too
        build_robot(registry.settings, RobotConfig(robot_id="r-test", embodiment="panda", task="pick"), listen=False)

    v4 = publish_model(registry, VLAModel(debug_model_config()), parent_version=v1.version)
    registry.promote(v4.version, actor="test", role="admin", reason="signed")
    assert robot.check_once() is not None and robot.take_ready().version == v4.version  # type: ignore[union-attr]
    back = registry.rollback(v1.version, actor="test", role="admin", reason="older, still signed")
    assert robot.check_once() is not None and robot.take_ready().version == back.version == v1.version  # type: ignore[union-attr]
    assert set(robot.stats.refused) == {unsigned.version, foreign.version}
    robot.stop()


def test_publishing_again_completes_and_signs_the_same_version(registry: Registry, tmp_path: Path) -> None:
    """An attempt that registered the weights but died before signing them is finished by the next one."""
    torch.manual_seed(0)
    model = VLAModel(debug_model_config())
    half_done = _register_without_the_key(registry, model)
    with pytest.raises(SignatureError, match="unsigned"):
        registry.verify(half_done)
    again = publish_model(registry, model, parent_version=None)
    assert again.version == half_done.version and registry.verify(again).version == half_done.version
    assert registry.aliases() == {CANDIDATE: again.version}
