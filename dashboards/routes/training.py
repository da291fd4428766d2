"""Training: consumer lag per topic and group (learner, recorder), and the learner's throughput and loss curves.

Each section fails on its own: with Kafka or MLflow down the other still shows, and the dead one
carries an `error` message instead of data (the API answers 200 either way).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from dashboards.charts import series_svg
from dashboards.deps import ServicesDep, ViewerUser
from dashboards.errors import Unavailable
from dashboards.lag import consumer_lag
from dashboards.training_metrics import SAMPLES_PER_S, UPDATES_PER_S

router = APIRouter(tags=["training"])


def training_status(services: Any) -> dict[str, Any]:
    lag: list[dict[str, Any]] = []
    lag_error: str | None = None
    try:
        if services.transport_config is None:
            raise Unavailable("no Kafka configured: run `fleet up` or set FLEET_KAFKA_BOOTSTRAP")
        lag = consumer_lag(services.transport_config)
    except Unavailable as e:
        lag_error = e.detail
    return {"generated_at": time.time(), "lag": lag, "lag_error": lag_error, "learner": services.learner_progress()}


def learner_charts(learner: dict[str, Any]) -> list[str]:
    """Inline SVG charts of the newest learner run: updates/s, samples/s, then one per loss."""
    if learner.get("run_id") is None:
        return []

    def xy(points: list[dict[str, float]]) -> list[tuple[float, float]]:
        return [(p["step"], p["value"]) for p in points]

    throughput = learner["throughput"]
    suffix = " (derived from log times)" if learner.get("derived") else ""
    charts = [
        series_svg({name: xy(throughput.get(name, []))}, title=f"{name}{suffix}")
        for name in (UPDATES_PER_S, SAMPLES_PER_S)
    ]
    charts.extend(series_svg({name: xy(points)}, title=name) for name, points in learner["losses"].items())
    return charts


@router.get("/training")
def training(services: ServicesDep, user: ViewerUser) -> dict[str, Any]:
    """Lag (end offset − committed offset) per topic for the recorder and learner consumer groups, and the newest
    learner run's series from MLflow: `learner.throughput` (`charts/updates_per_s`, `charts/samples_per_s`) and
    `learner.losses` (`losses/…`), each a list of {step, timestamp, value}; `lag_error` / `learner.error` say
    why a section is empty."""
    return training_status(services)
