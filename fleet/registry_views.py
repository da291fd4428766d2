"""The registry as each side of the loop may use it: one `fleet.registry.Registry` (MLflow's model registry), three
views, so each service's code says, and the type checker holds it to, what it does with the versions.

- `RobotRegistry`: a robot (and the policy server) reads the alias it follows and downloads a version; it never
  publishes or moves an alias.
- `LearnerRegistry`: the learner also publishes versions and moves production (or a canary) when its gate says so.
- `OperatorRegistry`: the dashboard and `fleet models` list versions and promote, roll back, pin and unpin them, as
  people with the role for it decide.

`fleet.registry` checks that `Registry` is all three. Nothing here imports MLflow or a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol


class RobotRegistry(Protocol):
    name: str  # the registered model's name (signed into every version)

    def version_for_alias(self, alias: str) -> Any: ...  # VersionInfo | None

    def download(self, version: str, dest: Path | str) -> Path: ...


class LearnerRegistry(RobotRegistry, Protocol):
    def verify(self, info: Any) -> Any: ...  # the version's signature, checked against the trusted keys

    def publish(self, *args: Any, **kwargs: Any) -> Any: ...

    def promote(self, version: str, *, actor: str, role: str, reason: str, automatic: bool = False) -> Any: ...

    def canary(self) -> Any: ...

    def start_canary(self, *args: Any, **kwargs: Any) -> Any: ...


class OperatorRegistry(Protocol):
    def list_versions(self) -> Sequence[Any]: ...

    def get_version(self, version: str) -> Any: ...

    def aliases(self) -> Mapping[str, str]: ...

    def promote(self, version: str, *, actor: str, role: str, reason: str) -> Any: ...

    def rollback(self, to_version: str | None = None, *, actor: str, role: str, reason: str) -> Any: ...

    def pin(self, *, actor: str, role: str, reason: str) -> Any: ...

    def unpin(self, *, actor: str, role: str, reason: str) -> Any: ...

    def is_pinned(self) -> bool: ...
