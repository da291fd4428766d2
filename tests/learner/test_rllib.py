"""The RLlib LearnerGroup over the VLA: updates reduce the loss on a fixed batch; weights round-trip safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fleet.policy.checkpoint import load_checkpoint, save_checkpoint
from fleet.policy.config import debug_model_config
from learner import rllib
from learner.features import FrozenFeatures
from learner.ingest import Ingest
from learner.replay import ReplayBuffer, ReplayConfig
from learner.rllib import MODULE_ID, RLlibConfig, VLALearner
from tests.learner.fakes import segments
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder, make_episode

MODEL = debug_model_config(text_encoder=FAKE_ENCODER)


@pytest.fixture(scope="module")
def engine() -> VLALearner:
    torch.set_num_threads(1)
    learner = VLALearner(RLlibConfig(lr=1e-3), model_config=MODEL)
    yield learner
    learner.shutdown()


def _batch() -> dict[str, np.ndarray]:
    replay = ReplayBuffer(ReplayConfig(), MODEL, embedder=HashEmbedder())
    replay.add_episode(make_episode(length=12, seed=0))
    ingest = Ingest(replay)
    for m in segments("r1", "e1", lengths=(6, 6), intervention=(3, 6), success=False):
        ingest.handle(m)
    return replay.sample(16, np.random.default_rng(0))


def _action_loss(engine: VLALearner, batch: dict[str, np.ndarray]) -> float:
    """The action loss of the engine's weights on `batch` with fixed flow noise (per-update losses are noisy)."""
    model = engine.to_model()
    columns = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items() if k != "kind"}
    with torch.no_grad():
        return float(np.mean([model.loss(columns, generator=torch.Generator().manual_seed(i))["loss/action"].item()
                              for i in range(8)]))  # fmt: skip


def test_updates_reduce_the_loss_on_a_fixed_batch(engine: VLALearner) -> None:
    batch = _batch()
    torch.manual_seed(0)
    before = _action_loss(engine, batch)
    stats = [engine.update(batch) for _ in range(25)]
    after = _action_loss(engine, batch)
    assert after < 0.8 * before, (before, after)
    assert 0 < stats[-1].autonomous_fraction < 1
    assert all(np.isfinite(list(s.to_log_dict().values())).all() for s in stats)
    assert set(stats[0].to_log_dict()) >= {"losses/total", "losses/action", "losses/value", "charts/mean_weight"}


def test_weights_round_trip_through_safetensors(engine: VLALearner, tmp_path: Path) -> None:
    before = engine.get_state_dict()
    save_checkpoint(engine.to_model(), tmp_path / "ckpt")
    restored = load_checkpoint(tmp_path / "ckpt").state_dict()
    assert set(restored) == set(before)
    assert all(torch.equal(restored[k], before[k]) for k in before)
    engine.update(_batch())  # move away, then roll back with set_weights
    assert any(not torch.equal(engine.get_state_dict()[k], before[k]) for k in before)
    engine.set_state_dict(restored)
    after = engine.get_state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_the_moving_average_follows_every_step_and_restarts_where_it_is_set() -> None:
    learner = VLALearner(RLlibConfig(lr=1e-3, ema_decay=0.75), model_config=MODEL)
    try:
        start = learner.get_state_dict()
        learner.set_state_dict(start)
        batch = _batch()
        expected = {k: v.clone() for k, v in start.items()}
        for _ in range(3):
            learner.update(batch)
            now = learner.get_state_dict()
            expected = {k: 0.75 * expected[k] + 0.25 * now[k] for k in now}
        average = learner.get_ema_state_dict()
        assert set(average) == set(start)
        for k in start:
            torch.testing.assert_close(average[k], expected[k], rtol=1e-5, atol=1e-6)
        assert any(not torch.allclose(average[k], now[k]) for k in now)  # it lags the raw weights
        published = learner.to_model(ema=True).state_dict()
        assert all(torch.equal(published[k], average[k]) for k in average)
        # A resumed learner trains from its raw weights and averages on from the published ones.
        learner.set_state_dict(now, ema=start)
        assert all(torch.equal(learner.get_ema_state_dict()[k], start[k]) for k in start)
        assert all(torch.equal(learner.get_state_dict()[k], now[k]) for k in now)
    finally:
        learner.shutdown()


def test_training_never_writes_into_the_weights_it_was_started_from() -> None:
    learner = VLALearner(RLlibConfig(lr=1e-3, ema_decay=0.75), model_config=MODEL)
    try:
        state = learner.get_state_dict()
        kept = {k: v.clone() for k, v in state.items()}
        learner.set_state_dict(state, ema=state)
        for _ in range(2):
            learner.update(_batch())
        assert all(torch.equal(state[k], kept[k]) for k in kept)
        assert any(not torch.equal(learner.get_ema_state_dict()[k], kept[k]) for k in kept)  # the average moved
    finally:
        learner.shutdown()


def test_without_a_moving_average_the_published_weights_are_the_trained_ones(engine: VLALearner) -> None:
    engine.update(_batch())
    raw, published = engine.get_state_dict(), engine.to_model(ema=True).state_dict()
    assert all(torch.equal(published[k], raw[k]) for k in raw)
    with pytest.raises(ValueError, match="ema_decay"):
        RLlibConfig(ema_decay=1.0)


def test_reset_optimizer_forgets_the_moments_and_training_goes_on(engine: VLALearner) -> None:
    batch = _batch()
    engine.update(batch)

    def states() -> list[list[int]]:
        return engine._each_learner(lambda lr: [len(o.state) for _, o in lr.get_optimizers_for_module(MODULE_ID)])

    assert states()[0][0] > 0  # AdamW keeps a state per parameter once it has stepped
    engine.reset_optimizer()
    assert states() == [[0]]
    assert np.isfinite(engine.update(batch).loss_total)


def test_a_batch_whose_gradient_is_not_finite_is_skipped_whole_and_training_goes_on(engine: VLALearner) -> None:
    batch = _batch()
    engine.update(batch)
    before = engine.get_state_dict()

    def moments() -> list[torch.Tensor]:
        [optimizers] = engine._each_learner(lambda lr: [o for _, o in lr.get_optimizers_for_module(MODULE_ID)])
        return [s["exp_avg"].clone() for s in optimizers[0].state.values()]

    kept = moments()
    skipped = engine._each_learner(lambda lr: lr.skipped_updates)[0]
    engine.update({**batch, "actions": np.full_like(batch["actions"], np.nan)})
    assert engine._each_learner(lambda lr: lr.skipped_updates) == [skipped + 1]
    assert all(torch.equal(engine.get_state_dict()[k], v) for k, v in before.items())
    assert all(torch.equal(a, b) for a, b in zip(moments(), kept, strict=True))
    engine.update(batch)
    assert any(not torch.equal(engine.get_state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("scale", [1e-3, 50.0], ids=["under", "over"])
def test_the_clip_is_rllibs_global_norm_clip(engine: VLALearner, scale: float) -> None:
    from ray.rllib.utils.torch_utils import clip_gradients

    torch.manual_seed(0)
    grads = [torch.randn(7, 5) * scale, torch.randn(3) * scale, torch.randn(2, 2, 2) * scale]
    expected = {i: g.clone() for i, g in enumerate(grads)}
    expected_norm = clip_gradients(expected, grad_clip=1.0, grad_clip_by="global_norm")

    def clip(learner: Any) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        ours = {i: g.clone() for i, g in enumerate(grads)}
        return learner._clip_by_global_norm(ours, grad_clip=1.0, grad_clip_by="global_norm"), ours

    [(norm, ours)] = engine._each_learner(clip)
    torch.testing.assert_close(norm, expected_norm)
    for i in ours:
        torch.testing.assert_close(ours[i], expected[i])
    engine._each_learner(lambda lr: setattr(lr, "_grad_norm", None))  # this norm belongs to no update


def test_bf16_updates_keep_fp32_weights_and_learn_what_fp32_updates_learn() -> None:
    batch = _batch()
    losses = {}
    for precision in ("fp32", "bf16"):
        learner = VLALearner(RLlibConfig(lr=1e-3, seed=3, precision=precision), model_config=MODEL)  # type: ignore[arg-type]
        try:
            stats = [learner.update(batch) for _ in range(30)]
            assert all(v.dtype == torch.float32 for v in learner.get_state_dict().values() if v.is_floating_point())
            losses[precision] = (stats[0].loss_action, stats[-1].loss_action)
        finally:
            learner.shutdown()
    for first, last in losses.values():
        assert np.isfinite(last) and last < 0.7 * first  # both fit the batch
    assert losses["bf16"][1] == pytest.approx(losses["fp32"][1], rel=0.3)
    with pytest.raises(ValueError, match="precision"):
        RLlibConfig(precision="fp16")  # type: ignore[arg-type]


def test_auto_precision_is_bf16_only_where_the_hardware_multiplies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    amx, avx2 = tmp_path / "amx", tmp_path / "avx2"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n\n")
    avx2.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16_x\nbugs\t\t: amx_bf16\n\n")
    assert rllib.cpu_has_amx(amx) and not rllib.cpu_has_amx(avx2) and not rllib.cpu_has_amx(tmp_path / "none")
    for has_amx, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(rllib, "cpu_has_amx", lambda has_amx=has_amx: has_amx)
        assert rllib.resolve_precision("auto") == expected
        assert (rllib.resolve_precision("fp32"), rllib.resolve_precision("bf16")) == ("fp32", "bf16")
    if not torch.cuda.is_available():
        assert rllib.resolve_precision("auto", "cuda") == "fp32"


@pytest.mark.parametrize("freeze", ["encoder", "perception"])
def test_a_frozen_part_trains_on_cached_features_and_never_moves(freeze: str) -> None:
    learner = VLALearner(RLlibConfig(lr=1e-3, freeze=freeze), model_config=MODEL)  # type: ignore[arg-type]
    try:
        start = learner.to_model()
        features = FrozenFeatures(start, freeze)  # type: ignore[arg-type]
        replay = ReplayBuffer(ReplayConfig(), MODEL, embedder=HashEmbedder(), features=features)
        replay.add_episode(make_episode(length=12, seed=0))
        ingest = Ingest(replay)
        for m in segments("r1", "e1", lengths=(6, 6), intervention=(3, 6), success=False):
            ingest.handle(m)
        batch = replay.sample(16, np.random.default_rng(0))
        assert "images" not in batch and batch[features.column].dtype == np.float32
        before = _action_loss(learner, batch)
        for _ in range(25):
            learner.update(batch)
        assert _action_loss(learner, batch) < 0.8 * before
        after = learner.to_model()
        frozen = set(after.frozen_parameters(freeze))  # type: ignore[arg-type]
        moved = {k for k, v in after.state_dict().items() if not torch.equal(v, start.state_dict()[k])}
        assert moved and not moved & frozen, sorted(moved & frozen)
        assert features.matches(after)  # the cache stays valid for every version the learner publishes
        with torch.no_grad():
            after.image_encoder.net[0].weight.add_(1.0)
        assert not features.matches(after)
    finally:
        learner.shutdown()


def test_the_learning_rate_warms_up_on_every_fresh_optimizer() -> None:
    learner = VLALearner(RLlibConfig(lr=1e-3, warmup_updates=4), model_config=MODEL)
    try:
        batch = _batch()
        rates = [learner.update(batch).learning_rate for _ in range(5)]
        assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
        learner.reset_optimizer()  # a restart from production: AdamW starts cold, so does the warm-up
        assert learner.update(batch).learning_rate == pytest.approx(2.5e-4)
        groups = learner._each_learner(lambda lr: lr.get_optimizers_for_module(MODULE_ID)[0][1].param_groups)[0]
        assert [g["weight_decay"] for g in groups] == [1e-4, 0.0] and groups[0]["betas"] == (0.9, 0.95)
        no_decay = {id(p) for p in groups[1]["params"]}
        module = learner._each_learner(lambda lr: lr.module[MODULE_ID].unwrapped().vla)[0]
        assert {id(p) for n, p in module.named_parameters() if "norm" in n or n.endswith("bias")} <= no_decay
    finally:
        learner.shutdown()


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_two_data_parallel_learners_train_as_one_on_the_same_batches() -> None:
    """`num_learners=2`: two Ray learner actors, each on half of every batch, gradients averaged (DDP). On batches
    whose halves weigh alike (one embodiment, every chunk step valid, the deterministic discrete head), the policy
    they train is the one a single learner trains on the whole batches."""
    from fleet.policy.model import VLAModel
    from learner.replay import DEMO

    model = debug_model_config(text_encoder=FAKE_ENCODER, action_head="discrete")
    replay = ReplayBuffer(ReplayConfig(), model, embedder=HashEmbedder())
    for i in range(4):
        replay.add_episode(make_episode(length=20, seed=i, episode_id=f"e{i}"))
    batches = [replay.sample(16, np.random.default_rng(i)) for i in range(6)]
    for batch in batches:
        batch["action_mask"][:] = True  # equal counts in each half: the mean of the halves' means is the batch's
        assert set(batch["kind"].tolist()) == {DEMO}
    one = VLALearner(RLlibConfig(lr=1e-2), model_config=model)
    two = VLALearner(RLlibConfig(lr=1e-2, num_learners=2), model_config=model)
    try:
        start = one.get_state_dict()
        two.set_state_dict(start)
        for batch in batches:
            one.update(batch)
            two.update(batch)
        held_out = {k: torch.from_numpy(np.asarray(v)) for k, v in replay.sample(64, np.random.default_rng(99)).items()
                    if k != "kind"}  # fmt: skip

        def loss(state: dict[str, torch.Tensor]) -> float:
            vla = VLAModel(model)
            vla.load_state_dict(state)
            with torch.no_grad():
                return float(vla.eval().loss(held_out)["loss/total"])

        before, after_one, after_two = loss(start), loss(one.get_state_dict()), loss(two.get_state_dict())
    finally:
        one.shutdown()
        two.shutdown()
    assert before - after_one > 0.05  # it learned something
    assert after_two == pytest.approx(after_one, rel=1e-5)  # the same policy
