"""The canary controller: reads the live A/B from the fleet DB and ends a rollout when the evidence says so.

`CanaryController.status()` gathers the episodes that canary and production robots finished since the rollout
started (same time window), each with its stratum (task x embodiment: `compare` compares within strata, so a mix
that happens to differ is not read as a difference between versions), and scores them with `fleet.canary.compare`
/ `decide`. `step()` acts on the decision:
promote or roll back through the registry (audited with the numbers behind it, announced on `fleet.models` so the
canary robots move at once). Safety signals (robots on canary reporting errors or refused checkpoints) come from
whoever sees heartbeats: the dashboard passes its live fleet state; `fleet models canary watch` has none.

Run it as `fleet models canary watch`, or let the dashboard run it (every `DashboardConfig.canary_interval_s`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fleet.canary import CANARY, CanaryPolicy, Cohort, Comparison, Decision, EpisodeOutcome, compare, decide
from fleet.registry import PRODUCTION, PinnedError, Registry, VersionInfo

log = logging.getLogger(__name__)

# (canary version, its cohort) -> how many canary robots report an error now
ErrorCount = Callable[[str, Cohort], int]
# (the version, event, alias, reason) -> announce it to the robots (whatever it returns is ignored)
Announce = Callable[[VersionInfo, str, str | None, str], object]


@dataclass(frozen=True)
class CanaryStatus:
    """A running rollout and what its A/B says now."""

    version: str
    production: str | None
    cohort: Cohort
    started_at: datetime | None
    tasks: tuple[str, ...]  # the strata (task/embodiment) both sides ran: the only ones compared
    comparisons: list[Comparison]
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "production": self.production, "cohort": asdict(self.cohort),
            "started_at": self.started_at.isoformat() if self.started_at else None, "tasks": list(self.tasks),
            "comparisons": [asdict(c) for c in self.comparisons], "decision": self.decision.details(),
        }  # fmt: skip


class CanaryController:
    """Watches the running canary (if any) and promotes or rolls it back; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        sessions: sessionmaker[Session],
        policy: CanaryPolicy | None = None,
        *,
        errors: ErrorCount | None = None,
        announce: Announce | None = None,
        actor: str = "canary-controller",
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.policy = policy or CanaryPolicy()
        self.errors = errors
        self.announce = announce
        self.actor = actor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval_s: float) -> CanaryController:
        """Look every `interval_s` in a background thread until `stop()`; a failed look is logged and retried."""

        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.step()
                except Exception as err:  # noqa: BLE001 - registry or DB down: the rollout waits, robots keep acting
                    log.warning("canary controller: look failed", extra={"error": str(err)})

        self._thread = threading.Thread(target=run, name="canary-controller", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def status(self) -> CanaryStatus | None:
        running = self.registry.canary()
        if running is None:
            return None
        info, cohort = running
        production = self.registry.version_for_alias(PRODUCTION)
        started = self._started_at(info.version)
        episodes = self._episodes(info.version, production.version if production else None, started)
        comparisons = (
            compare(episodes, canary_version=info.version, production_version=production.version,
                    alpha=self.policy.alpha)
            if production is not None else []
        )  # fmt: skip
        errors = self.errors(info.version, cohort) if self.errors is not None else 0
        strata = [
            {e.stratum for e in episodes if e.version == v} for v in (info.version, production and production.version)
        ]
        tasks = tuple(sorted(strata[0] & strata[1]))
        return CanaryStatus(
            version=info.version, production=production.version if production else None, cohort=cohort,
            started_at=started, tasks=tasks, comparisons=comparisons,
            decision=decide(comparisons, self.policy, errors=errors),
        )  # fmt: skip

    def step(self) -> CanaryStatus | None:
        """Look once and act on the decision; the status it acted on (None when no rollout runs)."""
        status = self.status()
        if status is None or status.decision.action == "continue":
            return status
        decision = status.decision
        try:
            info = self.registry.end_canary(
                decision.action, actor=self.actor, role="service", reason=decision.reason,
                details=decision.details(), automatic=True,
            )  # fmt: skip
        except PinnedError as err:  # an operator pinned production: a promotion waits for them, a rollback never does
            log.warning("canary decision held", extra={"version": status.version, "reason": str(err)})
            return status
        log.warning(
            "canary %s", decision.action,
            extra={"version": status.version, "reason": decision.reason, "production": status.production},
        )  # fmt: skip
        if self.announce is not None:
            event, alias = ("promoted", PRODUCTION) if decision.action == "promote" else ("canary_ended", CANARY)
            self.announce(info, event, alias, decision.reason)
        return status

    def _started_at(self, version: str) -> datetime | None:
        from fleet.db.models import Deployment

        with self.sessions() as session:
            return session.scalars(
                select(Deployment.created_at)
                .where(Deployment.alias == CANARY, Deployment.action == "canary", Deployment.version == version)
                .order_by(Deployment.id.desc())
                .limit(1)
            ).first()

    def _episodes(self, canary: str, production: str | None, since: datetime | None) -> list[EpisodeOutcome]:
        """Finished fleet episodes of either version since the rollout began, each with its task/embodiment."""
        from fleet.db.models import Episode

        versions = [v for v in (canary, production) if v is not None]
        columns = (Episode.model_version, Episode.task, Episode.embodiment, Episode.success, Episode.interventions,
                   Episode.length, Episode.missed_ticks)  # fmt: skip
        query = select(*columns).where(
            Episode.model_version.in_(versions), Episode.ended_at.is_not(None), Episode.source == "fleet"
        )
        if since is not None:
            query = query.where(Episode.ended_at >= since)
        with self.sessions() as session:
            rows = session.execute(query).all()
        return [
            EpisodeOutcome(
                str(r.model_version),
                bool(r.success),
                int(r.interventions or 0),
                int(r.length or 0),
                f"{r.task}/{r.embodiment}",
                int(r.missed_ticks or 0),
            )  # fmt: skip
            for r in rows
        ]
