"""Learner checkpoints: weights + offsets + waiting messages survive a restart; incomplete ones are ignored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
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


def _three_checkpoints(root: Path) -> list[Path]:
    model = VLAModel(debug_model_config())
    state = LearnerState(0, {"fleet.trajectories": {"0": 0}}, {}, 0, 0, None)
    out = []
    for updates in (10, 20, 30):
        state.updates = updates
        state.offsets = {"fleet.trajectories": {"0": updates * 5}}
        out.append(checkpoints.save(root, model, state, [], keep=3)[0])
    return out


@pytest.mark.parametrize(
    "tear",
    [
        lambda d: (d / checkpoints.STATE_FILE).write_text('{"updates": 30, "offs'),  # truncated state
        lambda d: (d / MODEL_DIR / "model.safetensors").write_bytes(b"\0" * 64),  # torn weights
        lambda d: (d / checkpoints.PENDING_FILE).write_bytes(b"\xc1\xc1"),  # unreadable waiting messages
    ],
    ids=["state", "weights", "pending"],
)
def test_a_torn_newest_checkpoint_is_moved_aside_and_the_one_before_resumes(tmp_path: Path, tear: Any) -> None:
    saved = _three_checkpoints(tmp_path)
    tear(saved[-1])
    resumed = checkpoints.restore(tmp_path)
    assert resumed is not None and resumed.directory == saved[1]
    assert resumed.state.updates == 20 and resumed.state.offsets == {"fleet.trajectories": {"0": 100}}
    assert (tmp_path / f"broken-{saved[-1].name}").is_dir() and not saved[-1].exists()  # kept for a post-mortem
    assert checkpoints.restore(tmp_path).directory == saved[1]  # and not tried again


def test_no_checkpoint_is_a_fresh_start_and_none_readable_is_an_error(tmp_path: Path) -> None:
    assert checkpoints.restore(tmp_path) is None
    for directory in _three_checkpoints(tmp_path):
        (directory / checkpoints.STATE_FILE).write_text("{")
    with pytest.raises(RuntimeError, match="none of the 3 learner checkpoints"):
        checkpoints.restore(tmp_path)


def test_a_checkpoint_is_on_disk_before_its_state_file_says_it_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []  # what was fsynced, in order
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)  # every module's fsync (`fleet.durable`)
    directory = _three_checkpoints(tmp_path)[0]
    first_state = next(i for i, p in enumerate(synced) if Path(p).name.startswith(f".{checkpoints.STATE_FILE}"))
    before = set(synced[:first_state])
    # every file of the checkpoint, and its directories, before the state file that marks it complete
    files = {str(p) for p in directory.rglob("*") if p.name != checkpoints.STATE_FILE}
    assert files <= before and str(directory / MODEL_DIR) in before
    # then the state file's directory entry, then the run's directory (the new checkpoint's own entry)
    assert str(directory) in synced[first_state + 1 :] and str(tmp_path) in synced[first_state + 1 :]
