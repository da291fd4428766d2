"""The learner's training metrics: throughput between logs, and its MLflow run (the dashboard's Training page).

Metrics are best effort: without MLflow the learner trains on, sending nothing for a while after each failure
rather than stalling every update on an unreachable server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fleet.mlflow_client import mlflow_client

log = logging.getLogger(__name__)
RETRY_S = 15.0  # after a failed log, metrics are skipped this long
EXPERIMENT = "fleet-learner"


class Throughput:
    """Updates and samples per second of wall clock between metric logs (the dashboard's throughput curves).

    The clock starts at the first update, so start-up and waiting for `min_replay` don't count; after
    that, polls, checkpoints and the eval gate do, because together they limit how fast the policy improves.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._since: float | None = None
        self._updates = 0
        self._samples = 0

    def start(self) -> None:
        if self._since is None:
            self._since = self.clock()

    def count(self, samples: int) -> None:
        self.start()
        self._updates += 1
        self._samples += samples

    def rates(self) -> dict[str, float]:
        """`charts/updates_per_s` and `charts/samples_per_s` since the last call (or the first update)."""
        now = self.clock()
        elapsed = max(now - (self._since if self._since is not None else now), 1e-9)
        out = {"charts/updates_per_s": self._updates / elapsed, "charts/samples_per_s": self._samples / elapsed}
        self._since, self._updates, self._samples = now, 0, 0
        return out


class TrainingRun:
    """One MLflow run of the learner's curves (`log`), ended by `close`; `run_id` None when none could start."""

    def __init__(self, tracking_uri: str, *, preset: str) -> None:
        self.client = mlflow_client(tracking_uri)
        self._retry_at = 0.0  # monotonic time before which metrics are not sent (after a failure)
        try:
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            exp_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
            run = self.client.create_run(exp_id, tags={"fleet.kind": "learner", "fleet.preset": preset})
            self.run_id: str | None = run.info.run_id
        except Exception as e:  # metrics are best-effort; training must not stop for them
            log.warning("learner: no MLflow run for training metrics (%s)", e)
            self.run_id = None

    def log(self, values: dict[str, float], *, step: int) -> None:
        if self.run_id is None or time.monotonic() < self._retry_at:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as e:  # MLflow down: skip metrics for a while rather than stall every update on it
            self._retry_at = time.monotonic() + RETRY_S
            log.warning("learner: metrics not logged (%s); next try in %.0f s", e, RETRY_S)

    def close(self) -> None:
        if self.run_id is not None:
            try:
                self.client.set_terminated(self.run_id)
            except Exception as e:
                log.warning("learner: could not close the MLflow run (%s)", e)
