"""Hot reload: verified versions wait in a standby slot; bad, unsigned or foreign ones are refused and never loaded.

The unit tests use a fake registry (a dict of checkpoint directories, each version signed by the fake learner's key
unless a test says otherwise); tests/registry/test_registry.py runs real checkpoints through the real MLflow server.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.reload import HotReloader, ReloadConfig
from fleet.canary import Cohort
from fleet.policy.checkpoint import config_sha256, load_checkpoint, save_checkpoint
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from fleet.signing import SignedVersion, key_id, sign_version

LEARNER_KEY = Ed25519PrivateKey.generate()
TRUSTED = {key_id(LEARNER_KEY.public_key()): LEARNER_KEY.public_key()}


@dataclass
class FakeVersion:
    version: str
    sha256: str
    tags: dict[str, str] = field(default_factory=dict)


class FakeRegistry:
    """Alias -> version, version -> checkpoint dir; can be made to fail like a server that is down.

    A version's tags are signed by `signers[version]` (default: the learner's key; None: unsigned) over the digests
    the registry advertises, as `Registry.publish` signs them.
    """

    name = "fleet-vla"

    def __init__(self) -> None:
        self.versions: dict[str, tuple[Path, str]] = {}
        self.signers: dict[str, Ed25519PrivateKey | None] = {}
        self.production: str | None = None
        self.canary: str | None = None  # the `canary` alias, with `cohort` written on its version
        self.cohort: Cohort | None = None
        self.down = False
        self.downloads: list[str] = []

    def version_for_alias(self, alias: str) -> FakeVersion | None:
        if self.down:
            raise ConnectionError("registry down")
        version = {"production": self.production, "canary": self.canary}.get(alias)
        if version is None:
            return None
        directory, sha = self.versions[version]
        tags = {"sha256": sha}
        signer = self.signers.get(version, LEARNER_KEY)
        if signer is not None:
            tags |= sign_version(
                signer, model_name=self.name, version=version, weights_sha256=sha,
                config_sha256=config_sha256(directory),
            )  # fmt: skip
        if alias == "canary" and self.cohort is not None:
            tags |= self.cohort.to_tags()
        return FakeVersion(version, sha, tags)

    def download(self, version: str, dest: Path | str) -> Path:
        self.downloads.append(version)
        source, _ = self.versions[version]
        return Path(shutil.copytree(source, Path(dest) / "checkpoint"))


def _loader(directory: Path, signed: SignedVersion) -> VLAModel:
    """What `actors.robot.policy_loader` does, without the VLAPolicy wrapper."""
    return load_checkpoint(
        directory, expected_sha256=signed.weights_sha256, expected_config_sha256=signed.config_sha256
    )


def _reloader(registry: FakeRegistry, tmp_path: Path, **kwargs: object) -> HotReloader:
    config = kwargs.pop("config", ReloadConfig(download_root=tmp_path / "dl"))
    return HotReloader(config, registry=registry, loader=_loader, keys=TRUSTED, **kwargs)  # type: ignore[arg-type]


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
    reloader = _reloader(registry, tmp_path)
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
    reloader = _reloader(registry, tmp_path)
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


def test_robots_in_the_canary_cohort_run_the_canary_and_return_to_production_at_once_when_it_ends(
    model: VLAModel, tmp_path: Path
) -> None:
    registry = _registry_with_v1(model, tmp_path, production=True)
    registry.versions["2"] = (tmp_path / "v2", _save(model, tmp_path / "v2"))
    robots = {
        name: _reloader(registry, tmp_path, robot_id=name, config=ReloadConfig(download_root=tmp_path / name, **cfg))
        for name, cfg in (("in", {}), ("out", {}), ("opted-out", {"follow_canary": False}))
    }

    def step() -> dict[str, tuple[str | None, str]]:
        for reloader in robots.values():
            reloader.check_once()
            reloader.take_ready()
        return {name: (r._current, r.channel) for name, r in robots.items()}

    assert step() == {"in": ("1", "production"), "out": ("1", "production"), "opted-out": ("1", "production")}
    registry.canary, registry.cohort = "2", Cohort("2", robots=("in", "opted-out"))
    running = step()
    assert running == {"in": ("2", "canary"), "out": ("1", "production"), "opted-out": ("1", "production")}
    downloads = len(registry.downloads)
    registry.canary = None  # rolled back: the canary robots return to production, which they still hold loaded
    assert step()["in"] == ("1", "production")
    registry.canary = "2"
    assert step()["in"] == ("2", "canary")
    assert len(registry.downloads) == downloads  # both ways without a download: a rollback is a swap
    loads = robots["in"].stats.loaded
    registry.production, registry.canary = "2", None  # promoted: same weights, now production, nothing reloaded
    assert step() == {"in": ("2", "production"), "out": ("2", "production"), "opted-out": ("2", "production")}
    assert robots["in"].stats.loaded == loads
    registry.production, registry.canary, registry.cohort = "1", "2", Cohort("2", robots=("nobody",))
    assert step()["in"] == ("1", "production")  # a cohort without this robot


def test_registry_down_keeps_acting_and_recovers(model: VLAModel, tmp_path: Path) -> None:
    registry = _registry_with_v1(model, tmp_path, production=True)
    registry.down = True
    reloader = _reloader(registry, tmp_path)
    assert reloader.check_once() is None
    assert "registry down" in (reloader.stats.last_error or "")
    registry.down = False
    assert reloader.check_once() is not None


def test_event_wakes_the_background_thread_before_the_poll(model: VLAModel, tmp_path: Path) -> None:
    registry = _registry_with_v1(model, tmp_path, production=False)
    config = ReloadConfig(poll_interval_s=3600, download_root=tmp_path / "dl")
    reloader = _reloader(registry, tmp_path, config=config).start()
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

    def counted(alias: str) -> FakeVersion | None:  # one look = one production lookup (a canary is asked first)
        if alias == "production":
            looked_at.append(time.monotonic())
        return lookup(alias)

    registry.version_for_alias = counted  # type: ignore[method-assign]
    config = ReloadConfig(poll_interval_s=3600, download_root=tmp_path / "dl", event_delay_s=0.5)
    reloader = _reloader(registry, tmp_path, config=config).start()
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

    waiting = _reloader(
        registry,
        tmp_path,
        config=ReloadConfig(poll_interval_s=3600, download_root=tmp_path / "dl2", event_delay_s=3600),
        robot_id="waiting",
    ).start()
    waiting.notify()
    time.sleep(0.2)
    waiting.stop(timeout_s=5)
    assert not waiting._thread.is_alive()  # stopped inside its hour-long delay


def test_standby_policy_is_warmed_up_before_it_is_offered(model: VLAModel, tmp_path: Path) -> None:
    registry = _registry_with_v1(model, tmp_path, production=True)
    warmed: list[VLAModel] = []
    reloader = _reloader(registry, tmp_path, warmup=warmed.append)
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
    reloader = _reloader(
        registry, tmp_path, warmup=lambda _policy: steps.append("warm-up"), pace=lambda: steps.append("pace")
    )
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


OTHER_KEY = Ed25519PrivateKey.generate()  # someone who can write to MLflow, not the learner


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("unsigned", "version 2 is unsigned"),
        ("other_key", "signature by an untrusted key"),
        ("retagged", "signature does not match"),  # weights swapped and the sha256 tag changed to match them
        ("replayed", "signature does not match"),  # version 1's signature copied onto version 2
    ],
)
def test_a_version_the_learner_did_not_sign_is_refused_before_download(
    model: VLAModel, tmp_path: Path, attack: str, reason: str
) -> None:
    registry = _registry_with_v1(model, tmp_path, production=True)
    reloader = _reloader(registry, tmp_path)
    assert reloader.take_ready() is None and reloader.check_once() is not None
    reloader.take_ready()

    torch.manual_seed(1)
    foreign = tmp_path / "v2"
    registry.versions["2"] = (foreign, _save(VLAModel(model.config), foreign))
    registry.production = "2"
    if attack == "unsigned":
        registry.signers["2"] = None
    elif attack == "other_key":
        registry.signers["2"] = OTHER_KEY
    elif attack == "retagged":  # version 2 as the learner signed it, then its weights and sha256 tag replaced
        signed = registry.version_for_alias("production")
        assert signed is not None
        torch.manual_seed(2)
        sha = _save(VLAModel(model.config), foreign)
        registry.versions["2"] = (foreign, sha)
        _serve(registry, FakeVersion("2", sha, {**signed.tags, "sha256": sha}))
    elif attack == "replayed":  # version 1's bytes and signed tags, served as the newer version 2
        registry.production = "1"
        v1 = registry.version_for_alias("production")
        assert v1 is not None
        registry.versions["2"] = registry.versions["1"]
        _serve(registry, FakeVersion("2", v1.sha256, dict(v1.tags)))

    assert reloader.check_once() is None and reloader.take_ready() is None  # the robot keeps acting on version 1
    assert "SignatureError" in reloader.stats.refused["2"] and reason in reloader.stats.refused["2"]
    assert registry.downloads == ["1"]  # nothing of version 2 was downloaded
    reloader.check_once()  # refused once, not looked at again
    assert len(reloader.stats.refused) == 1 and reloader.stats.loaded == 1


def _serve(registry: FakeRegistry, version: FakeVersion | None) -> None:
    """From now on the alias lookup returns exactly `version` (tags as an attacker left them)."""
    registry.version_for_alias = lambda alias: version  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("weights", "does not match the recorded"),  # one bit of one weight
        ("weights_and_recorded_sha", "config.json: sha256"),  # ... and the config rewritten to record the new sha256
        ("config", "config.json: sha256"),  # the config's metadata changed, the weights not
    ],
)
def test_files_that_differ_from_the_signed_digests_are_refused(
    model: VLAModel, tmp_path: Path, tamper: str, reason: str
) -> None:
    """The tags are signed and untouched; the artifacts were replaced after signing."""
    registry = _registry_with_v1(model, tmp_path, production=True)
    _serve(registry, registry.version_for_alias("production"))  # signed as published, before the tampering
    directory = registry.versions["1"][0]
    weights, config = directory / "model.safetensors", directory / "config.json"
    text = config.read_text()
    if tamper.startswith("weights"):
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0x01
        weights.write_bytes(bytes(data))
        if tamper == "weights_and_recorded_sha":
            text = text.replace(registry.versions["1"][1], hashlib.sha256(data).hexdigest())
    else:
        assert '"metadata": {}' in text
        text = text.replace('"metadata": {}', '"metadata": {"x": 1}')  # still a valid config
    config.write_text(text)
    reloader = _reloader(registry, tmp_path)
    assert reloader.check_once() is None and reloader.stats.loaded == 0
    assert "CheckpointError" in reloader.stats.refused["1"] and reason in reloader.stats.refused["1"]


def test_a_refused_signature_shows_in_the_heartbeat(model: VLAModel, tmp_path: Path) -> None:
    from actors.runtime import RobotConfig, RobotRuntime
    from fleet.sim.registry import make_env

    registry = _registry_with_v1(model, tmp_path, production=True)
    reloader = _reloader(registry, tmp_path)
    first = reloader.check_once()
    assert first is not None
    registry.versions["2"] = (tmp_path / "v2", _save(VLAModel(model.config), tmp_path / "v2"))
    registry.signers["2"] = OTHER_KEY
    registry.production = "2"
    reloader.check_once()
    runtime = RobotRuntime(
        RobotConfig(robot_id="r1", embodiment="panda", task="pick"),
        env=make_env("pick", "panda", seed=0), policy=first.policy, model_version="1", publish=lambda _m: None,
        reloader=reloader,
    )  # fmt: skip
    error = runtime.heartbeat().error or ""
    assert error.startswith("refused model v2: SignatureError") and "untrusted key" in error and "v1" in error
