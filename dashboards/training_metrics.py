"""The learner's training metrics read back from MLflow: throughput and loss curves for the Training page.

The learner (`learner.service`) logs `losses/…` and `charts/…` metrics to one run per process in
experiment `fleet-learner`, tagged `fleet.kind=learner`. The registry's publish runs share that
experiment (tag `fleet.kind=publish`) and carry no curves, so only learner runs are read here.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dashboards.errors import Unavailable
from fleet.registry import EXPERIMENT

log = logging.getLogger(__name__)

LEARNER_RUNS = "tags.`fleet.kind` = 'learner'"  # not the registry's publish runs (`fleet.kind=publish`)
UPDATES_PER_S = "charts/updates_per_s"
SAMPLES_PER_S = "charts/samples_per_s"
BATCH_SIZE = "charts/batch_size"
LOSS_PREFIX = "losses/"


@dataclass(frozen=True)
class LearnerMetrics:
    """Reads the newest learner runs' curves from the MLflow tracking server at `tracking_uri`."""

    tracking_uri: str
    recent_runs: int = 5  # learner runs listed on the page, newest first; curves are drawn for the newest
    max_points: int = 400  # points per series, evenly thinned (a chart is ~700 px wide)
    probe_timeout_s: float = 2.0  # a dead server answers "unavailable" after this, not after MLflow's retries

    def __post_init__(self) -> None:
        if self.recent_runs < 1 or self.max_points < 2 or self.probe_timeout_s <= 0:
            raise ValueError("LearnerMetrics: recent_runs >= 1, max_points >= 2, probe_timeout_s > 0")

    def read(self) -> dict[str, Any]:
        """Recent learner runs and the newest one's throughput and loss series (points: step, timestamp, value)."""
        self._probe()
        from fleet.mlflow_client import mlflow_client

        client = mlflow_client(self.tracking_uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            return _empty()
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=LEARNER_RUNS,
            order_by=["attributes.start_time DESC"],
            max_results=self.recent_runs,
        )
        if not runs:
            return _empty()
        newest = runs[0]
        names = sorted(newest.data.metrics)
        history = {
            name: self._history(client, newest.info.run_id, name)
            for name in names
            if name.startswith(LOSS_PREFIX) or name in (UPDATES_PER_S, SAMPLES_PER_S, BATCH_SIZE)
        }
        losses = {name: points for name, points in history.items() if name.startswith(LOSS_PREFIX)}
        throughput = {name: history[name] for name in (UPDATES_PER_S, SAMPLES_PER_S) if name in history}
        derived = not throughput and bool(losses)
        if derived:  # a learner from before the throughput metrics: rates from the log points' steps and times
            throughput = derive_throughput(next(iter(losses.values())), history.get(BATCH_SIZE, []))
        return {
            "runs": [_run_row(run) for run in runs],
            "run_id": newest.info.run_id,
            "throughput": {name: thin(points, self.max_points) for name, points in throughput.items()},
            "derived": derived,
            "losses": {name: thin(points, self.max_points) for name, points in losses.items()},
        }

    def _probe(self) -> None:
        if not self.tracking_uri.startswith(("http://", "https://")):
            return  # a local store (file:, sqlite:) has nothing to probe
        url = f"{self.tracking_uri.rstrip('/')}/health"
        try:
            with urllib.request.urlopen(url, timeout=self.probe_timeout_s):
                pass
        except (urllib.error.URLError, OSError) as e:
            raise Unavailable(
                f"MLflow not reachable at {self.tracking_uri} ({e}): run `fleet up` or set FLEET_MLFLOW_TRACKING_URI"
            ) from None

    @staticmethod
    def _history(client: Any, run_id: str, name: str) -> list[dict[str, float]]:
        points = sorted(client.get_metric_history(run_id, name), key=lambda m: (m.step, m.timestamp))
        return [{"step": m.step, "timestamp": m.timestamp / 1000.0, "value": float(m.value)} for m in points]


def _empty() -> dict[str, Any]:
    return {"runs": [], "run_id": None, "throughput": {}, "derived": False, "losses": {}}


def _run_row(run: Any) -> dict[str, Any]:
    metrics = run.data.metrics
    started = datetime.fromtimestamp(run.info.start_time / 1000.0, UTC) if run.info.start_time else None
    return {
        "run_id": run.info.run_id,
        "preset": run.data.tags.get("fleet.preset"),
        "status": run.info.status,
        "started_at": started.isoformat(timespec="seconds") if started else None,
        "updates_per_s": metrics.get(UPDATES_PER_S),
        "loss": metrics.get(f"{LOSS_PREFIX}total", metrics.get(f"{LOSS_PREFIX}action")),
    }


def derive_throughput(
    points: Sequence[dict[str, float]], batch_sizes: Sequence[dict[str, float]]
) -> dict[str, list[dict[str, float]]]:
    """Updates/s between consecutive log points (Δstep / Δtime), and samples/s with the logged batch size."""
    batch = {p["step"]: p["value"] for p in batch_sizes}
    updates: list[dict[str, float]] = []
    samples: list[dict[str, float]] = []
    for before, after in zip(points, points[1:], strict=False):
        elapsed = after["timestamp"] - before["timestamp"]
        if elapsed <= 0 or after["step"] <= before["step"]:
            continue
        rate = (after["step"] - before["step"]) / elapsed
        updates.append({"step": after["step"], "timestamp": after["timestamp"], "value": rate})
        if after["step"] in batch:
            samples.append({**updates[-1], "value": rate * batch[after["step"]]})
    out = {UPDATES_PER_S: updates}
    if samples:
        out[SAMPLES_PER_S] = samples
    return out


def thin(points: list[dict[str, float]], max_points: int) -> list[dict[str, float]]:
    """At most `max_points`, evenly spaced, always keeping the first and the last."""
    if len(points) <= max_points:
        return points
    last = len(points) - 1
    picks = sorted({round(i * last / (max_points - 1)) for i in range(max_points)})
    return [points[i] for i in picks]


def learner_section(metrics: LearnerMetrics | None) -> dict[str, Any]:
    """`LearnerMetrics.read()` plus `error`: a dead or missing MLflow gives an empty section with a message."""
    if metrics is None:
        return {**_empty(), "error": "no MLflow configured for the dashboard: run `fleet up` or `fleet dashboard`"}
    try:
        return {**metrics.read(), "error": None}
    except Unavailable as e:
        return {**_empty(), "error": e.detail}
    except Exception as e:  # any MLflow failure: the page shows it, it never answers 500
        log.warning("learner metrics from %s failed: %s", metrics.tracking_uri, e)
        return {**_empty(), "error": f"could not read the learner's metrics from MLflow at {metrics.tracking_uri}: {e}"}
