"""The learner service against the real stack: consume → update → gated version with lineage; kill + resume.

Real Kafka and MLflow (fixtures in tests/conftest.py); the debug preset with a tiny model, a hash
instruction embedder and a one-episode gate keeps the whole test within ~2 minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch

from fleet.policy.checkpoint import checkpoint_sha256, load_checkpoint
from fleet.policy.config import debug_model_config
from fleet.registry import PRODUCTION, Registry, VersionInfo
from fleet.settings import Settings
from fleet.stack.launcher import migrate_database
from fleet.transport import KafkaTransport, TransportConfig, publish
from learner import checkpoints
from learner.config import get_preset
from learner.evaluator import Pending
from learner.gate import SEED_BLOCK
from learner.rllib import MODULE_ID
from learner.service import LearnerService
from tests.faults.record import record_fault
from tests.learner.fakes import correction, segments
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
T = TypeVar("T")


def _produce(settings: Settings, robots: list[str], tag: str) -> None:
    transport = KafkaTransport(TransportConfig.from_settings(settings, client_id="learner-test"))
    try:
        for i, robot in enumerate(robots):
            episode = f"{tag}-{robot}"
            for segment in segments(robot, episode, lengths=(5, 5), intervention=(2, 4), success=i % 2 == 0, seed=i):
                publish(transport, segment)
            publish(transport, correction(robot, episode, f"c-{episode}", 2, 2))
        assert transport.flush(timeout_s=30.0)
    finally:
        transport.close()


def _settled(call: Callable[[], T], deadline_s: float = 120.0) -> T:
    """`call()` once the evaluator's worker has the scores it needs (it raises `Pending` until then)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return call()
        except Pending:
            assert time.monotonic() < deadline, "the evaluator never finished"
            time.sleep(0.2)


def _run_until_published(service: LearnerService, deadline_s: float) -> VersionInfo:
    deadline = time.monotonic() + deadline_s
    while not service.published:
        assert time.monotonic() < deadline, f"no version published; replay {service.replay.sizes()}"
        service.step()
    return service.published[0]


def _spans(info: VersionInfo) -> dict[tuple[str, str], list[int]]:
    return {(t, p): span for t, parts in info.data_offsets.items() for p, span in parts.items()}


def test_learner_publishes_lineage_and_resumes_without_retraining(
    stack: Settings, kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    suffix = uuid.uuid4().hex[:8]
    settings = stack.model_copy(update={"model_name": f"vla-learner-{suffix}"})
    migrate_database(settings)
    config = dataclasses.replace(
        get_preset("debug"),
        model=debug_model_config(text_encoder=FAKE_ENCODER),
        run_dir=tmp_path / "run",
        group_id=f"learner-{suffix}",  # a fresh group: reads the topics from the start
        rllib=dataclasses.replace(get_preset("debug").rllib, ema_decay=0.9),  # publishes the weights' average
        restart_after_regressions=2,
        gate=dataclasses.replace(get_preset("debug").gate, confirm_episodes=1),
        evaluator_process=True,  # the product's evaluator worker, not the debug preset's inline gate
        # One poll takes everything produced before the start, corrections included, so the first version's window
        # holds them however fast the updates run.
        max_poll_records=100_000,
    )
    robots = [f"robot-{suffix}-{i}" for i in range(4)]
    _produce(settings, robots, "a")

    first = LearnerService(config, settings=settings, embedder_factory=HashEmbedder)
    try:
        v1 = _run_until_published(first, 120)
    finally:
        first.close()  # killed: whatever it consumed after v1 is not in any checkpoint

    registry = Registry(settings)
    logged = registry.client.get_run(first.metrics.run_id).data.metrics  # what the dashboard's Training page reads
    assert logged["charts/updates_per_s"] > 0 and logged["charts/samples_per_s"] >= logged["charts/updates_per_s"]
    assert "losses/action" in logged
    v1 = registry.get_version(v1.version)
    tags = v1.tags
    assert tags["gate_passed"] == "true" and "eval/pick/panda" in tags and "eval/mean" in tags
    assert int(tags["correction_ids"]) >= 1 and v1.sha256 and v1.data_offsets
    assert registry.aliases() == {"candidate": v1.version, PRODUCTION: v1.version}  # no production before: promoted

    _produce(settings, robots, "b")
    second = LearnerService(config, settings=settings, embedder_factory=HashEmbedder)
    try:
        assert second.state.updates == int(tags["updates"])  # resumed from v1's checkpoint
        # ... training on from its raw weights, averaging on from the published ones (what v1 is)
        resumed = checkpoints.list_checkpoints(config.run_dir / "checkpoints")[-1]
        raw = checkpoints.training_weights(resumed)
        assert raw is not None and checkpoint_sha256(resumed / checkpoints.MODEL_DIR) == v1.sha256
        published = load_checkpoint(resumed / checkpoints.MODEL_DIR).state_dict()
        engine_raw, engine_average = second.engine.get_state_dict(), second.engine.get_ema_state_dict()
        assert all(torch.equal(engine_raw[k], v) for k, v in raw.state_dict().items())
        assert all(torch.equal(engine_average[k], v) for k, v in published.items())
        assert any(not torch.equal(engine_raw[k], published[k]) for k in published)
        v2 = _run_until_published(second, 120)
        # The confirmation stage: a candidate that beat production on the gate's episodes (forged here: 1.0
        # against 0.0) is scored on other episodes, and so is production; there it must beat production too
        # (the debug gate's 8-step episodes all fail: both score 0, a tie, which keeps production).
        ckpt = checkpoints.list_checkpoints(config.run_dir / "checkpoints")[-1]
        state, _ = checkpoints.load_state(ckpt)
        assert "confirm/mean" not in state.gate
        assert not _settled(lambda: second.judge.confirmed(ckpt, state, 1.0, 0.0, registry.get_version(v1.version)))
        assert float(state.gate["confirm/mean"]) == 0.0 and "confirm/pick/panda" in state.gate
        assert checkpoints.load_state(ckpt)[0].gate["confirm/mean"] == state.gate["confirm/mean"]  # kept
        second.judge.production_scores[(v1.version, "confirm/mean")] = -1.0  # a worse production: confirmed
        assert second.judge.confirmed(ckpt, state, 1.0, 0.0, registry.get_version(v1.version))
        # On the confirmation's fresh episodes "better" is enough: not the gate's margin again, unless asked for.
        second.judge.production_scores[(v1.version, "confirm/mean")] = -0.03
        margins = {"min_improvement": 0.05}
        for confirm_improvement, confirmed in ((0.0, True), (0.05, False)):
            gate = dataclasses.replace(config.gate, confirm_improvement=confirm_improvement, **margins)
            second.judge.config = dataclasses.replace(config, gate=gate)
            assert second.judge.confirmed(ckpt, state, 1.0, 0.0, registry.get_version(v1.version)) is confirmed
        second.judge.config = config
        # The safety rail (restart_after_regressions=2): a version at production's score is not a regression;
        # after two in a row below it, training goes on from production's weights with a cold optimizer.
        production = registry.version_for_alias(PRODUCTION)
        second.engine.update(second.replay.sample(config.batch_size, second.rng))
        second._restart_if_regressing(0.5, 0.6, production)
        second._restart_if_regressing(0.6, 0.6, production)
        second._restart_if_regressing(0.5, 0.6, production)
        assert second.regressions == 1 and second.state.parent_version == v2.version
        second._restart_if_regressing(0.5, 0.6, production)
        assert second.regressions == 0 and second.state.parent_version == v1.version
        restarted = second.engine.get_state_dict()
        assert all(torch.equal(restarted[k], v) for k, v in published.items())  # v1's weights
        optimizers = second.engine._each_learner(lambda lr: lr.get_optimizers_for_module(MODULE_ID)[0][1].state)
        assert optimizers == [{}]
    finally:
        second.close()
    v2 = registry.get_version(v2.version)
    assert v2.parent_version == v1.version
    assert int(v2.tags["updates"]) > int(tags["updates"])
    assert v2.tags["gate_passed"] == "false"  # equal eval/mean does not beat production
    # v2 and v1 were scored on the seed block named by production v1, not the block v1 was promoted on.
    block_offset = config.gate.seed_offset + 2 * SEED_BLOCK * int(v1.version)
    assert json.loads(v2.tags["gate_config"])["seed_offset"] == block_offset
    assert json.loads(v1.tags["gate_config"])["seed_offset"] == config.gate.seed_offset
    assert (v1.version, "eval/mean") in second.judge.production_scores
    assert registry.aliases()[PRODUCTION] == v1.version

    # The two versions' data: contiguous and non-overlapping on every partition both saw.
    one, two = _spans(v1), _spans(v2)
    for key in one.keys() & two.keys():
        assert two[key][0] == one[key][1] + 1, (key, one[key], two[key])
    assert two, "the restarted learner consumed nothing new"
    assert json.loads(v2.tags["data_offsets"]) == v2.data_offsets

    # A torn newest checkpoint (v2's): the learner resumes from the one before it and re-reads the stream from
    # that checkpoint's offsets, although the group committed v2's (the records v2 trained on are trained again).
    run = config.run_dir / "checkpoints"
    newest, before = checkpoints.list_checkpoints(run)[-1], checkpoints.list_checkpoints(run)[-2]
    newest_state, before_state = checkpoints.load_state(newest)[0], checkpoints.load_state(before)[0]
    assert newest_state.offsets != before_state.offsets
    (newest / checkpoints.STATE_FILE).write_text('{"updates": ')  # a power loss mid-write
    third = LearnerService(config, settings=settings, embedder_factory=HashEmbedder)
    try:
        assert third.state.updates == before_state.updates and (run / f"broken-{newest.name}").is_dir()
        deadline = time.monotonic() + 60
        reread: list[tuple[str, str, int]] = []
        while third.state.offsets != newest_state.offsets:
            assert time.monotonic() < deadline, f"re-read up to {third.state.offsets}, not {newest_state.offsets}"
            records = third.loop.poll()  # consume only: no updates needed
            third._consume(records)
            reread += [(record.topic, str(record.partition), record.offset) for record in records]
    finally:
        third.close()
    torn_window = {
        (topic, partition, offset)
        for topic, ends in newest_state.offsets.items()
        for partition, end in ends.items()
        for offset in range(before_state.offsets.get(topic, {}).get(partition, end), end)
    }
    lost, twice = len(torn_window - set(reread)), len(reread) - len(set(reread))
    record_fault("torn_checkpoint", lost=lost, duplicated=twice, records_reread=len(reread))
    assert torn_window and lost == 0 and twice == 0
