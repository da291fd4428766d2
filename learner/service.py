"""The central learner: fleet stream → replay → RLlib updates → checkpoint → eval gate → registry version.

Run with `fleet learner run --preset debug` (see `learner.cli`), or `main(get_preset("default"))`.

One loop, top to bottom (`LearnerService.step`): poll the `learner` consumer group on
trajectories, corrections, rewards and reviews; hand each message to `Ingest` (episodes into
replay); do `updates_per_poll` RLlib updates once replay holds `min_replay` steps; every
`checkpoint_every_updates` updates or `checkpoint_every_s` seconds (with new data) write a
checkpoint with the consumed offsets, commit those offsets to Kafka, run the eval gate, publish a
version (tags: parent_version, data_offsets, correction_ids, eval/…, gate_passed; alias
`candidate`), promote it to `production` if it beats production (`learner.judge`: the gate and its
confirmation, on episodes that move to a fresh seed block each time production changes; never while pinned), and
announce both on `fleet.models`. The gate's episodes run in the evaluator's worker process (`learner.evaluator`):
the publication waits for its scores while the updates go on. Training curves go to MLflow (`learner.metrics`). After
`restart_after_regressions` versions in a row scored below production on the gate (by more than its margin),
training goes on from production's weights. A restart loads the newest checkpoint (weights, AdamW state,
offsets), skips every record below its offsets, re-handles what was still waiting, and publishes the
checkpoint first if the crash came before that.

Publishing never stops training: when the registry is unreachable the checkpoint waits (one at a
time: no new checkpoint is taken until it is published, so its data window stays exact) and is
retried with backoff (2 s doubling to 15 s, each failure logged). `Registry.publish` is idempotent by
sha256: a version an interrupted attempt already registered is completed, never registered twice.

Over 400 lines because the loop, publication and the restart rail are each a few methods on one service's state;
the gate (`learner.judge`), its evaluator and the curves (`learner.metrics`) live apart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fleet import observability
from fleet.canary import CANARY, Cohort
from fleet.naming import version_number
from fleet.policy.checkpoint import load_checkpoint
from fleet.policy.language import InstructionEmbedder, default_embedder
from fleet.policy.model import VLAModel
from fleet.registry import PRODUCTION, PinnedError, Registry, RegistryError, VersionInfo, announce
from fleet.registry_views import LearnerRegistry
from fleet.schemas import Message, SchemaError
from fleet.settings import Settings, get_settings
from fleet.transport import (
    CORRECTIONS,
    REVIEWS,
    REWARDS,
    TRAJECTORIES,
    KafkaTransport,
    MessageLoop,
    Record,
    Rejected,
    Transport,
    TransportConfig,
    ensure_topics,
)
from learner import checkpoints
from learner.checkpoints import MODEL_DIR, LearnerState
from learner.config import LearnerConfig
from learner.evaluator import EmbedderFactory, Evaluator, Pending
from learner.features import FrozenFeatures
from learner.ingest import Ingest
from learner.judge import Judge
from learner.metrics import Throughput, TrainingRun
from learner.replay import ReplayBuffer
from learner.rllib import MODULE_ID, TrainingStats, VLALearner

log = logging.getLogger(__name__)
TOPICS = (TRAJECTORIES, CORRECTIONS, REWARDS, REVIEWS)
RETRY_BASE_S, RETRY_MAX_S = 2.0, 15.0  # backoff of publication retries while MLflow is down
PENDING_POLL_S = 1.0  # how often a publication waiting on the evaluator looks again


class LearnerService:
    """State and loop of one learner process (see the module docstring)."""

    def __init__(
        self,
        config: LearnerConfig,
        *,
        settings: Settings,
        embedder_factory: EmbedderFactory = default_embedder,
        transport: Transport | None = None,
        registry: LearnerRegistry | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.embedder: InstructionEmbedder = embedder_factory()
        # The gate's episodes run in the evaluator's worker process (it builds its own embedder from the factory).
        self.evaluator = Evaluator(
            embedder_factory, process=config.evaluator_process, niceness=config.evaluator_niceness
        )
        if transport is None:
            transport_config = TransportConfig.from_settings(settings, client_id="fleet-learner")
            ensure_topics(transport_config)
            transport = KafkaTransport(transport_config, create_topics=False)
        self.transport = transport
        self.registry = registry or Registry(settings)
        self.root = (config.run_dir or settings.home / "learner" / config.name) / "checkpoints"
        self.judge = Judge(
            config, evaluator=self.evaluator, registry=self.registry, versions_dir=self.root.parent / "versions"
        )
        self.rng = np.random.default_rng(config.seed)
        self.last_stats: TrainingStats | None = None
        self.published: list[VersionInfo] = []

        model, training, self.state, pending, resumed = self._restore()
        self.engine = VLALearner(config.rllib, model_config=model.config)
        # Training goes on from the raw weights; the moving average (if any) from the published ones.
        self.engine.set_state_dict((training or model).state_dict(), ema=model.state_dict())
        if resumed is not None and not checkpoints.load_optimizers(self.engine.group, resumed, module_id=MODULE_ID):
            log.warning("learner: %s has no optimizer state (an older checkpoint); AdamW starts fresh", resumed)
        # A frozen part's output is cached per step at ingest (from the weights training starts from, whose frozen
        # part never changes): the updates then skip that part (see learner/features.py).
        freeze = config.rllib.freeze
        self.features = FrozenFeatures(training or model, freeze) if freeze != "none" else None
        self.replay = ReplayBuffer(config.replay, model.config, embedder=self.embedder, features=self.features)
        self.ingest = Ingest(self.replay)
        self._load_demos()
        for message in pending:
            self.ingest.handle(message)
        self.window: dict[str, dict[str, list[int]]] = {}
        self._since_ckpt = 0
        self._ckpt_time = time.monotonic()
        self.throughput = Throughput()
        self.metrics = TrainingRun(settings.tracking_uri, preset=config.name)  # curves on the Training page
        # Checkpoint waiting to be published, and the retry schedule while the registry is unreachable.
        self._unpublished: Path | None = None
        self._publish_failures, self._publish_at = 0, 0.0
        self.regressions = 0  # versions in a row below production on the gate (see `restart_after_regressions`)
        self.canary_version: str | None = None  # the version this learner put on canary, until the rollout ends
        if resumed is not None and self.state.published_version is None:  # crashed before publishing: do it first
            self._unpublished = resumed
            self._try_publish()
        # No commit here (the group is not joined yet). The checkpoint's offsets are where reading starts, whatever
        # the group committed: ahead of them (a torn newest checkpoint fell back to this one) they rewind the
        # consumer; behind them (a commit lost in a crash, a rebalance that hands a partition back) `_consume`
        # skips what this checkpoint already has. Offsets are committed with the checkpoint, not per batch.
        start_at = {(t, int(p)): o for t, parts in self.state.offsets.items() for p, o in parts.items()}
        self.loop = MessageLoop(
            self.transport, group_id=config.group_id, topics=TOPICS, handler=self._ingest, start_at=start_at,
            poll_timeout_s=config.poll_timeout_s, max_records=config.max_poll_records, commit_each_batch=False,
        )  # fmt: skip

    # --- start-up --------------------------------------------------------------------------------

    def _restore(self) -> tuple[VLAModel, VLAModel | None, LearnerState, list, Path | None]:  # type: ignore[type-arg]
        """Model (and raw training weights, when the model is their moving average), state and waiting messages to
        start from, and the checkpoint they came from (None: fresh)."""
        resumed = checkpoints.restore(self.root)  # the newest one that reads back whole
        if resumed is not None:
            state = resumed.state
            if state.published_version is not None:  # the next version descends from this one
                state.parent_version = state.published_version
            log.info(
                "learner: resuming from %s (update %d, offsets %s)", resumed.directory, state.updates, state.offsets
            )
            return resumed.model, resumed.training, state, resumed.pending, resumed.directory
        parent: str | None = None
        model: VLAModel | None = None
        if self.config.init == "production":
            info = self.registry.version_for_alias(PRODUCTION)
            if info is not None:
                model, parent = self.judge.load_version(info), info.version
                log.info("learner: starting from production version %s", info.version, extra={"version": info.version})
        elif self.config.init != "scratch":
            model = load_checkpoint(self.config.init)
        if model is None:
            torch.manual_seed(self.config.seed)
            model = VLAModel(self.config.model)
            log.info("learner: starting from a fresh %s model", self.config.name)
        return model, None, LearnerState(0, {}, {}, 0, 0, parent_version=parent), [], None

    def _load_demos(self) -> None:
        root = self.config.demos if self.config.demos is not None else self.settings.episode_store
        if not self.config.load_demos or not Path(root).is_dir():
            return
        count = self.replay.add_demos(root, limit=self.config.max_demo_episodes)
        log.info("learner: %d demonstration episodes loaded from %s", count, root)

    # --- the loop --------------------------------------------------------------------------------

    def run(self, stop: Callable[[], bool]) -> None:
        while not stop():
            self.step()

    def step(self) -> None:
        """One poll, its updates, and a checkpoint + publish when one is due."""
        self._consume(self.loop.poll())
        if len(self.replay) >= self.config.min_replay:
            for _ in range(self.config.updates_per_poll):
                self.throughput.start()
                self.last_stats = self.engine.update(self.replay.sample(self.config.batch_size, self.rng))
                self.throughput.count(self.last_stats.batch_size)
                self.state.updates += 1
                observability.LEARNER_UPDATES.inc()
                self._since_ckpt += 1
                if self.state.updates % self.config.log_every == 0:
                    rates = self.throughput.rates()
                    observability.LEARNER_UPDATE_RATE.set(rates["charts/updates_per_s"])
                    extra = {f"charts/replay_{k}": float(v) for k, v in self.replay.sizes().items()}
                    self.metrics.log({**self.last_stats.to_log_dict(), **rates, **extra}, step=self.state.updates)
        if self._unpublished is not None:
            self._try_publish()
        elif self._checkpoint_due():
            self.checkpoint_and_publish()

    def _consume(self, records: Sequence[Record]) -> None:
        """Ingest what no checkpoint has yet (dead-lettering what ingest refuses) and note how far each partition is
        read: the offsets the next checkpoint holds."""
        fresh = [r for r in records if r.offset >= self.state.offsets.get(r.topic, {}).get(str(r.partition), -1)]
        self.loop.process(fresh)  # never trained twice
        for record in fresh:
            partition = str(record.partition)
            self.state.offsets.setdefault(record.topic, {})[partition] = record.offset + 1
            span = self.window.setdefault(record.topic, {}).setdefault(partition, [record.offset, record.offset])
            span[0], span[1] = min(span[0], record.offset), max(span[1], record.offset)

    def _ingest(self, message: Message, record: Record) -> None:
        try:
            self.ingest.handle(message)
        except SchemaError:
            raise
        except Exception as e:  # a valid message ingest cannot take must not stop the learner: park it with why
            log.exception("learner: cannot ingest %s/%d@%d", record.topic, record.partition, record.offset)
            raise Rejected(f"learner could not ingest it: {type(e).__name__}: {e}", "episode_rejected") from e
        observability.LEARNER_INGESTED.labels(record.topic).inc()

    def _checkpoint_due(self) -> bool:
        if self._since_ckpt == 0 or (self.config.require_new_data and not self.window):
            return False
        elapsed = time.monotonic() - self._ckpt_time
        return self._since_ckpt >= self.config.checkpoint_every_updates or elapsed >= self.config.checkpoint_every_s

    def checkpoint_and_publish(self) -> VersionInfo | None:
        """Checkpoint (weights + optimizer + offsets + waiting messages), commit the offsets, then gate and
        publish; None when the registry is unreachable (the publication is retried from `step`)."""
        if self._unpublished is not None:  # the waiting checkpoint goes first: its data window must be published
            return self._try_publish()
        model = self.engine.to_model(ema=True)  # the moving average when `ema_decay` > 0, else the raw weights
        self.state = dataclasses.replace(
            self.state,
            window=self.window,
            correction_ids=len(self.ingest.corrections_seen),
            episodes=self.ingest.episodes_added,
            published_version=None,
            gate={},
            gate_signature="",
            created_at=time.time(),
        )
        directory, _ = checkpoints.save(
            self.root,
            model,
            self.state,
            self.ingest.pending_messages(),
            learners=self.engine.group,
            module_id=MODULE_ID,
            training=self.engine.to_model() if self.config.rllib.ema_decay > 0 else None,
        )
        self.window, self._since_ckpt, self._ckpt_time = {}, 0, time.monotonic()
        self.ingest.reset_window()
        self.ingest.episodes_added = 0
        self._commit()
        self._unpublished, self._publish_failures, self._publish_at = directory, 0, 0.0
        return self._try_publish()

    def _try_publish(self) -> VersionInfo | None:
        """Publish the waiting checkpoint when its retry is due; on failure log and schedule the next try."""
        directory = self._unpublished
        if directory is None or time.monotonic() < self._publish_at:
            return None
        try:
            info = self._publish(directory)
        except Pending:  # the evaluator is scoring for it: train on, look again shortly
            self._publish_at = time.monotonic() + PENDING_POLL_S
            return None
        except Exception as e:  # registry/artifact store down or refusing: training goes on, publication waits
            self._publish_failures += 1
            delay = min(RETRY_BASE_S * 2 ** (self._publish_failures - 1), RETRY_MAX_S)
            self._publish_at = time.monotonic() + delay
            log.warning(
                "learner: publishing %s failed (attempt %d: %s: %s); retrying in %.0f s, training continues",
                directory.name, self._publish_failures, type(e).__name__, e, delay,
            )  # fmt: skip
            return None
        if self._publish_failures:
            log.info("learner: %s published as version %s after %d failed attempts", directory.name,
                     info.version, self._publish_failures)  # fmt: skip
        self._unpublished, self._publish_failures = None, 0
        return info

    def _commit(self) -> None:
        """Commit the checkpoint's offsets (Kafka then agrees with the checkpoint; the checkpoint wins on restart)."""
        if not self.transport.flush(timeout_s=30.0):
            log.warning("learner: dead letters not yet acknowledged; committing anyway (they are spooled)")
        marks = [
            Record(topic, int(partition), offset - 1, None, b"")
            for topic, parts in self.state.offsets.items()
            for partition, offset in parts.items()
        ]
        try:  # the checkpoint holds the truth; a failed commit only means more skipping later
            self.loop.commit(marks)
        except Exception as e:  # noqa: BLE001 - a broken connection (not a KafkaError) does not stop the learner
            log.warning("learner: offset commit failed (%s); the checkpoint's offsets still apply on restart", e)

    def _publish(self, directory: Path) -> VersionInfo:
        state, _ = checkpoints.load_state(directory)
        production = self.registry.version_for_alias(PRODUCTION)
        self._after_canary(production)
        verdict = self.judge.judge(directory, state, production)
        mean, production_mean, passed = verdict.mean, verdict.production_mean, verdict.passed
        tags = {
            "data_offsets": json.dumps(state.window, sort_keys=True),
            "correction_ids": str(state.correction_ids),
            "episodes": str(state.episodes),
            "updates": str(state.updates),
            "learner_preset": self.config.name,
            "gate_config": verdict.signature,
            "gate_passed": "true" if passed else "false",
            **state.gate,
        }
        metrics = {k: float(v) for k, v in state.gate.items()}
        if self.last_stats is not None:
            metrics.update(self.last_stats.to_log_dict())
        sha = checkpoints_sha(directory)
        # Idempotent by sha256: an interrupted attempt that registered these weights is completed, not repeated.
        info = self.registry.publish(
            directory / MODEL_DIR, sha256=sha, parent_version=state.parent_version, tags=tags, metrics=metrics
        )
        state.published_version = info.version
        checkpoints.write_state(directory, state)
        self.state.parent_version = info.version
        self.published.append(info)
        reason = f"eval/mean {mean:.3f} (production {production_mean})"
        observability.LEARNER_VERSIONS.labels("passed" if passed else "failed").inc()
        if (number := version_number(info.version)) is not None:
            observability.LEARNER_VERSION.set(number)
        log.info(
            "learner: published version %s (%s, gate %s)", info.version, reason, "passed" if passed else "failed",
            extra={"version": info.version, "parent_version": state.parent_version, "gate_passed": passed},
        )  # fmt: skip
        announce(
            self.settings, info, event="registered", alias="candidate", actor="learner", reason=reason,
            transport=self.transport,
        )  # fmt: skip
        if passed and self.config.promote:
            try:
                self._deploy(info, reason)
            except (PinnedError, RegistryError) as e:
                log.warning("learner: %s; version %s stays candidate", e, info.version)
        self._restart_if_regressing(mean, production_mean, production)
        return info

    def _deploy(self, info: VersionInfo, reason: str) -> None:
        """A version that beat production: straight to production, or with `canary_fraction` to a canary of that
        share of the robots in replay first (the canary controller then decides on the fleet's own episodes)."""
        if not self.config.canary_fraction:
            self.registry.promote(info.version, actor="learner", role="service", reason=reason, automatic=True)
            announce(
                self.settings, info, event="promoted", alias=PRODUCTION, actor="learner", reason=reason,
                transport=self.transport,
            )  # fmt: skip
            return
        running = self.registry.canary()
        if running is not None:
            raise RegistryError(f"version {running[0].version} is still on canary")
        cohort = Cohort.for_fleet(info.version, fraction=self.config.canary_fraction, known=self.replay.fleet_robots())
        self.registry.start_canary(info.version, cohort, actor="learner", role="service", reason=reason, automatic=True)
        self.canary_version = info.version
        announce(self.settings, info, event="canary_started", alias=CANARY, actor="learner", reason=reason)

    def _restart_if_regressing(
        self, mean: float, production_mean: float | None, production: VersionInfo | None
    ) -> None:
        """The safety rail: after `restart_after_regressions` versions in a row scored more than the gate's margin
        below production, training goes on from production's weights (and a cold optimizer), not further down."""
        limit = self.config.restart_after_regressions
        if not limit or production is None or production_mean is None:
            return
        if mean >= production_mean - self.config.gate.min_improvement:
            self.regressions = 0
            return
        self.regressions += 1
        if self.regressions < limit:
            return
        why = f"{self.regressions} versions in a row scored below it ({production_mean:.3f}, last {mean:.3f})"
        if self._restart_from(production, why):
            self.regressions = 0

    def _after_canary(self, production: VersionInfo | None) -> None:
        """What the fleet showed of this learner's last canary. Rolled back (no longer on canary, and not production)
        means the weights training moved to act worse on the robots than the gate said: training goes on from
        production's weights, as after repeated gate regressions."""
        if self.canary_version is None:
            return
        running = self.registry.canary()
        if running is not None and running[0].version == self.canary_version:
            return
        version, self.canary_version = self.canary_version, None
        if production is not None and production.version != version:
            self._restart_from(production, f"its canary v{version} was rolled back")

    def _restart_from(self, production: VersionInfo, why: str) -> bool:
        """Load production's weights into training with a cold optimizer; False (logged) when they do not fit."""
        try:
            model = self.judge.load_version(production)
            if model.config != self.engine.model_config:
                raise ValueError("its architecture differs from the learner's")
            if self.features is not None and not self.features.matches(model):
                raise ValueError(f"its frozen {self.features.freeze} differs from the one replay's features came from")
        except Exception as e:  # the rail must not stop training: the next regression tries again
            log.warning("learner: cannot restart from production v%s (%s)", production.version, e)
            return False
        self.engine.set_state_dict(model.state_dict())
        self.engine.reset_optimizer()
        self.state.parent_version = production.version
        observability.LEARNER_RESTARTS.inc()
        log.warning(
            "learner: %s; training restarts from production v%s", why, production.version,
            extra={"version": production.version, "updates": self.state.updates},
        )  # fmt: skip
        return True

    def close(self) -> None:
        self.evaluator.close()
        self.loop.close()
        self.metrics.close()
        self.engine.shutdown()
        self.transport.close()


def checkpoints_sha(directory: Path) -> str:
    from fleet.policy.checkpoint import checkpoint_sha256

    return checkpoint_sha256(directory / MODEL_DIR)


def main(config: LearnerConfig, *, stop: Callable[[], bool] | None = None) -> None:
    """Run the learner until `stop()` (or SIGINT / SIGTERM)."""
    import signal
    import threading

    torch.set_num_threads(config.torch_threads)
    stopping = threading.Event()
    if stop is None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
    service = LearnerService(config, settings=get_settings())
    try:
        service.run(lambda: stopping.is_set() or (stop is not None and stop()))
    finally:
        service.close()
