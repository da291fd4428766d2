"""Checkpoints: save -> load round trip, and every way a bad checkpoint is refused without being loaded."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fleet.policy.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    checkpoint_sha256,
    config_sha256,
    load_checkpoint,
    load_optimizer,
    save_checkpoint,
    save_optimizer,
    verify_checkpoint,
)
from fleet.policy.config import VLAConfig
from fleet.policy.model import VLAModel


def _batch(config: VLAConfig, embodiment_id: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "images": torch.randint(
            0, 256, (2, 1, config.image_size, config.image_size, 3), generator=g, dtype=torch.uint8
        ),
        "instruction_embedding": torch.randn(2, config.text_dim, generator=g),
        "proprio": torch.randn(2, config.max_proprio_dim, generator=g),
        "embodiment_id": torch.full((2,), embodiment_id, dtype=torch.int64),
    }


def _rewrite_sha(directory: Path) -> None:
    """Make config.json vouch for whatever is in the weights file now (an attacker or a bug could do this)."""
    raw = json.loads((directory / CONFIG_FILE).read_text())
    raw["weights_sha256"] = checkpoint_sha256(directory)
    (directory / CONFIG_FILE).write_text(json.dumps(raw))


@pytest.fixture
def saved(tmp_path: Path, tiny_config: VLAConfig) -> tuple[Path, VLAModel, str]:
    torch.manual_seed(0)
    model = VLAModel(tiny_config).eval()
    directory = tmp_path / "ckpt"
    sha = save_checkpoint(model, directory, metadata={"step": 7})
    return directory, model, sha


def test_save_load_gives_identical_outputs(saved: tuple[Path, VLAModel, str]) -> None:
    directory, model, sha = saved
    loaded = load_checkpoint(directory, expected_sha256=sha)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    batch = _batch(model.config)
    a1, v1 = model.predict(batch, generator=torch.Generator().manual_seed(3))
    a2, v2 = loaded.predict(batch, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a1, a2) and torch.equal(v1, v2)


def test_verify_reports_sha_and_metadata(saved: tuple[Path, VLAModel, str]) -> None:
    directory, model, sha = saved
    assert checkpoint_sha256(directory) == sha
    info = verify_checkpoint(directory, expected_sha256=sha.upper())
    assert info.sha256 == sha and info.config == model.config
    assert info.num_parameters == model.num_parameters()
    assert info.metadata == {"step": 7}


def test_wrong_expected_sha_is_refused(saved: tuple[Path, VLAModel, str]) -> None:
    directory, _, _ = saved
    with pytest.raises(CheckpointError, match="expected"):
        load_checkpoint(directory, expected_sha256="0" * 64)


def test_expected_config_sha_binds_the_config_bytes(saved: tuple[Path, VLAModel, str]) -> None:
    """What a signature vouches for (fleet.signing): config.json's exact bytes, not just a config that parses alike."""
    directory, model, sha = saved
    digest = config_sha256(directory)
    assert load_checkpoint(directory, expected_sha256=sha, expected_config_sha256=digest).config == model.config
    raw = json.loads((directory / CONFIG_FILE).read_text())
    raw["metadata"]["step"] = 8
    (directory / CONFIG_FILE).write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="config.json: sha256 .* is not the expected"):
        verify_checkpoint(directory, sha, expected_config_sha256=digest)
    verify_checkpoint(directory, sha)  # without the signed digest it still passes every other check


def test_corrupted_weights_fail_the_recorded_sha(saved: tuple[Path, VLAModel, str]) -> None:
    directory, _, _ = saved
    data = bytearray((directory / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (directory / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        verify_checkpoint(directory)


@pytest.mark.parametrize("rewrite_sha", [False, True])
def test_truncated_weights_are_refused(saved: tuple[Path, VLAModel, str], rewrite_sha: bool) -> None:
    directory, _, _ = saved
    path = directory / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if rewrite_sha:  # even when the recorded hash matches, the file must still parse
        _rewrite_sha(directory)
    with pytest.raises(CheckpointError):
        load_checkpoint(directory)


def test_nan_weights_are_refused(saved: tuple[Path, VLAModel, str]) -> None:
    directory, model, _ = saved
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(directory / WEIGHTS_FILE))
    _rewrite_sha(directory)
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(directory)


def test_wrong_shapes_are_refused(saved: tuple[Path, VLAModel, str]) -> None:
    directory, model, _ = saved
    other = VLAModel(model.config.with_(d_model=model.config.d_model * 2))
    save_file(dict(other.state_dict()), str(directory / WEIGHTS_FILE))
    _rewrite_sha(directory)
    with pytest.raises(CheckpointError, match="the config needs"):
        load_checkpoint(directory)


def test_missing_tensor_is_refused(saved: tuple[Path, VLAModel, str]) -> None:
    directory, model, _ = saved
    tensors = dict(model.state_dict())
    tensors.pop(next(iter(tensors)))
    save_file(tensors, str(directory / WEIGHTS_FILE))
    _rewrite_sha(directory)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(directory)


class _Payload:
    """Unpickling this creates a file: proof of code execution if it ever exists."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.target), "w"))


def test_pickle_renamed_to_weights_is_never_unpickled(
    saved: tuple[Path, VLAModel, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _, _ = saved
    sentinel = tmp_path / "pwned"
    (directory / WEIGHTS_FILE).write_bytes(pickle.dumps(_Payload(sentinel)))
    _rewrite_sha(directory)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a checkpoint load must never unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(directory)
    assert not sentinel.exists()

    torch_zip = directory / WEIGHTS_FILE  # torch.save's zip+pickle format, as a legacy tool would write it
    monkeypatch.undo()
    torch.save({"x": torch.zeros(2)}, torch_zip)
    _rewrite_sha(directory)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(directory)


@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: "{not json",
        lambda raw: json.dumps({**raw, "format": "other"}),
        lambda raw: json.dumps({**raw, "model": {**raw["model"], "d_model": -1}}),
        lambda raw: json.dumps({**raw, "model": {**raw["model"], "brand_new_field": 1}}),
        lambda raw: json.dumps({**raw, "weights_file": "../elsewhere.safetensors"}),
    ],
    ids=["bad-json", "wrong-format", "invalid-config", "unknown-key", "path-escape"],
)
def test_bad_config_is_refused(saved: tuple[Path, VLAModel, str], edit: object) -> None:
    directory, _, _ = saved
    raw = json.loads((directory / CONFIG_FILE).read_text())
    (directory / CONFIG_FILE).write_text(edit(raw))  # type: ignore[operator]
    with pytest.raises(CheckpointError):
        verify_checkpoint(directory)


def test_checkpoint_from_before_the_image_options_loads_as_the_plain_model(
    tmp_path: Path, tiny_config: VLAConfig
) -> None:
    # Version 1 of a running fleet may predate CoordConv/FiLM/keypoints/aux: its config.json has none of them.
    old_config = tiny_config.with_(coord_channels=False, film=False, keypoints=0, aux_action_weight=0.0)
    torch.manual_seed(0)
    old = VLAModel(old_config).eval()
    save_checkpoint(old, tmp_path / "old")
    raw = json.loads((tmp_path / "old" / CONFIG_FILE).read_text())
    for key in ("coord_channels", "film", "keypoints", "grid_tokens", "aux_action_weight"):
        del raw["model"][key]
    (tmp_path / "old" / CONFIG_FILE).write_text(json.dumps(raw))
    loaded = load_checkpoint(tmp_path / "old")
    assert loaded.config == old_config and loaded.aux_head is None
    batch = _batch(old_config)
    seed = lambda: torch.Generator().manual_seed(3)  # noqa: E731 - same noise for both calls
    assert torch.equal(old.predict(batch, generator=seed())[0], loaded.predict(batch, generator=seed())[0])


def test_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a fleet checkpoint"):
        load_checkpoint(tmp_path)


def test_optimizer_state_round_trip(tmp_path: Path, tiny_config: VLAConfig) -> None:
    model = VLAModel(tiny_config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    batch = {**_batch(tiny_config), "actions": torch.zeros(2, tiny_config.chunk_size, tiny_config.max_action_dim)}
    batch["action_mask"] = torch.ones(2, tiny_config.chunk_size, dtype=torch.bool)
    model.loss(batch)["loss/total"].backward()
    opt.step()
    save_optimizer(opt, tmp_path)
    fresh = torch.optim.AdamW(model.parameters(), lr=5.0)
    load_optimizer(fresh, tmp_path)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, state in a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["state"][index][key])
