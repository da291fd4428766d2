"""VLAPolicy: the observation contract, clear errors, seeded determinism, and the model's loss API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fleet.embodiments import EMBODIMENTS
from fleet.policy.base import Policy
from fleet.policy.config import VLAConfig
from fleet.policy.model import Freeze, VLAModel
from fleet.policy.policy import VLAPolicy
from tests.policy.fakes import HashEmbedder, make_episode, observation


@pytest.fixture
def policy(tiny_config: VLAConfig, embedder: HashEmbedder) -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(VLAModel(tiny_config), embedder=embedder, seed=5)


@pytest.mark.parametrize("embodiment", sorted(EMBODIMENTS))
def test_infer_returns_one_chunk_per_embodiment(policy: VLAPolicy, embodiment: str) -> None:
    assert isinstance(policy, Policy)
    chunk = policy.infer(observation(make_episode(embodiment, length=2), 0))
    assert chunk.shape == (policy.config.chunk_size, EMBODIMENTS[embodiment].action_dim)
    assert chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= 1.0) and np.all(np.isfinite(chunk))


def test_seeded_inference_is_deterministic(tiny_config: VLAConfig, embedder: HashEmbedder) -> None:
    model = VLAModel(tiny_config)
    obs = observation(make_episode("kuka", length=2), 1)
    a, b = VLAPolicy(model, embedder=embedder, seed=1), VLAPolicy(model, embedder=embedder, seed=1)
    first = [a.infer(obs) for _ in range(3)]
    assert all(np.array_equal(x, b.infer(obs)) for x in first)
    a.reset()
    assert np.array_equal(a.infer(obs), first[0])
    assert np.array_equal(a.infer(obs, seed=9), b.infer(obs, seed=9))
    if tiny_config.action_head == "flow":  # the noise matters for the flow head only
        assert not np.array_equal(first[0], first[1])
        assert not np.array_equal(VLAPolicy(model, embedder=embedder, seed=2).infer(obs), first[0])


def test_instruction_is_embedded_once(policy: VLAPolicy, embedder: HashEmbedder) -> None:
    obs = observation(make_episode("panda", length=3), 0)
    for _ in range(3):
        policy.infer(obs)
    assert embedder.calls == 1


def test_unknown_embodiment_names_the_known_ones(policy: VLAPolicy) -> None:
    obs = observation(make_episode("panda", length=2), 0)
    obs["embodiment"] = "pandaa"
    with pytest.raises(KeyError, match=r"unknown embodiment 'pandaa'.*kuka.*Did you mean 'panda'"):
        policy.infer(obs)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda o: o.update(proprio=np.zeros(3, np.float32)), ValueError, r"proprio.*\(10,\), got \(3,\)"),
        (lambda o: o.update(proprio=np.full(10, np.nan, np.float32)), ValueError, "finite"),
        (lambda o: o["images"].update(front=np.zeros((32, 32, 3), np.uint8)), ValueError, r"\(64, 64, 3\), got"),
        (lambda o: o["images"].update(front=np.zeros((64, 64, 3), np.float32)), ValueError, "uint8"),
        (lambda o: o.update(images={"wrist": np.zeros((64, 64, 3), np.uint8)}), KeyError, "front"),
        (lambda o: o.pop("instruction"), KeyError, "instruction"),
        (lambda o: o.update(instruction=" "), ValueError, "instruction"),
    ],
    ids=["proprio-size", "proprio-nan", "image-size", "image-dtype", "camera", "no-instruction", "empty-instruction"],
)
def test_bad_observation_gives_a_clear_error(policy: VLAPolicy, mutate: object, error: type, message: str) -> None:
    obs = observation(make_episode("panda", length=2), 0)
    obs["images"] = dict(obs["images"])
    mutate(obs)  # type: ignore[operator]
    with pytest.raises(error, match=message):
        policy.infer(obs)


def test_embedder_must_match_the_model(tiny_config: VLAConfig) -> None:
    with pytest.raises(ValueError, match="trained on"):
        VLAPolicy(VLAModel(tiny_config.with_(text_encoder="all-MiniLM-L6-v2")), embedder=HashEmbedder())


def _mixed_batch(config: VLAConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b = 6
    return {
        "images": torch.randint(0, 256, (b, 1, 64, 64, 3), generator=g, dtype=torch.uint8),
        "instruction_embedding": torch.randn(b, config.text_dim, generator=g),
        "proprio": torch.randn(b, config.max_proprio_dim, generator=g),
        "embodiment_id": torch.tensor([0, 1, 2, 0, 1, 2]),
        "actions": torch.rand(b, config.chunk_size, config.max_action_dim, generator=g) * 2 - 1,
        "action_mask": torch.ones(b, config.chunk_size, dtype=torch.bool),
        "returns": torch.randn(b, generator=g),
        "return_mask": torch.tensor([True, True, True, False, False, False]),
    }


def test_loss_api_with_per_sample_weights(tiny_config: VLAConfig) -> None:
    model = VLAModel(tiny_config)
    batch = _mixed_batch(tiny_config)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731 - same noise for each call
    out = model.loss(batch, generator=g())
    assert {"loss/total", "loss/action", "loss/value", "loss/aux", "per_sample/action", "value"} <= set(out)
    assert out["per_sample/action"].shape == (6,) and out["value"].shape == (6,)
    assert out["loss/value"].item() > 0
    zero = model.loss(batch, weights=torch.zeros(6), generator=g())
    assert zero["loss/action"].item() == 0.0 and zero["loss/aux"].item() == 0.0  # weights scale the aux loss too
    double = model.loss(batch, weights=torch.full((6,), 2.0), generator=g())
    assert torch.allclose(double["loss/action"], 2 * out["loss/action"])
    out["loss/total"].backward()
    assert all(p.grad is not None for p in model.action_head.parameters())
    assert model.aux_head is not None and all(p.grad is not None for p in model.aux_head.parameters())
    assert model.image_encoder.keypoint_logits.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="weights must have shape"):
        model.loss(batch, weights=torch.ones(3))


@pytest.mark.parametrize("detach", [False, True])
def test_a_detached_value_loss_trains_the_value_head_only(tiny_config: VLAConfig, detach: bool) -> None:
    # `value_detach_trunk` (research/learning_probe.py --detach-value): return targets must not move the action
    # features.
    model = VLAModel(tiny_config.with_(value_detach_trunk=detach))
    model.loss(_mixed_batch(tiny_config))["loss/value"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.value_head.parameters())
    trunk = sum(float(p.grad.abs().sum()) for p in model.trunk.parameters() if p.grad is not None)
    assert (trunk == 0.0) if detach else (trunk > 0.0)


def test_padded_entries_do_not_affect_the_loss(tiny_config: VLAConfig) -> None:
    model = VLAModel(tiny_config)
    batch = _mixed_batch(tiny_config)
    batch["embodiment_id"][0] = tiny_config.embodiment_index("panda")
    batch["action_mask"][:, -1] = False

    def per_sample(actions: torch.Tensor) -> torch.Tensor:
        out = model.loss({**batch, "actions": actions}, generator=torch.Generator().manual_seed(0))
        return out["per_sample/action"]

    padded_dim = batch["actions"].clone()
    padded_dim[0, :, 4] = -0.3  # panda has 4 action dims: dim 4 is padding, for both heads
    assert torch.allclose(per_sample(batch["actions"]), per_sample(padded_dim))
    if tiny_config.action_head == "discrete":  # the flow expert sees padded steps in x_t; only the loss ignores them
        padded_step = batch["actions"].clone()
        padded_step[:, -1] = 0.5
        assert torch.allclose(per_sample(batch["actions"]), per_sample(padded_step))


def test_bad_batch_names_the_column(tiny_config: VLAConfig) -> None:
    model = VLAModel(tiny_config)
    batch = _mixed_batch(tiny_config)
    batch["proprio"] = batch["proprio"][:, :3]
    with pytest.raises(ValueError, match=r"batch\['proprio'\] must have shape \(B, 10\)"):
        model.loss(batch)


def test_weights_from_the_values_of_the_same_forward(tiny_config: VLAConfig) -> None:
    # The learner's advantages come from the loss's own forward pass: the same as a separate value forward.
    model = VLAModel(tiny_config)
    batch = _mixed_batch(tiny_config)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731 - same noise for each call
    values = model.predict_value(batch)
    explicit = model.loss(batch, weights=torch.sigmoid(values), generator=g())
    seen: list[torch.Tensor] = []

    def weigh(v: torch.Tensor) -> torch.Tensor:
        seen.append(v)
        return torch.sigmoid(v)

    derived = model.loss(batch, weights=weigh, generator=g())
    assert len(seen) == 1 and not seen[0].requires_grad and torch.allclose(seen[0], values, atol=1e-6)
    assert torch.allclose(derived["loss/total"], explicit["loss/total"], atol=1e-6)
    assert torch.allclose(derived["weights"], torch.sigmoid(values), atol=1e-6)


@pytest.mark.parametrize("freeze", ["encoder", "perception"])
def test_cached_features_stand_for_the_frozen_part(tiny_config: VLAConfig, freeze: Freeze) -> None:
    model = VLAModel(tiny_config)
    batch = _mixed_batch(tiny_config)
    features = model.features(batch, freeze)
    cached = {k: v for k, v in batch.items() if k != "images"} | features
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731 - same noise for each call
    with_images, with_features = model.loss(batch, generator=g()), model.loss(cached, generator=g())
    for key in ("loss/action", "loss/value", "value"):
        assert torch.allclose(with_images[key], with_features[key], atol=1e-5), key
    assert with_features["loss/aux"].item() == 0.0 < with_images["loss/aux"].item()  # aux teaches the encoder only
    with_features["loss/total"].backward()
    frozen = set(model.frozen_parameters(freeze))
    assert frozen and all(name.startswith("image_encoder.") for name in frozen) == (freeze == "encoder")
    for name, parameter in model.named_parameters():
        if name in frozen:  # the cached features cut the graph: no gradient reaches the frozen part
            assert parameter.grad is None, name
    assert all(p.grad is not None for p in model.action_head.parameters())
    actions, values = model.predict(cached, generator=g())
    assert torch.allclose(values, with_images["value"], atol=1e-5)
    assert torch.allclose(actions, model.predict(batch, generator=g())[0], atol=1e-5)


def test_a_batch_needs_exactly_one_observation_column(tiny_config: VLAConfig) -> None:
    model = VLAModel(tiny_config)
    batch = _mixed_batch(tiny_config)
    both = batch | model.features(batch, "encoder")
    with pytest.raises(ValueError, match="exactly one of the columns"):
        model.loss(both)
    with pytest.raises(ValueError, match="exactly one of the columns"):
        model.loss({k: v for k, v in batch.items() if k != "images"})
    wrong = {k: v for k, v in batch.items() if k != "images"} | {"image_tokens": torch.zeros(6, 1, 3, 8)}
    with pytest.raises(ValueError, match="image_tokens"):
        model.loss(wrong)
    with pytest.raises(ValueError, match="freeze must be one of"):
        model.frozen_parameters("trunk")  # type: ignore[arg-type]
