"""Training: consumer lag per topic and group (learner, recorder) and the learner's progress."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from dashboards.deps import ServicesDep, ViewerUser
from dashboards.errors import Unavailable
from dashboards.lag import consumer_lag

router = APIRouter(tags=["training"])


def training_status(services: Any) -> dict[str, Any]:
    if services.transport_config is None:
        raise Unavailable("no Kafka configured: run `fleet up` or set FLEET_KAFKA_BOOTSTRAP")
    return {"generated_at": time.time(), "lag": consumer_lag(services.transport_config)}


@router.get("/training")
def training(services: ServicesDep, user: ViewerUser) -> dict[str, Any]:
    """Lag (end offset − committed offset) per topic for the recorder and learner consumer groups."""
    return training_status(services)
