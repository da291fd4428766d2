"""Consumer lag per topic for the fleet's consumer groups (the Training page)."""

from __future__ import annotations

from typing import Any

from dashboards.errors import Unavailable
from fleet.transport import TransportConfig, TransportError
from fleet.transport.kafka import group_lag

GROUPS = ("recorder", "learner")


def consumer_lag(config: TransportConfig, *, groups: tuple[str, ...] = GROUPS) -> list[dict[str, Any]]:
    """One row per (group, topic): committed offset, end offset and lag summed over partitions."""
    try:
        return group_lag(config, groups)
    except TransportError as e:
        raise Unavailable(str(e)) from None
