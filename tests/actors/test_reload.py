"""Hot reload: verified versions wait in a standby slot; bad ones are refused and never loaded.

The unit tests use a fake registry (a dict of checkpoint directories); the integration test runs
real VLA checkpoints through the real MLflow server.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from actors.reload import HotReloader, ReloadConfig
from fleet.policy.checkpoint import load_checkpoint, save_checkpoint
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel


@dataclass
class FakeVersion:
    version: str
    sha256: str


class FakeRegistry:
    """Alias -> version, version -> checkpoint dir; can be made to fail like a server that is down."""

    def __init__(self) -> None:
        self.versions: dict[str, tuple[Path, str]] = {}
        self.production: str | None = None
        self.down = False

    def version_for_alias(self, alias: str) -> FakeVersion | None:
        if self.down:
            raise ConnectionError("registry down")
        if self.production is None:
            return None
        return FakeVersion(self.production, self.versions[self.production][1])

    def download(self, version: str, dest: Path | str) -> Path:
        source, _ = self.versions[version]
        return Path(shutil.copytree(source, Path(dest) / "checkpoint"))


def _loader(directory: Path, sha: str) -> VLAModel:
    return load_checkpoint(directory, expected_sha256=sha)


@pytest.fixture(scope="module")
def model() -> VLAModel:
    torch.manual_seed(0)
    return VLAModel(debug_model_config())


def _save(model: VLAModel, directory: Path) -> str:
    return save_checkpoint(model, directory)


def _registry_with_v1(model: VLAModel, tmp_path: Path, *, production: bool) -> FakeRegistry:
    """A registry holding `model` as version 1, with the production alias on it or on nothing yet."""
    registry = FakeRegistry()
    registry.versions["1"] = (tmp_path / "v1", _save(model, tmp_path / "v1"))
    registry.production = "1" if production else None
    return registry


def test_new_version_lands_in_standby_and_swaps_once(model: VLAModel, tmp_path: Path) -> None:
    registry = _registry_with_v1(model, tmp_path, production=False)
    reloader = HotReloader(ReloadConfig(download_root=tmp_path / "dl"), registry=registry, loader=_loader)
    assert reloader.check_once() is None and reloader.take_ready() is None  # no production yet
    registry.production = "1"
    reloader.check_once()
    swap = reloader.take_ready()
    assert swap is not None and swap.version == "1" and isinstance(swap.policy, VLAModel)
    assert reloader.take_ready() is None  # handed over exactly once
    assert reloader.check_once() is None  # already current: nothing downloaded again
    assert reloader.stats.loaded == 1


@pytest.mark.parametrize("corruption", ["nan", "wrong_shape", "wrong_hash", "truncated", "pickle"])
def test_bad_checkpoint_is_refused_and_current_kept(model: VLAModel, tmp_path: Path, corruption: str) -> None:
    registry = FakeRegistry()
    good = tmp_path / "v1"
    registry.versions["1"] = (good, _save(model, good))
    registry.production = "1"
    reloader = HotReloader(ReloadConfig(download_root=tmp_path / "dl"), registry=registry, loader=_loader)
    reloader.check_once()
    assert reloader.take_ready().version == "1"  # type: ignore[union-attr]

    bad = tmp_path / "v2"
    sha = _corrupt(model, bad, corruption)
    registry.versions["2"] = (bad, sha)
    registry.production = "2"
    assert reloader.check_once() is None
    assert reloader.take_ready() is None  # nothing to swap in: the robot keeps version 1
    assert "2" in reloader.stats.refused
    assert "CheckpointError" in reloader.stats.refused["2"]
    checks = reloader.stats.checks
    reloader.check_once()  # the same bad sha256 is not downloaded again
    assert reloader.stats.checks == checks + 1 and len(reloader.stats.refused) == 1


def _corrupt(model: VLAModel, directory: Path, corruption: str) -> str:
    """Write a checkpoint broken in one way; return the sha256 the registry advertises for it."""
    if corruption == "nan":
        broken = VLAModel(model.config)
        broken.load_state_dict(model.state_dict())
        with torch.no_grad():
            next(broken.parameters()).fill_(math.nan)
        return _save(broken, directory)
    if corruption == "wrong_shape":
        other = VLAModel(model.config.with_(ff_mult=model.config.ff_mult * 2))
        sha = _save(other, directory)
        # claim the original architecture: shapes in the file no longer match the config
        shutil.copy(directory / "model.safetensors", directory / "other.safetensors")
        _save(model, directory)
        shutil.move(directory / "other.safetensors", directory / "model.safetensors")
        return sha
    sha = _save(model, directory)
    if corruption == "wrong_hash":
        return "0" * 64
    weights = directory / "model.safetensors"
    if corruption == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif corruption == "pickle":
        import pickle

        weights.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return sha


def test_registry_down_keeps_acting_and_recovers(model: VLAModel, tmp_path: Path) -> None:
    registry = _registry_with_v1(model, tmp_path, production=True)
    registry.down = True
    reloader = HotReloader(ReloadConfig(download_root=tmp_path / "dl"), registry=registry, loader=_loader)
    assert reloader.check_once() is None
    assert "registry down" in (reloader.stats.last_error or "")
    registry.down = False
    assert reloader.check_once() is not None


def test_event_wakes_the_background_thread_before_the_poll(model: VLAModel, tmp_path: Path) -> None:
    registry = _registry_with_v1(model, tmp_path, production=False)
    config = ReloadConfig(poll_interval_s=3600, download_root=tmp_path / "dl")
    reloader = HotReloader(config, registry=registry, loader=_loader).start()
    try:
        time.sleep(0.2)
        registry.production = "1"
        reloader.notify()
        deadline = time.monotonic() + 20
        swap = None
        while swap is None and time.monotonic() < deadline:
            swap = reloader.take_ready()
            time.sleep(0.01)
        assert swap is not None and swap.version == "1"
    finally:
        reloader.stop()
    assert not any(t.name.startswith("reload-") and t.is_alive() for t in threading.enumerate())


def test_event_delay_spreads_a_fleets_lookups_and_stop_cuts_it_short(model: VLAModel, tmp_path: Path) -> None:
    registry = _registry_with_v1(model, tmp_path, production=False)
    looked_at: list[float] = []
    lookup = registry.version_for_alias
    registry.version_for_alias = lambda alias: looked_at.append(time.monotonic()) or lookup(alias)  # type: ignore[method-assign]
    config = ReloadConfig(poll_interval_s=3600, download_root=tmp_path / "dl", event_delay_s=0.5)
    reloader = HotReloader(config, registry=registry, loader=_loader).start()
    try:
        while not looked_at:  # the start-up look
            time.sleep(0.01)
        registry.production = "1"
        notified = time.monotonic()
        reloader.notify()
        swap = None
        while swap is None and time.monotonic() < notified + 20:
            swap = reloader.take_ready()
            time.sleep(0.01)
        assert swap is not None and swap.version == "1"
        assert len(looked_at) == 2 and looked_at[1] - notified >= 0.5
    finally:
        reloader.stop()
    with pytest.raises(ValueError, match="event_delay_s"):
        ReloadConfig(event_delay_s=-1)

    waiting = HotReloader(
        ReloadConfig(poll_interval_s=3600, download_root=tmp_path / "dl2", event_delay_s=3600),
        registry=registry,
        loader=_loader,
        robot_id="waiting",
    ).start()
    waiting.notify()
    time.sleep(0.2)
    waiting.stop(timeout_s=5)
    assert not waiting._thread.is_alive()  # stopped inside its hour-long delay


def test_standby_policy_is_warmed_up_before_it_is_offered(model: VLAModel, tmp_path: Path) -> None:
    registry = _registry_with_v1(model, tmp_path, production=True)
    warmed: list[VLAModel] = []
    reloader = HotReloader(
        ReloadConfig(download_root=tmp_path / "dl"), registry=registry, loader=_loader, warmup=warmed.append
    )
    swap = reloader.check_once()
    assert swap is not None and warmed == [swap.policy]

    def broken(_policy: VLAModel) -> None:
        raise RuntimeError("inference failed")

    registry.versions["2"] = (tmp_path / "v2", _save(VLAModel(model.config), tmp_path / "v2"))
    registry.production = "2"
    reloader.warmup = broken
    assert reloader.check_once() is None and "inference failed" in reloader.stats.refused["2"]


def test_every_slow_step_waits_for_the_control_loops_slack(model: VLAModel, tmp_path: Path) -> None:
    registry = _registry_with_v1(model, tmp_path, production=True)
    steps: list[str] = []
    reloader = HotReloader(
        ReloadConfig(download_root=tmp_path / "dl"), registry=registry, loader=_loader,
        warmup=lambda _policy: steps.append("warm-up"), pace=lambda: steps.append("pace"),
    )  # fmt: skip
    before = time.monotonic()
    assert reloader.check_once() is not None
    assert steps == ["pace", "pace", "pace", "pace", "warm-up"]  # lookup, download, load, warm-up
    assert [name for _, _, name in reloader.steps] == ["lookup", "download", "load", "warm-up"]  # each one timed
    busy = reloader.busy_within(before, time.monotonic())
    assert list(busy) == ["lookup", "download", "load", "warm-up"] and all(s > 0 for s in busy.values())
    assert reloader.busy_within(before - 10, before) == {}
    steps.clear()
    assert reloader.check_once() is None  # already current: only the lookup
    assert steps == ["pace"]
