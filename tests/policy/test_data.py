"""Episodes -> training samples: chunk padding at the episode end, return-to-go, validation, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fleet.policy.config import VLAConfig
from fleet.policy.data import ChunkDataset, chunk_indices, random_shift, recap_returns
from fleet.policy.model import VLAModel
from fleet.policy.train import TrainConfig
from learner.replay import ReplayConfig
from tests.policy.fakes import HashEmbedder, make_episode


def test_value_targets_count_steps_to_success_as_the_learners_do() -> None:
    np.testing.assert_allclose(recap_returns(3, True, horizon=10, failure_return=-2.0), [-0.3, -0.2, -0.1])
    np.testing.assert_allclose(recap_returns(2, False, horizon=10, failure_return=-2.0), [-2.0, -2.0])
    assert ReplayConfig().horizon == TrainConfig(name="t").value_horizon  # one scale for version 1 and the learner
    assert ReplayConfig().failure_return == TrainConfig(name="t").failure_return


def test_chunk_indices_pad_with_the_last_step() -> None:
    idx, valid = chunk_indices(5, np.array([0, 3]), 4)
    assert idx.tolist() == [[0, 1, 2, 3], [3, 4, 4, 4]]
    assert valid.tolist() == [[True] * 4, [True, True, False, False]]


def test_samples_hold_the_chunk_mask_and_padding(tiny_config: VLAConfig) -> None:
    panda, sawyer = make_episode("panda", length=6, seed=1), make_episode("sawyer", length=3, seed=2)
    data = ChunkDataset([panda, sawyer], tiny_config, embedder=HashEmbedder(), horizon=4)
    assert len(data) == 9 and data.num_episodes == 2
    batch = data.get_batch(np.array([4, 6]))  # panda step 4, sawyer step 0
    h = tiny_config.chunk_size
    assert batch["images"].shape == (2, 1, 64, 64, 3) and batch["images"].dtype == torch.uint8
    assert batch["embodiment_id"].tolist() == [
        tiny_config.embodiment_index("panda"),
        tiny_config.embodiment_index("sawyer"),
    ]
    assert batch["action_mask"][0].tolist() == [True, True] + [False] * (h - 2)
    np.testing.assert_array_equal(batch["actions"][0, :2, :4].numpy(), panda.actions[4:6])
    np.testing.assert_array_equal(batch["actions"][0, 2:, :4].numpy(), np.repeat(panda.actions[5:6], h - 2, 0))
    assert torch.all(batch["actions"][:, :, 4] == 0)  # panda and sawyer have 4 action dims
    assert torch.all(batch["proprio"][1, 4:] == 0)  # sawyer has 4 proprio dims
    assert batch["returns"].tolist() == [-0.5, -0.75]  # 2 and 3 steps to success, over a horizon of 4
    model_batch = {k: v for k, v in batch.items() if k != "intervention"}
    VLAModel(tiny_config).check_batch(model_batch, with_actions=True)


def test_dataset_rejects_mismatched_episodes(tiny_config: VLAConfig) -> None:
    embedder = HashEmbedder()
    small = make_episode("panda", length=3, image_size=32)
    with pytest.raises(ValueError, match="frames are"):
        ChunkDataset([small], tiny_config, embedder=embedder)
    narrow = tiny_config.with_(embodiments=tuple(e for e in tiny_config.embodiments if e.name != "kuka"))
    with pytest.raises(KeyError, match="unknown embodiment 'kuka'"):
        ChunkDataset([make_episode("kuka", length=3)], narrow, embedder=embedder)
    with pytest.raises(ValueError, match="does not match the model"):
        ChunkDataset([make_episode("panda", length=3)], tiny_config.with_(text_encoder="other"), embedder=embedder)


def test_random_shift_keeps_shape_and_content_nearby() -> None:
    images = torch.randint(0, 256, (3, 2, 16, 16, 3), dtype=torch.uint8)
    assert random_shift(images, 0) is images
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    again = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, again)
    assert not torch.equal(shifted, images)
    # Cameras of one sample shift together, and a shift moves pixels: the inner crop is the original, displaced.
    assert any(
        torch.equal(shifted[0, :, 2:14, 2:14], images[0, :, 2 + dy : 14 + dy, 2 + dx : 14 + dx])
        for dy in range(-2, 3)
        for dx in range(-2, 3)
    )


def test_instruction_augmentation_draws_each_sample_s_words_from_the_episode_s_paraphrases(
    tiny_config: VLAConfig,
) -> None:
    from fleet.sim.language import paraphrased

    embedder = HashEmbedder()
    episode = make_episode("panda", length=8, instruction="pick up the red cube")
    said = paraphrased(4, seed=0)(episode)
    assert said[0] == "pick up the red cube" and len(set(said)) == 5 and all("red" in s for s in said)
    plain = ChunkDataset([episode], tiny_config, embedder=embedder)
    augmented = ChunkDataset([episode], tiny_config, embedder=embedder, instructions=paraphrased(4, seed=0), seed=1)
    own = torch.from_numpy(np.asarray(embedder.embed("pick up the red cube"), dtype=np.float32))
    assert all(torch.equal(row, own) for row in plain.get_batch(np.arange(8))["instruction_embedding"])
    rows = augmented.get_batch(np.repeat(np.arange(8), 8))["instruction_embedding"]
    drawn = {tuple(row.tolist()) for row in rows}
    assert len(drawn) == 5  # 64 draws of 5 ways of saying it: every one comes up
    assert drawn == {tuple(np.asarray(embedder.embed(s), dtype=np.float32).tolist()) for s in said}


@pytest.mark.parametrize(("option", "token"), [("instruction_noise", 1), ("proprio_noise", 2)])
def test_input_noise_perturbs_training_forwards_only(tiny_config: VLAConfig, option: str, token: int) -> None:
    data = ChunkDataset([make_episode("panda", length=6)], tiny_config, embedder=HashEmbedder())
    batch = {k: v for k, v in data.get_batch(np.arange(6)).items() if k != "intervention"}
    torch.manual_seed(0)
    model = VLAModel(tiny_config.with_(**{option: 0.5}))
    model.train()
    a, b = model.tokens(batch)[0], model.tokens(batch)[0]
    assert not torch.allclose(a[:, token], b[:, token])  # its token (text 1, proprio 2) moves with the noise
    others = [i for i in range(4) if i not in (token, 3)]
    assert torch.equal(a[:, others], b[:, others])  # the other prefix tokens do not
    with torch.no_grad():  # what a learner caches as frozen features: no noise
        assert torch.equal(model.tokens(batch)[0], model.tokens(batch)[0])
    model.eval()
    assert torch.equal(model.tokens(batch)[0], model.tokens(batch)[0])
    with pytest.raises(ValueError, match=option):
        tiny_config.with_(**{option: -0.1})
