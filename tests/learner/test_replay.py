"""Replay: mixing ratios, interventions in both buffers, RECAP returns, AWR weights, reviews, FIFO bounds."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from fleet.episodes import EpisodeStore
from fleet.policy.config import debug_model_config
from fleet.policy.data import recap_returns
from fleet.policy.model import VLAModel
from fleet.schemas import Review, RewardSignal
from learner.features import FrozenFeatures
from learner.ingest import Ingest
from learner.replay import AUTONOMOUS, DEMO, INTERVENTION, ReplayBuffer, ReplayConfig, sample_weights
from tests.learner.fakes import correction, segments
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder, make_episode

MODEL = debug_model_config(text_encoder=FAKE_ENCODER)


def _replay(**changes: object) -> tuple[ReplayBuffer, Ingest]:
    replay = ReplayBuffer(ReplayConfig(**changes), MODEL, embedder=HashEmbedder())  # type: ignore[arg-type]
    return replay, Ingest(replay)


def _feed(ingest: Ingest, messages: list) -> None:  # type: ignore[type-arg]
    for m in messages:
        ingest.handle(m)


def test_batches_mix_online_and_offline_half_and_half() -> None:
    replay, ingest = _replay(online_fraction=0.5)
    replay.add_episode(make_episode(length=20, seed=0))
    _feed(ingest, segments("r1", "e1", lengths=(10, 10), intervention=(4, 8)))
    assert replay.sizes() == {"demo": 20, "online": 20, "intervention": 4}
    kinds = np.concatenate([replay.sample(64, np.random.default_rng(i))["kind"] for i in range(20)])
    assert np.mean(kinds == DEMO) == pytest.approx(0.5 * 20 / 24, abs=0.06)  # offline half: uniform demo ∪ interv.
    assert np.mean(kinds == AUTONOMOUS) == pytest.approx(0.5 * 16 / 20, abs=0.06)  # online half: 4/20 are interv.
    counts = replay.counts_for(64, np.random.default_rng(0))
    assert counts["online"] == 32 and counts["demo"] + counts["intervention"] == 32


def test_corrections_only_replay_never_samples_autonomous_steps() -> None:
    replay, ingest = _replay(autonomous=False)
    replay.add_episode(make_episode(length=20, seed=0))
    _feed(ingest, segments("r1", "e1", lengths=(10, 10), intervention=(4, 8)))
    assert replay.sizes() == {"demo": 20, "online": 4, "intervention": 4}
    kinds = np.concatenate([replay.sample(64, np.random.default_rng(i))["kind"] for i in range(10)])
    assert AUTONOMOUS not in set(kinds.tolist()) and INTERVENTION in set(kinds.tolist())
    _feed(ingest, [correction("r1", "e1", "c9", 12, 2)])  # a late correction joins both buffers
    assert replay.sizes() == {"demo": 20, "online": 6, "intervention": 6}


def test_fixed_intervention_share_and_empty_sources() -> None:
    replay, ingest = _replay(intervention_fraction=0.5, online_fraction=0.25)
    _feed(ingest, segments("r1", "e1", intervention=(0, 3)))
    assert replay.counts_for(16, np.random.default_rng(0)) == {"online": 4, "intervention": 12, "demo": 0}
    replay.add_episode(make_episode(length=8, seed=1))
    assert replay.counts_for(16, np.random.default_rng(0)) == {"online": 4, "intervention": 6, "demo": 6}
    only_demos, _ = _replay()
    only_demos.add_episode(make_episode(length=8))
    assert only_demos.counts_for(8, np.random.default_rng(0)) == {"online": 0, "intervention": 0, "demo": 8}


def test_segments_assemble_in_any_order_with_provenance_and_returns() -> None:
    replay, ingest = _replay(horizon=10)
    first, second = segments("r1", "e1", lengths=(4, 6), success=True)
    ingest.handle(second)
    assert len(replay) == 0 and ingest.pending_episodes == 1
    ingest.handle(first)
    stored = replay.episode("r1", "e1")
    assert stored is not None and stored.length == 10 and stored.success
    np.testing.assert_allclose(stored.returns, recap_returns(10, True, horizon=10, failure_return=-2.0))
    assert stored.returns[-1] == pytest.approx(-0.1) and stored.returns[0] == pytest.approx(-1.0)
    assert [(s.robot_id, s.episode_id, s.step) for s in replay.samples("online")][:2] == [
        ("r1", "e1", 0),
        ("r1", "e1", 1),
    ]
    _feed(ingest, segments("r1", "e2", success=False))
    assert np.all(replay.episode("r1", "e2").returns == -2.0)  # type: ignore[union-attr]


def test_autonomous_steps_that_end_in_a_takeover_are_failures_even_in_a_rescued_episode() -> None:
    """RLIF: the human stepping in is the policy's failure; the steps after the last takeover keep the outcome."""
    human = np.zeros(10, dtype=bool)
    human[[3, 4, 7]] = True
    returns = recap_returns(10, True, horizon=10, failure_return=-2.0, intervention=human)
    plain = recap_returns(10, True, horizon=10, failure_return=-2.0)
    np.testing.assert_allclose(returns[[0, 1, 2, 5, 6]], -2.0)  # the two stretches the human broke into
    np.testing.assert_allclose(returns[[3, 4, 7, 8, 9]], plain[[3, 4, 7, 8, 9]])
    assert np.all(recap_returns(4, False, horizon=10, failure_return=-2.0, intervention=human[:4]) == -2.0)

    replay, ingest = _replay(horizon=10)
    _feed(ingest, segments("r1", "e1", lengths=(5, 5), intervention=(3, 5), success=True))
    stored = replay.episode("r1", "e1")
    assert stored is not None and stored.success
    np.testing.assert_allclose(stored.returns[:3], -2.0)
    assert stored.returns[5:].min() > -1.0
    ingest.handle(correction("r1", "e1", "c2", 7, 1))  # a late correction: steps 5-6 now end in a takeover too
    np.testing.assert_allclose(stored.returns[5:7], -2.0)
    assert stored.returns[8:].min() > -1.0
    kept, kept_ingest = _replay(horizon=10, takeover_is_failure=False)
    _feed(kept_ingest, segments("r1", "e1", lengths=(5, 5), intervention=(3, 5), success=True))
    assert kept.episode("r1", "e1").returns.min() > -2.0  # type: ignore[union-attr]


def test_late_reward_signal_relabels_success() -> None:
    replay, ingest = _replay()
    _feed(ingest, segments("r1", "e1", success=False))
    signal = RewardSignal(
        reward_id="w1", robot_id="r1", episode_id="e1", source="human", labeller="ann", created_at=time.time(),
        success=True,
    )  # fmt: skip
    ingest.handle(signal)
    stored = replay.episode("r1", "e1")
    assert stored is not None and stored.success and stored.returns.max() > -1.0


def test_corrections_tag_steps_and_reviews_reject_or_relabel() -> None:
    replay, ingest = _replay()
    ingest.handle(correction("r1", "e1", "c1", 2, 3))  # before its segments
    _feed(ingest, segments("r1", "e1", lengths=(5, 5), intervention=(2, 5)))
    ingest.handle(correction("r1", "e1", "c2", 7, 2))  # after them: steps 7, 8 become interventions
    assert [s.step for s in replay.correction_steps("c1")] == [2, 3, 4]
    assert replay.sizes()["intervention"] == 5
    relabel = Review(
        review_id="v1", correction_id="c2", robot_id="r1", reviewer="bob", decision="relabel",
        relabelled_actions=np.full((2, 4), -0.25, dtype=np.float32), created_at=time.time(),
    )  # fmt: skip
    ingest.handle(relabel)
    stored = replay.episode("r1", "e1")
    assert stored is not None and np.allclose(stored.actions[7:9, :4], -0.25)
    assert replay.apply_review("c2", "relabel", relabel_success=False) == 2 and not stored.success
    reject = Review(
        review_id="v2", correction_id="c1", robot_id="r1", reviewer="bob", decision="reject", created_at=time.time()
    )
    ingest.handle(reject)
    assert replay.correction_steps("c1") == []
    assert replay.sizes() == {"demo": 0, "online": 7, "intervention": 2}
    assert all(s.correction_id != "c1" for src in ("online", "intervention") for s in replay.samples(src))


def test_review_before_correction_waits_for_it() -> None:
    replay, ingest = _replay()
    ingest.handle(
        Review(review_id="v", correction_id="c9", robot_id="r1", reviewer="b", decision="reject", created_at=0)
    )
    ingest.handle(correction("r1", "e1", "c9", 0, 2))
    _feed(ingest, segments("r1", "e1", intervention=(0, 2)))
    assert replay.correction_steps("c9") == [] and replay.sizes()["online"] == 8


def test_an_intervention_row_learns_only_the_human_steps_of_its_chunk() -> None:
    """HG-DAgger labels: after the human lets go (step 6) the policy's own actions are not targets of the row."""
    replay, ingest = _replay(online_fraction=0.0, intervention_fraction=1.0)
    _feed(ingest, segments("r1", "e1", lengths=(10,), intervention=(4, 6)))
    batch = replay.sample(16, np.random.default_rng(0))
    assert set(batch["kind"].tolist()) == {INTERVENTION}
    horizon = MODEL.chunk_size  # 4: a row at step 4 covers 4..7, at step 5 covers 5..8
    masks = {tuple(m) for m in batch["action_mask"].tolist()}
    assert masks == {(True, True, False, False), (True, False, False, False)}, (horizon, masks)
    # Autonomous rows keep their whole in-episode chunk, human steps included: each mask is a run of Trues
    # from the row's step to the episode end (a row at step 2 covering 2..5 is not cut at the takeover).
    replay2, ingest2 = _replay(online_fraction=1.0)
    _feed(ingest2, segments("r1", "e2", lengths=(10,), intervention=(4, 6)))
    batch = replay2.sample(64, np.random.default_rng(1))
    rows = batch["action_mask"][batch["kind"] == AUTONOMOUS]
    assert len(rows) and all(list(m) == sorted(m, reverse=True) and m[0] for m in rows.tolist())


def test_capacity_is_fifo_per_source() -> None:
    replay, ingest = _replay(capacity=10)
    for i in range(3):
        _feed(ingest, segments("r1", f"e{i}", lengths=(5,), seed=i))
    assert replay.sizes()["online"] == 10
    assert replay.episode("r1", "e0") is None  # fully evicted episodes are freed
    assert {s.episode_id for s in replay.samples("online")} == {"e1", "e2"}


def test_awr_weights() -> None:
    kinds = torch.tensor([DEMO, INTERVENTION, AUTONOMOUS, AUTONOMOUS, AUTONOMOUS])
    returns = torch.tensor([-2.0, -2.0, -0.1, -2.0, 5.0])
    values = torch.tensor([0.0, 0.0, -0.6, -1.0, -1.0])
    w = sample_weights(kinds, returns, values, beta=0.5, max_weight=20.0)
    assert w[:2].tolist() == [1.0, 1.0]  # imitate humans and demos whatever the outcome
    assert w[2] == pytest.approx(np.exp(1.0)) and w[3] == 0.0  # a failed step is never imitated
    assert w[4] == pytest.approx(20.0)  # clipped
    # ... even when the value head has learnt where failures end (an advantage of 0 would weigh 1 under AWR)
    assert sample_weights(kinds[3:4], returns[3:4], returns[3:4], beta=0.5, max_weight=20.0).item() == 0.0


def test_corrections_take_at_most_their_capped_share_of_the_offline_rows() -> None:
    replay, ingest = _replay(online_fraction=0.0, max_intervention_fraction=0.25)
    replay.add_episode(make_episode(length=4, seed=0))
    _feed(ingest, segments("r1", "e1", lengths=(10, 10), intervention=(0, 20)))
    assert replay.sizes()["intervention"] == 20 and replay.sizes()["demo"] == 4  # uniform would give 5/6
    kinds = np.concatenate([replay.sample(64, np.random.default_rng(i))["kind"] for i in range(20)])
    assert np.mean(kinds == INTERVENTION) == pytest.approx(0.25, abs=0.04)
    alone, ingest = _replay(online_fraction=0.0, max_intervention_fraction=0.25)  # no demos: nothing to share with
    _feed(ingest, segments("r1", "e1", lengths=(10, 10), intervention=(0, 20)))
    assert np.all(alone.sample(32, np.random.default_rng(0))["kind"] == INTERVENTION)
    with pytest.raises(ValueError, match="max_intervention_fraction"):
        ReplayConfig(max_intervention_fraction=1.5)


def test_add_demos_loads_only_the_stores_demonstrations_up_to_the_cap(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    for seed in range(3):
        store.write(make_episode(length=8, seed=seed))
    fleet = make_episode(length=8, seed=9)
    store.write(dataclasses.replace(fleet, meta=dataclasses.replace(fleet.meta, source="fleet")))
    replay, _ = _replay()
    assert replay.add_demos(tmp_path) == 3 and replay.sizes() == {"demo": 24, "online": 0, "intervention": 0}
    capped, _ = _replay()
    assert capped.add_demos(tmp_path, limit=2) == 2 and capped.sizes()["demo"] == 16
    assert _replay()[0].add_demos(tmp_path, limit=0) == 0


def test_a_demo_cap_takes_every_task_and_embodiment_in_turn(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    for embodiment, task, n in (("panda", "pick", 5), ("kuka", "pick", 5), ("panda", "push", 1)):
        for k in range(n):
            episode = make_episode(embodiment, length=4, seed=k, episode_id=f"{task}-{k}")
            store.write(dataclasses.replace(episode, meta=dataclasses.replace(episode.meta, task=task)))
    replay, _ = _replay()
    taken: Counter[tuple[str, str]] = Counter()
    add = replay.add_episode

    def counted(episode):  # type: ignore[no-untyped-def]
        taken[(episode.meta.embodiment, episode.meta.task)] += 1
        return add(episode)

    replay.add_episode = counted  # type: ignore[method-assign]
    assert replay.add_demos(tmp_path, limit=5) == 5
    assert taken == {("panda", "pick"): 2, ("kuka", "pick"): 2, ("panda", "push"): 1}  # not the store's first 5


def test_a_demo_cap_keeps_a_few_new_demonstrations_beside_many_old_ones(tmp_path: Path) -> None:
    """An old store of many demos and a few new ones of the same pair (bench/online.py's offline_demos arm): a cap of
    old share + new ones keeps every new one."""
    store = EpisodeStore(tmp_path)
    for robot, n in (("demo-panda", 6), ("offline-panda", 2)):
        for k in range(n):
            episode = make_episode("panda", length=4, seed=k, episode_id=f"{robot}-{k}")
            store.write(dataclasses.replace(episode, meta=dataclasses.replace(episode.meta, robot_id=robot)))
    replay, _ = _replay()
    assert replay.add_demos(tmp_path, limit=4) == 4
    kept = {key[0] for key in replay._episodes}
    assert sum(1 for key in replay._episodes if key[0] == "offline-panda") == 2 and kept == {
        "demo-panda",
        "offline-panda",
    }


def test_frozen_features_replace_the_images_once_a_batch_samples_the_step() -> None:
    torch.manual_seed(0)
    model = VLAModel(MODEL)
    features = FrozenFeatures(model, "encoder")
    replay = ReplayBuffer(ReplayConfig(), MODEL, embedder=HashEmbedder(), features=features)
    episode = make_episode(length=10, seed=3)
    stored = replay.add_episode(episode)
    assert stored is not None and stored.observation == "image_tokens"
    assert stored.features is None and replay.encoded_total == 0  # nothing encoded at ingest
    batch = replay.sample(4, np.random.default_rng(0))
    assert "images" not in batch and batch["image_tokens"].shape == (4, 1, model.tokens_per_camera, MODEL.d_model)
    assert stored.encoded is not None and stored.features is not None and stored.features.dtype == np.float16
    sampled = np.flatnonzero(stored.encoded)
    assert 0 < len(sampled) <= 4 and replay.encoded_total == len(sampled)  # the sampled steps, once each
    images = torch.from_numpy(np.stack([episode.frames[c] for c in MODEL.cameras], axis=1))
    text = torch.from_numpy(np.stack([HashEmbedder().embed(episode.meta.instruction)] * 10)).float()
    with torch.no_grad():
        exact = model.encode_images(images, text).numpy()
    assert np.allclose(stored.features[sampled].astype(np.float32), exact[sampled], atol=1e-2)  # float16 storage
    for seed in range(1, 30):
        replay.sample(8, np.random.default_rng(seed))
    assert stored.encoded.all() and replay.encoded_total == 10  # every step once, however often sampled
    assert np.allclose(stored.features.astype(np.float32), exact, atol=1e-2)
    np.testing.assert_allclose(replay.sample(4, np.random.default_rng(0))["image_tokens"], batch["image_tokens"])
    with pytest.raises(ValueError, match="another model config"):
        ReplayBuffer(ReplayConfig(), MODEL.with_(d_model=64), embedder=HashEmbedder(), features=features)


def test_paraphrases_say_each_episode_in_one_of_its_instruction_s_phrasings_once_for_good() -> None:
    from fleet.sim.language import paraphrased

    plain, _ = _replay()
    augmented, _ = _replay(paraphrases=4)
    episodes = [make_episode(length=6, seed=i, episode_id=f"ep-{i}") for i in range(12)]
    said = [augmented.add_episode(e).instruction for e in episodes]  # type: ignore[union-attr]
    assert [plain.add_episode(e).instruction for e in episodes] == ["pick up the red cube"] * 12  # type: ignore[union-attr]
    assert all(s in paraphrased(4, seed=0)(e) for s, e in zip(said, episodes, strict=True))  # its own paraphrases
    assert len(set(said)) >= 3 and all("red cube" in s or "red" in s for s in said)  # other words, same cube
    assert [augmented.add_episode(e).instruction for e in episodes] == said  # a re-sent episode: the same words
    batch = augmented.sample(64, np.random.default_rng(0))
    embedded = {augmented._embedding(s).tobytes() for s in said}
    assert {row.tobytes() for row in batch["instruction_embedding"]} <= embedded  # batches carry those words
    with pytest.raises(ValueError, match="paraphrases"):
        ReplayConfig(paraphrases=-1)
