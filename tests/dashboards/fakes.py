"""A fake model registry for the dashboard's model routes (the real one is fleet.registry on MLflow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from fleet.canary import Cohort
from fleet.registry import RegistryError


@dataclass
class FakeRegistry:
    """Versions as dicts, aliases as a dict; refuses promote while pinned like the real one should."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    alias_map: dict[str, str] = field(default_factory=dict)
    pinned: bool = False
    cohort: Cohort | None = None  # of the version under the `canary` alias
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def with_versions(cls, n: int = 3) -> FakeRegistry:
        versions = [
            {
                "version": str(i),
                "parent_version": str(i - 1) if i > 1 else None,
                "eval_metrics": {"eval/success_rate": 0.2 * i, "eval/pick/panda/success": 0.1 * i},
                "correction_count": 5 * i,
                "data_offsets": {"fleet.trajectories": {"0": [0, 100 * i]}},
                "gate_passed": True,
                "sha256": f"{i:064x}",
                "created_at": 1_700_000_000_000 + i * 60_000,
            }
            for i in range(1, n + 1)
        ]
        return cls(versions=versions, alias_map={"production": str(n), "candidate": str(n)})

    def list_versions(self) -> list[dict[str, Any]]:
        return list(self.versions)

    def get_version(self, version: str) -> dict[str, Any]:
        for v in self.versions:
            if v["version"] == version:
                return v
        raise KeyError(f"no version {version}")

    def aliases(self) -> dict[str, str]:
        return dict(self.alias_map)

    def promote(self, version: str, *, actor: str, role: str, reason: str) -> None:
        self.calls.append(("promote", {"version": version, "actor": actor, "role": role, "reason": reason}))
        self.get_version(version)
        if self.pinned:
            raise ValueError("production is pinned; unpin first")
        self.alias_map["production"] = version

    def rollback(self, to_version: str | None = None, *, actor: str, role: str, reason: str) -> None:
        self.calls.append(("rollback", {"version": to_version, "actor": actor, "role": role, "reason": reason}))
        self.get_version(to_version or "1")
        self.alias_map["production"] = to_version or "1"
        self.pinned = True

    def pin(self, *, actor: str, role: str, reason: str) -> None:
        self.calls.append(("pin", {"actor": actor, "role": role, "reason": reason}))
        self.pinned = True

    def unpin(self, *, actor: str, role: str, reason: str) -> None:
        self.calls.append(("unpin", {"actor": actor, "role": role, "reason": reason}))
        self.pinned = False

    def is_pinned(self) -> bool:
        return self.pinned

    def version_for_alias(self, alias: str) -> Any:
        version = self.alias_map.get(alias)
        return None if version is None else SimpleNamespace(**self.get_version(version), tags={})

    def canary(self) -> tuple[Any, Cohort] | None:
        info = self.version_for_alias("canary")
        return None if info is None or self.cohort is None else (info, self.cohort)

    def start_canary(self, version: str, cohort: Cohort, *, actor: str, role: str, reason: str) -> Any:
        self.calls.append(("start_canary", {"version": version, "actor": actor, "reason": reason}))
        if "canary" in self.alias_map and self.alias_map["canary"] != version:
            raise RegistryError(f"version {self.alias_map['canary']} is on canary")  # a refusal: 409
        self.alias_map["canary"], self.cohort = version, cohort
        return SimpleNamespace(**self.get_version(version), source="runs:/x/checkpoint")

    def end_canary(self, outcome: str, *, actor: str, role: str, reason: str, **_: Any) -> Any:
        self.calls.append(("end_canary", {"outcome": outcome, "actor": actor, "reason": reason}))
        if "canary" not in self.alias_map:
            raise LookupError("no canary is running")
        version = self.alias_map.pop("canary")
        if outcome == "promote":
            self.alias_map["production"] = version
        self.cohort = None
        return SimpleNamespace(**self.get_version(version), source="runs:/x/checkpoint")
