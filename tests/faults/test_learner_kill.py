"""The learner SIGKILLed while training and restarted: it resumes from its checkpoint, offsets and optimizer.

`fleet learner run --preset debug` runs as a child process while a feeder streams episodes. After
its first versions it is killed with SIGKILL (it trains continuously: the kill lands in an update,
a checkpoint or a publication), started again, and runs until it has published everything. The
proof is the lineage the learner records itself: the `data_offsets` windows of all versions tile
the Kafka offsets exactly (no record in two versions = none trained twice; no gap = none skipped),
versions chain parent to child, and the AdamW step count in the last checkpoint equals the
learner's update count (the optimizer resumed).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from fleet.policy.config import debug_model_config
from fleet.registry import Registry
from fleet.settings import Settings
from learner import checkpoints
from learner.checkpoints import OPTIMIZER_DIR, LearnerState
from learner.replay import ReplayBuffer, ReplayConfig
from learner.rllib import MODULE_ID, RLlibConfig, VLALearner
from learner.service import TOPICS as LEARNER_TOPICS
from tests.faults.helpers import ChildService, Feeder, published_up_to, start_group_at_end, tiles, topic_ends, wait_for
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder, make_episode


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_learner_sigkilled_while_training_resumes_without_training_a_record_twice(
    stack: Settings, kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path, record_property: Any
) -> None:
    prefix = f"lk{uuid.uuid4().hex[:6]}"
    settings = stack.model_copy(update={"model_name": f"vla-{prefix}"})
    registry = Registry(settings, sessions=None)
    start = start_group_at_end(kafka_bootstrap, "learner", LEARNER_TOPICS)  # the group `fleet learner run` uses
    run_dir = tmp_path / "run"
    command = ["fleet", "learner", "run", "--preset", "debug", "--run-dir", str(run_dir)]
    env = {"FLEET_MODEL_NAME": settings.model_name, "FLEET_METRICS_PORT_LEARNER": "0"}
    first = ChildService(command, env=env, log_path=tmp_path / "learner-1.log")
    second = ChildService(command, env=env, log_path=tmp_path / "learner-2.log")
    feeder = Feeder(settings, prefix)
    try:
        first.start()
        feeder.start()
        wait_for(lambda: len(registry.list_versions()) >= 2 or not first.alive(), 150, "two versions")
        assert first.alive(), first.log_tail()
        time.sleep(1.0)  # it trains continuously now: the kill lands mid-update (or mid-checkpoint/publish)
        first.kill()
        killed_at = time.monotonic()
        at_kill = [checkpoints.load_state(d)[0] for d in checkpoints.list_checkpoints(run_dir / "checkpoints")]
        versions_at_kill = len(registry.list_versions())
        second.start()
        wait_for(lambda: len(registry.list_versions()) > versions_at_kill or not second.alive(), 120, "a new version")
        assert second.alive(), second.log_tail()
        resumed_s = time.monotonic() - killed_at
        feeder.stop()
        end = topic_ends(kafka_bootstrap, LEARNER_TOPICS)

        wait_for(lambda: published_up_to(run_dir, start, end), 120, "the restarted learner to publish everything fed")
        assert second.stop() == 0, second.log_tail()
    finally:
        feeder.stopping.set()
        first.kill()
        second.kill()

    versions = registry.list_versions()
    last_dir = checkpoints.list_checkpoints(run_dir / "checkpoints")[-1]
    last, _ = checkpoints.load_state(last_dir)
    fed = {tp: o for tp, o in start.items() if end[tp] > o}
    records = tiles(versions, fed, end)  # every record in exactly one version's window
    assert records == sum(end[tp] - o for tp, o in fed.items()) == feeder.episodes * 3
    assert [v.parent_version for v in versions] == [None] + [v.version for v in versions[:-1]]
    assert len({v.sha256 for v in versions}) == len(versions), "a checkpoint was registered twice"
    updates = [int(v.tags["updates"]) for v in versions]
    assert updates == sorted(set(updates)), "update counts must grow version to version"
    assert last.published_version == versions[-1].version and last.updates == updates[-1]
    steps = {float(v) for k, v in load_file(last_dir / OPTIMIZER_DIR / "optimizer.safetensors").items() if "step" in k}
    assert steps == {float(last.updates)}, "AdamW restarted instead of resuming"
    assert "resuming from" in second.log_tail(400)
    resumed_from = max(s.updates for s in at_kill)
    assert any(u > resumed_from for u in updates), "nothing trained after the restart"

    outcome = {
        "records": records,
        "episodes": feeder.episodes,
        "versions": len(versions),
        "versions_before_kill": versions_at_kill,
        "checkpoint_at_kill": {"updates": resumed_from, "published": at_kill[-1].published_version is not None},
        "final_updates": last.updates,
        "restart_to_new_version_s": round(resumed_s, 1),
    }
    record_property("outcome", outcome)
    print("OUTCOME", outcome)


@pytest.mark.timeout(120)
def test_restored_optimizer_takes_the_same_step_as_the_one_that_was_killed(tmp_path: Path) -> None:
    """The fix under the test above: before, a restart rebuilt AdamW cold and the next step differed."""
    torch.set_num_threads(1)
    config = debug_model_config(text_encoder=FAKE_ENCODER)
    replay = ReplayBuffer(ReplayConfig(capacity=1_000, horizon=60), config, embedder=HashEmbedder())
    for seed in range(3):
        replay.add_episode(make_episode(seed=seed, length=16))
    rng = np.random.default_rng(0)
    original = VLALearner(RLlibConfig(), model_config=config)
    for _ in range(5):
        original.update(replay.sample(8, rng))
    state = LearnerState(5, {}, {}, 0, 0, None)
    directory, _ = checkpoints.save(
        tmp_path, original.to_model(), state, [], learners=original.group, module_id=MODULE_ID
    )

    weights = original.get_state_dict()
    restored, cold = (VLALearner(RLlibConfig(), model_config=config) for _ in range(2))
    for engine in (restored, cold):
        engine.set_state_dict(weights)
    assert checkpoints.load_optimizers(restored.group, directory, module_id=MODULE_ID)
    batch = replay.sample(8, rng)
    after = []
    for engine in (original, restored, cold):
        torch.manual_seed(7)  # same flow-matching noise for all three
        engine.update(batch)
        after.append(engine.get_state_dict())
    for engine in (original, restored, cold):
        engine.shutdown()
    assert all(torch.equal(after[0][k], after[1][k]) for k in weights), "restored learner stepped differently"
    assert not all(torch.allclose(after[0][k], after[2][k]) for k in weights)  # what a cold AdamW did before
