"""Learner checkpoints: weights + offsets + waiting messages survive a restart; incomplete ones are ignored."""

from __future__ import annotations

from pathlib import Path

import torch

from fleet.policy.checkpoint import load_checkpoint
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from learner import checkpoints
from learner.checkpoints import MODEL_DIR, LearnerState
from tests.learner.fakes import correction, segments


def test_state_and_pending_messages_round_trip(tmp_path: Path) -> None:
    model = VLAModel(debug_model_config())
    pending = [segments("r1", "e1", lengths=(3, 3))[0], correction("r1", "e1", "c1", 0, 2)]
    state = LearnerState(7, {"fleet.trajectories": {"0": 12}}, {"fleet.trajectories": {"0": [3, 11]}}, 1, 2, "4")
    for updates in (3, 5, 7, 9):
        state.updates = updates
        directory, sha = checkpoints.save(tmp_path, model, state, pending, keep=2)
    (tmp_path / "update_00000099").mkdir()  # torn: no learner_state.json
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["update_00000007", "update_00000009"]
    loaded, messages = checkpoints.load_state(directory)
    assert loaded == state and messages == pending
    restored = load_checkpoint(directory / MODEL_DIR, expected_sha256=sha)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in model.state_dict().items())
