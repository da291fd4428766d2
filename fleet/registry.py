"""The model registry client: versioned VLA checkpoints in MLflow, aliases, pinning, rollbacks.

One registered model per fleet (`Settings.model_name`). A version is an MLflow run's `checkpoint/`
artifact (safetensors + JSON config, see `fleet.policy.checkpoint`) with lineage tags:

    sha256            sha256 of the weights file (robots verify it before loading)
    config_sha256     sha256 of config.json
    signature         Ed25519 signature of (model name, version number, both sha256s) by the publisher's key,
    signature_key     and that key's id: robots load only versions a key they trust signed (`fleet.signing`)
    parent_version    the version training started from
    data_offsets      JSON {topic: {partition: [first, last]}} of the Kafka data it saw
    correction_ids    number of corrections it trained on
    eval/<task>/<embodiment>  eval-gate success rates; eval/mean their mean
    gate_passed       "true" / "false"

Aliases `candidate` (newest published), `production` (what robots run) and, during a rollout, `canary` (what a
share of the robots runs, named by the `canary_cohort` tag on that version: `fleet.canary`). The `production_pinned`
tag of the registered model is the pin: while it is "true" nothing automatic moves production; a
rollback sets it. Publishing order guarantees nothing half-registered is served: artifacts are
uploaded first, the version is created with all its tags and then signed (the signature names its version number),
and only then does an alias point at it.
Every alias move and pin is mirrored into the DB (`model_versions`, `deployments`) and audited.

Over 400 lines because `Registry` is one MLflow client's whole contract (publish, verify, aliases, pins,
rollbacks, lineage tags) and its methods share one set of retry and tag helpers; each service sees only its slice
through `fleet.registry_views`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from fleet import signing
from fleet.audit import record_audit
from fleet.canary import CANARY, Cohort
from fleet.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fleet.transport import Transport

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
PRODUCTION = "production"
PIN_TAG = "production_pinned"
EXPERIMENT = "fleet-learner"


class RegistryError(RuntimeError):
    """The registry refused or could not be reached; the message says what to do."""


class PinnedError(RegistryError):
    """Production is pinned (after a rollback); automatic promotion is refused."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as robots, the learner and the dashboard see it."""

    version: str
    sha256: str
    parent_version: str | None
    run_id: str | None
    source: str
    created_at: float  # seconds since the epoch
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def eval_metrics(self) -> dict[str, float]:
        return {k.removeprefix("eval/"): float(v) for k, v in self.tags.items() if k.startswith("eval/")}

    @property
    def gate_passed(self) -> bool | None:
        value = self.tags.get("gate_passed")
        return None if value is None else value == "true"

    @property
    def data_offsets(self) -> dict[str, Any]:
        return json.loads(self.tags.get("data_offsets", "{}"))


def _db(settings: Settings) -> sessionmaker[Session] | None:
    from fleet.db import make_engine, session_factory

    return session_factory(make_engine(settings.db_url))


class Registry:
    """MLflow-backed registry of this fleet's VLA versions."""

    def __init__(self, settings: Settings, *, sessions: sessionmaker[Session] | None | bool = True) -> None:
        from fleet.mlflow_client import mlflow_client

        self.settings = settings
        self.name = settings.model_name
        self.client = mlflow_client(settings.tracking_uri)
        # sessions=True: the DB from settings; None/False: no DB mirror (robots don't need one).
        self.sessions: sessionmaker[Session] | None = _db(settings) if sessions is True else (sessions or None)
        self._trusted: dict[str, Any] | None = None  # signing.load_trusted_keys(settings), read on first use

    # ---- reading -------------------------------------------------------------------------------
    def _info(self, mv: Any) -> VersionInfo:
        return VersionInfo(
            version=str(mv.version),
            sha256=mv.tags.get("sha256", ""),
            parent_version=mv.tags.get("parent_version") or None,
            run_id=mv.run_id,
            source=mv.source,
            created_at=(mv.creation_timestamp or 0) / 1000.0,
            aliases=tuple(getattr(mv, "aliases", []) or []),
            tags=dict(mv.tags),
        )

    def list_versions(self) -> list[VersionInfo]:
        """Every version, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException as err:
            raise self._unreachable(err) from None
        # search results carry no aliases in MLflow 3; fill them from the alias lookups
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases().items():
            by_version.setdefault(version, []).append(alias)
        infos = (self._info(mv) for mv in found)
        return sorted(
            (replace(info, aliases=tuple(by_version.get(info.version, ()))) for info in infos),
            key=lambda v: int(v.version),
        )

    def get_version(self, version: str) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version(self.name, str(version)))
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code):
                raise RegistryError(f"model {self.name!r} has no version {version}") from None
            raise self._unreachable(err) from None

    def version_for_alias(self, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(self.name, alias))
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "INVALID_PARAMETER_VALUE" in str(err.error_code):
                return None
            raise self._unreachable(err) from None

    def aliases(self) -> dict[str, str]:
        return {
            alias: info.version
            for alias in (CANDIDATE, PRODUCTION, CANARY)
            if (info := self.version_for_alias(alias)) is not None
        }

    def is_pinned(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code):
                return False
            raise self._unreachable(err) from None
        return model.tags.get(PIN_TAG) == "true"

    def verify(self, info: VersionInfo) -> signing.SignedVersion:
        """What a trusted key signed `info` to be (SignatureError otherwise); load only files with these digests.

        The learner and evaluations check what robots check: a version signed by nobody they trust is not loaded,
        so nothing trains on or scores weights that only came from MLflow.
        """
        if self._trusted is None:
            self._trusted = signing.load_trusted_keys(self.settings)
        return signing.verify_version(self._trusted, model_name=self.name, version=info.version, tags=info.tags)

    def download(self, version: str, dest: Path | str) -> Path:
        """Download a version's checkpoint directory into `dest`; the caller verifies it (`verify`, then the files)."""
        import mlflow.artifacts

        info = self.get_version(version)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            run_id=info.run_id, artifact_path="checkpoint", dst_path=str(dest), tracking_uri=self.settings.tracking_uri
        )
        return Path(local)

    # ---- writing -------------------------------------------------------------------------------
    def publish(
        self,
        checkpoint_dir: Path | str,
        *,
        sha256: str,
        parent_version: str | None,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        set_candidate: bool = True,
        actor: str = "learner",
        signing_key: Ed25519PrivateKey | None = None,
    ) -> VersionInfo:
        """Upload a checkpoint, register it as a new version with lineage tags, sign it, point `candidate` at it.

        The signature is made with `signing_key`, by default the settings' (`fleet.signing.load_signing_key`: the
        local pair outside production), over the digests of the files in `checkpoint_dir` as they are uploaded.
        Idempotent by sha256: when a version already holds these weights (an earlier attempt registered
        it, then lost the registry before the signature or the alias), that version is completed instead of
        registering the weights twice.
        """
        from mlflow.exceptions import MlflowException

        from fleet.policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE

        signer = signing_key if signing_key is not None else signing.load_signing_key(self.settings)
        checkpoint_dir = Path(checkpoint_dir)
        if not (checkpoint_dir / WEIGHTS_FILE).is_file() or not (checkpoint_dir / CONFIG_FILE).is_file():
            raise RegistryError(f"{checkpoint_dir} is not a checkpoint: it needs {WEIGHTS_FILE} and {CONFIG_FILE}")
        weights_sha = signing.file_sha256(checkpoint_dir / WEIGHTS_FILE)
        if weights_sha != sha256.lower():
            raise RegistryError(f"{checkpoint_dir / WEIGHTS_FILE} has sha256 {weights_sha}, not the given {sha256}")
        sign = (signer, weights_sha, signing.file_sha256(checkpoint_dir / CONFIG_FILE))
        existing = self.find_sha256(weights_sha)
        if existing is not None:
            log.warning("registry: version %s already holds sha256 %s; completing it", existing.version, sha256[:12])
            return self._complete(
                existing, set_candidate=set_candidate, actor=actor, parent_version=parent_version, sign=sign
            )
        all_tags = {"sha256": weights_sha, "parent_version": parent_version or "", **(tags or {})}
        try:
            self._ensure_model()
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
            run_tags = {"fleet.kind": "publish", "fleet.parent": parent_version or ""}
            run = self.client.create_run(experiment_id, tags=run_tags)
            run_id = run.info.run_id
            for key, value in (metrics or {}).items():
                self.client.log_metric(run_id, key, float(value))
            self.client.log_artifacts(run_id, str(checkpoint_dir), artifact_path="checkpoint")
            self.client.set_terminated(run_id)
            mv = self.client.create_model_version(
                self.name, source=f"runs:/{run_id}/checkpoint", run_id=run_id, tags=all_tags
            )
            mv = self._wait_ready(mv)
        except MlflowException as err:
            raise self._unreachable(err) from None
        return self._complete(
            self.get_version(str(mv.version)), set_candidate=set_candidate, actor=actor, parent_version=parent_version,
            sign=sign,
        )  # fmt: skip

    def find_sha256(self, sha256: str) -> VersionInfo | None:
        """The version whose weights have this sha256, if any."""
        return next((v for v in self.list_versions() if v.sha256 == sha256), None)

    def _complete(
        self,
        info: VersionInfo,
        *,
        set_candidate: bool,
        actor: str,
        parent_version: str | None,
        sign: tuple[Ed25519PrivateKey, str, str],
    ) -> VersionInfo:
        """The steps after registration: signature, `candidate` alias, the fleet DB's mirror row and deployment record.

        `sign` is (key, weights sha256, config sha256) of the files this publisher uploaded: the version number is
        known only now, and no alias points at the version before it is signed.
        """
        from mlflow.exceptions import MlflowException

        key, weights_sha, config_sha = sign
        signed = signing.sign_version(
            key, model_name=self.name, version=info.version, weights_sha256=weights_sha, config_sha256=config_sha
        )
        try:
            for tag, value in signed.items():
                if info.tags.get(tag) != value:
                    self.client.set_model_version_tag(self.name, info.version, tag, value)
        except MlflowException as err:
            raise self._unreachable(err) from None
        info = self.get_version(info.version)
        if set_candidate:
            self._set_alias(CANDIDATE, info.version)
            info = self.get_version(info.version)
        self._mirror_version(info)
        if set_candidate:
            self._record_deployment(info.version, CANDIDATE, "candidate", actor=actor, role="service", reason=None)
        log.info("published", extra={"version": info.version, "parent": parent_version, "sha256": info.sha256[:12]})
        return info

    def promote(self, version: str, *, actor: str, role: str, reason: str, automatic: bool = False) -> VersionInfo:
        """Point `production` at `version`. Automatic promotions (the learner) are refused while pinned."""
        if automatic and self.is_pinned():
            raise PinnedError(f"production is pinned; not promoting version {version} automatically")
        info = self.get_version(version)
        self._set_alias(PRODUCTION, info.version)
        self._mirror_version(info)
        self._record_deployment(info.version, PRODUCTION, "promote", actor=actor, role=role, reason=reason)
        return self.get_version(info.version)

    def rollback(self, to_version: str | None = None, *, actor: str, role: str, reason: str) -> VersionInfo:
        """Point `production` at an older version (default: the one before the current) and pin it."""
        current = self.version_for_alias(PRODUCTION)
        if to_version is None:
            if current is None:
                raise RegistryError("nothing to roll back: no production version")
            to_version = self._previous_production(current.version)
        info = self.get_version(to_version)
        self._set_alias(PRODUCTION, info.version)
        self._set_pin(True)
        self._mirror_version(info)
        self._record_deployment(
            info.version, PRODUCTION, "rollback", actor=actor, role=role, reason=reason, pinned=True,
            details={"from": current.version if current else None},
        )  # fmt: skip
        return self.get_version(info.version)

    def pin(self, *, actor: str, role: str, reason: str) -> None:
        current = self.version_for_alias(PRODUCTION)
        if current is None:
            raise RegistryError("nothing to pin: no production version")
        self._set_pin(True)
        self._record_deployment(current.version, PRODUCTION, "pin", actor=actor, role=role, reason=reason, pinned=True)

    def unpin(self, *, actor: str, role: str, reason: str) -> None:
        current = self.version_for_alias(PRODUCTION)
        self._set_pin(False)
        if current is not None:
            self._record_deployment(current.version, PRODUCTION, "unpin", actor=actor, role=role, reason=reason)
        else:
            record_audit(self.sessions, actor=actor, role=role, action="unpin", target=self.name, reason=reason)

    # ---- canary --------------------------------------------------------------------------------
    def canary(self) -> tuple[VersionInfo, Cohort] | None:
        """The version on canary and the robots that run it; None when no rollout is running."""
        info = self.version_for_alias(CANARY)
        if info is None:
            return None
        cohort = Cohort.from_tags(info.tags)
        # An alias without a readable cohort joins no robot (robots read it the same way): report it as running
        # with an empty share rather than hide it, so an operator can end it.
        return info, cohort if cohort is not None else Cohort(salt=info.version, robots=("(unreadable cohort)",))

    def start_canary(
        self, version: str, cohort: Cohort, *, actor: str, role: str, reason: str, automatic: bool = False
    ) -> VersionInfo:
        """Put `version` on canary for `cohort`'s robots. The cohort is written on the version before the alias
        points at it, so no robot ever sees the alias without knowing whether it is in. One rollout at a time;
        automatic starts (the learner) are refused while production is pinned."""
        from mlflow.exceptions import MlflowException

        if automatic and self.is_pinned():
            raise PinnedError(f"production is pinned; not starting a canary of version {version} automatically")
        if cohort.salt != str(version):
            raise RegistryError(f"the cohort was drawn for version {cohort.salt}, not {version}")
        running = self.canary()
        if running is not None and running[0].version != str(version):
            raise RegistryError(f"version {running[0].version} is on canary; promote or roll it back first")
        info = self.get_version(version)
        production = self.version_for_alias(PRODUCTION)
        if production is not None and production.version == info.version:
            raise RegistryError(f"version {info.version} is already production")
        try:
            for tag, value in cohort.to_tags().items():
                self.client.set_model_version_tag(self.name, info.version, tag, value)
        except MlflowException as err:
            raise self._unreachable(err) from None
        self._set_alias(CANARY, info.version)
        self._mirror_version(info)
        self._record_deployment(
            info.version, CANARY, "canary", actor=actor, role=role, reason=reason,
            details={"cohort": asdict(cohort), "production": production.version if production else None},
        )  # fmt: skip
        return self.get_version(info.version)

    def end_canary(
        self,
        outcome: str,
        *,
        actor: str,
        role: str,
        reason: str,
        details: dict[str, Any] | None = None,
        automatic: bool = False,
    ) -> VersionInfo:
        """End the rollout: "promote" points production at the canary version (then removes the canary alias, so its
        robots never fall back to the old version in between); "rollback" removes the alias and every canary robot
        returns to production. An automatic promotion is refused while pinned; a rollback never is."""
        if outcome not in ("promote", "rollback"):
            raise RegistryError(f"a canary ends in 'promote' or 'rollback', not {outcome!r}")
        running = self.canary()
        if running is None:
            raise RegistryError("no canary is running")
        info = running[0]
        if outcome == "promote":
            if automatic and self.is_pinned():
                raise PinnedError(f"production is pinned; not promoting canary version {info.version} automatically")
            self._set_alias(PRODUCTION, info.version)
        self._delete_alias(CANARY)
        alias, action = (PRODUCTION, "promote") if outcome == "promote" else (CANARY, "canary_rollback")
        self._record_deployment(
            info.version, alias, action, actor=actor, role=role, reason=reason,
            details={"canary": True, **(details or {})},
        )  # fmt: skip
        return self.get_version(info.version)

    # ---- internals -----------------------------------------------------------------------------
    def _unreachable(self, err: Exception) -> RegistryError:
        return RegistryError(
            f"MLflow registry at {self.settings.tracking_uri} failed: {err}. "
            "Run `fleet up` or set FLEET_MLFLOW_TRACKING_URI."
        )

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" not in str(err.error_code):
                raise
            try:
                self.client.create_registered_model(self.name, tags={PIN_TAG: "false"})
            except MlflowException as again:  # created concurrently
                if "RESOURCE_ALREADY_EXISTS" not in str(again.error_code):
                    raise

    def _wait_ready(self, mv: Any, timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while str(mv.status) != "READY":
            if time.monotonic() > deadline:
                raise RegistryError(f"version {mv.version} not READY after {timeout_s:.0f} s (status {mv.status})")
            time.sleep(0.2)
            mv = self.client.get_model_version(self.name, mv.version)
        return mv

    def _set_alias(self, alias: str, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_registered_model_alias(self.name, alias, version)
        except MlflowException as err:
            raise self._unreachable(err) from None

    def _delete_alias(self, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(self.name, alias)
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" not in str(err.error_code):
                raise self._unreachable(err) from None

    def _set_pin(self, pinned: bool) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._ensure_model()
            self.client.set_registered_model_tag(self.name, PIN_TAG, "true" if pinned else "false")
        except MlflowException as err:
            raise self._unreachable(err) from None

    def _previous_production(self, current: str) -> str:
        """The production version before `current`, from the deployment history, else its parent."""
        if self.sessions is not None:
            from sqlalchemy import select

            from fleet.db.models import Deployment

            with self.sessions() as session:
                history = session.scalars(
                    select(Deployment.version)
                    .where(Deployment.alias == PRODUCTION, Deployment.action.in_(("promote", "rollback")))
                    .order_by(Deployment.id.desc())
                ).all()
            for version in history:
                if version != current:
                    return version
        parent = self.get_version(current).parent_version
        if not parent:
            raise RegistryError(f"no earlier production version than {current} to roll back to; pass --to VERSION")
        return parent

    def _mirror_version(self, info: VersionInfo) -> None:
        if self.sessions is None:
            return
        from fleet.db.models import ModelVersion

        with self.sessions.begin() as session:
            row = session.get(ModelVersion, info.version) or ModelVersion(version=info.version, sha256=info.sha256)
            row.parent_version = info.parent_version
            row.run_id = info.run_id
            row.artifact_uri = info.source
            row.sha256 = info.sha256
            row.eval_metrics = info.eval_metrics
            row.data_offsets = info.data_offsets
            row.correction_count = int(info.tags.get("correction_ids", "0") or 0)
            row.gate_passed = info.gate_passed
            session.merge(row)

    def _record_deployment(
        self,
        version: str,
        alias: str,
        action: str,
        *,
        actor: str,
        role: str,
        reason: str | None,
        pinned: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        if self.sessions is not None:
            from fleet.db.models import Deployment

            pinned = self.is_pinned() if pinned is None else pinned
            with self.sessions.begin() as session:
                session.add(
                    Deployment(alias=alias, version=version, action=action, pinned=pinned, actor=actor, reason=reason)
                )
        if action != "candidate":
            record_audit(
                self.sessions, actor=actor, role=role, action=action, target=f"{self.name} v{version}",
                reason=reason, details={"alias": alias, **(details or {})},
            )  # fmt: skip


def scratch_dir() -> Path:
    """A private temporary directory for downloads (robots verify before loading)."""
    return Path(tempfile.mkdtemp(prefix="fleet-ckpt-"))


def announce(
    settings: Settings,
    info: VersionInfo,
    *,
    event: str,
    alias: str | None,
    actor: str,
    reason: str,
    transport: Transport | None = None,
) -> bool:
    """Publish a `ModelEvent` on `fleet.models` so robots react at once (they also poll the alias). Every model
    event fleet sends goes through here.

    A long-running service passes its own long-lived `transport` (the message is queued on it; True once queued);
    without one (the CLI), a producer is made for this one message and the call waits for the broker's
    acknowledgement: False when the broker did not take it in time. Robots converge through alias polling anyway.
    """
    from fleet.schemas import ModelEvent
    from fleet.transport import KafkaTransport, TransportConfig, publish

    message = ModelEvent(
        event=event,  # type: ignore[arg-type]
        model_name=settings.model_name,
        version=str(info.version),
        alias=alias,
        artifact_uri=str(info.source),
        sha256=info.sha256,
        parent_version=info.parent_version,
        actor=actor,
        reason=reason,
        created_at=time.time(),
    )
    if transport is not None:
        return publish(transport, message)
    own = KafkaTransport(TransportConfig.from_settings(settings, client_id=f"fleet-{actor}"[:60]))
    try:
        publish(own, message)
        return own.flush(timeout_s=10.0)
    finally:
        own.close(timeout_s=5.0)


def publish_model(
    registry: Registry,
    model: Any,
    *,
    parent_version: str | None,
    tags: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    set_candidate: bool = True,
    actor: str = "learner",
    signing_key: Ed25519PrivateKey | None = None,
) -> VersionInfo:
    """Save a `VLAModel` as a verified checkpoint and publish it, signed (see `Registry.publish`)."""
    import shutil

    from fleet.policy.checkpoint import save_checkpoint

    directory = scratch_dir()
    try:
        sha = save_checkpoint(model, directory)
        return registry.publish(
            directory, sha256=sha, parent_version=parent_version, tags=tags, metrics=metrics,
            set_candidate=set_candidate, actor=actor, signing_key=signing_key,
        )  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if TYPE_CHECKING:  # the type checker holds Registry to every view of it (fleet.registry_views)
    from fleet.registry_views import LearnerRegistry, OperatorRegistry, RobotRegistry

    def _views(registry: Registry) -> tuple[RobotRegistry, LearnerRegistry, OperatorRegistry]:
        return registry, registry, registry
