"""The one place fleet makes an MLflow client: the registry, the training stages, the dashboard's training page and
the MLflow set-up job all come through here."""

from __future__ import annotations

import os
from typing import Any


def mlflow_client(tracking_uri: str) -> Any:
    """An `MlflowClient` for the tracking server and the model registry at `tracking_uri` (credentials, when the
    server wants them, come from MLFLOW_TRACKING_USERNAME / _PASSWORD as MLflow reads them).

    MLflow's client retries a dead server for minutes by default; robots and the learner poll and queue instead, so
    it fails fast (an explicit MLFLOW_HTTP_REQUEST_* in the environment still wins)."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
