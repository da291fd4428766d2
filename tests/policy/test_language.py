"""The real instruction encoder (bundled all-MiniLM-L6-v2, loaded once per process, offline) and its caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleet.policy.config import debug_model_config
from fleet.policy.language import MiniLMEmbedder, default_embedder, load_minilm
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy
from tests.policy.fakes import make_episode, observation


def test_minilm_embeddings_are_normalized_and_semantic() -> None:
    embedder = default_embedder()
    assert embedder is default_embedder()  # one per process: MiniLM loads once for the whole test session
    vecs = embedder.embed_many(["pick up the red cube", "grasp the red block", "open the top drawer"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]  # paraphrases are closer than different tasks
    np.testing.assert_array_equal(embedder.embed("pick up the red cube"), vecs[0])


def test_disk_cache_avoids_the_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = MiniLMEmbedder(cache_dir=tmp_path)
    vec = first.embed("push the block to the left")
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def no_encoder() -> None:
        raise AssertionError("the encoder must not run for a cached instruction")

    monkeypatch.setattr("fleet.policy.language.load_minilm", no_encoder)
    second = MiniLMEmbedder(cache_dir=tmp_path)
    assert second.cached("push the block to the left")
    np.testing.assert_array_equal(second.embed("push the block to the left"), vec)
    next(tmp_path.glob("*.npy")).write_bytes(b"garbage")  # a torn cache file is recomputed, not trusted
    monkeypatch.undo()
    np.testing.assert_allclose(MiniLMEmbedder(cache_dir=tmp_path).embed("push the block to the left"), vec, atol=1e-6)
    assert load_minilm() is load_minilm()


def test_policy_with_the_real_embedder() -> None:
    policy = VLAPolicy(VLAModel(debug_model_config()))  # default embedder: MiniLM
    episode = make_episode("sawyer", length=2, instruction="open the top drawer")
    assert policy.infer(observation(episode, 0)).shape == (4, 4)
