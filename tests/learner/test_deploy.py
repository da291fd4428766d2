"""Where the learner sends a version that beat production: production at once, or a canary on a share of the robots
in its replay (`LearnerConfig.canary_fraction`). A fake registry stands in above the registry's interface; the real
one's canary is tested in tests/registry."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from fleet.canary import Cohort
from fleet.registry import PinnedError, RegistryError
from learner import service as service_module
from learner.config import get_preset
from learner.service import LearnerService


class Registry:
    def __init__(self, *, canary: str | None = None, pinned: bool = False) -> None:
        self.running = canary
        self.pinned = pinned
        self.calls: list[tuple[str, str, Any]] = []

    def canary(self) -> tuple[Any, Cohort] | None:
        return None if self.running is None else (SimpleNamespace(version=self.running), Cohort(self.running, 0.5))

    def promote(self, version: str, **kw: Any) -> None:
        self.calls.append(("promote", version, kw))

    def start_canary(self, version: str, cohort: Cohort, **kw: Any) -> None:
        if kw.get("automatic") and self.pinned:
            raise PinnedError("production is pinned")
        self.calls.append(("canary", version, cohort))


def _learner(registry: Registry, fraction: float) -> Any:
    config = dataclasses.replace(get_preset("debug"), canary_fraction=fraction)
    robots = SimpleNamespace(fleet_robots=lambda: [f"robot-{i}" for i in range(8)])
    return SimpleNamespace(
        config=config, registry=registry, replay=robots, settings=None, canary_version=None, transport=None
    )


@pytest.fixture(autouse=True)
def _no_kafka(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    sent: list[tuple[str, str | None]] = []
    monkeypatch.setattr(
        service_module, "announce", lambda settings, info, *, event, alias, **_: sent.append((event, alias))
    )
    return sent


def test_without_a_canary_share_a_better_version_is_production_at_once(_no_kafka: list) -> None:
    registry = Registry()
    LearnerService._deploy(_learner(registry, 0.0), SimpleNamespace(version="5"), "gate 0.8")
    assert [c[:2] for c in registry.calls] == [("promote", "5")] and _no_kafka == [("promoted", "production")]


def test_with_a_canary_share_a_better_version_goes_to_that_share_of_the_robots_in_replay(_no_kafka: list) -> None:
    registry = Registry()
    LearnerService._deploy(_learner(registry, 0.25), SimpleNamespace(version="5"), "gate 0.8")
    [(kind, version, cohort)] = registry.calls
    assert (kind, version) == ("canary", "5") and _no_kafka == [("canary_started", "canary")]
    assert sum(cohort.includes(f"robot-{i}") for i in range(8)) == 2
    busy = Registry(canary="4")  # one rollout at a time: the newer version stays candidate
    with pytest.raises(RegistryError, match="version 4 is still on canary"):
        LearnerService._deploy(_learner(busy, 0.25), SimpleNamespace(version="5"), "gate 0.8")
    with pytest.raises(PinnedError):
        LearnerService._deploy(_learner(Registry(pinned=True), 0.25), SimpleNamespace(version="5"), "gate 0.8")
    with pytest.raises(ValueError, match="canary_fraction"):
        dataclasses.replace(get_preset("debug"), canary_fraction=1.5)


def test_a_rolled_back_canary_sends_training_back_to_productions_weights_and_a_promoted_one_does_not() -> None:
    restarts: list[tuple[str, str]] = []

    def learner(registry: Registry) -> Any:
        fake = _learner(registry, 0.25)
        fake.canary_version = None
        fake._restart_from = lambda production, why: restarts.append((production.version, why)) or True
        return fake

    registry = Registry()
    fake = learner(registry)
    LearnerService._deploy(fake, SimpleNamespace(version="5"), "gate 0.8")
    assert fake.canary_version == "5"
    registry.running = "5"
    LearnerService._after_canary(fake, SimpleNamespace(version="4"))  # still on canary: nothing yet
    assert not restarts and fake.canary_version == "5"
    registry.running = None  # rolled back: production is still 4
    LearnerService._after_canary(fake, SimpleNamespace(version="4"))
    assert restarts == [("4", "its canary v5 was rolled back")] and fake.canary_version is None
    LearnerService._after_canary(fake, SimpleNamespace(version="4"))  # said once
    assert len(restarts) == 1

    promoted = learner(Registry())
    LearnerService._deploy(promoted, SimpleNamespace(version="6"), "gate 0.8")
    LearnerService._after_canary(promoted, SimpleNamespace(version="6"))  # the canary became production
    assert len(restarts) == 1 and promoted.canary_version is None
