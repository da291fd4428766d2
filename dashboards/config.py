"""Tunables of the dashboard process (deployment values such as ports and secrets live in `fleet.settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.canary import CanaryPolicy


@dataclass(frozen=True)
class DashboardConfig:
    """How the dashboard watches the fleet and keeps its pages live."""

    offline_after_s: float = 5.0  # a robot with no heartbeat for this long shows as offline
    stats_window_s: float = 3600.0  # success rate / interventions are computed over episodes ended this recently
    stats_cache_s: float = 2.0  # episode stats are recomputed at most this often (keeps the status endpoint cheap)
    registry_cache_s: float = 5.0  # the production alias is asked from MLflow at most this often
    training_cache_s: float = 5.0  # the learner's curves are read from MLflow at most this often
    sse_interval_s: float = 0.5  # how often the fleet page's event stream pushes a new snapshot
    sse_max_streams: int = 100  # open event streams this process serves at once; one more gets a 429
    sse_max_streams_per_caller: int = 5  # open event streams per user (all its sessions) or per API token
    db_flush_interval_s: float = 1.0  # how often heartbeat state is written to the robots table
    session_max_age_s: int = 12 * 3600  # login session lifetime
    commands_kept: int = 2000  # most recent commands remembered for pending/applied display
    corrections_group: str = "dashboard-corrections"  # Kafka consumer group that fills the review queue
    # A robot's posted message is answered 202 only once Kafka has stored it; longer than this is a 503 (send again).
    ingest_ack_timeout_s: float = 10.0
    outbox_interval_s: float = 5.0  # how often unacknowledged review messages are sent again
    # The canary controller (`fleet.rollout`) looks at a running rollout this often and promotes or rolls it back on
    # its own; 0 leaves every canary decision to operators.
    canary_interval_s: float = 15.0
    canary_policy: CanaryPolicy = field(default_factory=CanaryPolicy)  # when the controller decides

    def __post_init__(self) -> None:
        for name in (
            "offline_after_s", "stats_window_s", "sse_interval_s", "db_flush_interval_s", "ingest_ack_timeout_s",
            "outbox_interval_s",
        ):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"DashboardConfig.{name} must be positive")
        if self.canary_interval_s < 0:
            raise ValueError("DashboardConfig.canary_interval_s must be >= 0 (0: no automatic canary decisions)")
        if not 1 <= self.sse_max_streams_per_caller <= self.sse_max_streams:
            raise ValueError("DashboardConfig needs 1 <= sse_max_streams_per_caller <= sse_max_streams")
        if self.session_max_age_s < 60:
            raise ValueError("DashboardConfig.session_max_age_s must be at least 60 s")
        if not self.corrections_group:
            raise ValueError("DashboardConfig.corrections_group must name a Kafka consumer group")
