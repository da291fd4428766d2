"""The local MLflow tracking server: SQLite backend store, local artifact root, served over HTTP.

Production points `FLEET_MLFLOW_TRACKING_URI` at a shared server (PostgreSQL store + object store)
and nothing here runs.
"""

from __future__ import annotations

import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

from fleet.settings import Settings
from fleet.stack.mlflow_auth import auth_ini
from fleet.stack.process import ManagedProcess


class MlflowService:
    """Start, stop and probe the local MLflow tracking server."""

    name = "mlflow"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def address(self) -> str:
        return f"http://{self.settings.host}:{self.settings.mlflow_port}"

    @property
    def ports(self) -> list[int]:
        return [self.settings.mlflow_port]

    def process(self) -> ManagedProcess:
        s = self.settings
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            s.mlflow_store_uri,
            "--artifacts-destination",
            s.mlflow_artifacts,
            "--host",
            s.host,
            "--port",
            str(s.mlflow_port),
            "--workers",
            "1",
        ]
        env = {
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            # MLflow 3's server job runner (GenAI jobs fleet never submits) polls from 7 huey worker processes:
            # ~60% of a core and ~1.4 GB (measured beside bench/latency.py on 2 cores), taken from robots and learner.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        if s.mlflow_admin_password is not None:  # every caller logs in (fleet.stack.mlflow_auth)
            argv += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self.auth_config)
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = s.mlflow_admin_password.get_secret_value()
            # signs the CSRF tokens of MLflow's own pages; one local server, so a fresh key per start
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_urlsafe(32)
        return ManagedProcess(self.name, argv, s.run_dir, s.log_dir / "mlflow.log", env=env, cwd=s.home)

    @property
    def auth_config(self) -> Path:
        return self.settings.run_dir / "mlflow-auth.ini"

    def prepare(self) -> ManagedProcess:
        if self.settings.mlflow_admin_password is not None:
            self.settings.run_dir.mkdir(parents=True, exist_ok=True)
            users = self.settings.home / "mlflow" / "auth.db"
            users.parent.mkdir(parents=True, exist_ok=True)
            self.auth_config.write_text(auth_ini(f"sqlite:///{users}"))
        store = self.settings.mlflow_store_uri
        if store.startswith("sqlite:///"):
            Path(store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if "://" not in self.settings.mlflow_artifacts:
            Path(self.settings.mlflow_artifacts).mkdir(parents=True, exist_ok=True)
        return self.process()

    def healthy(self, timeout_s: float = 3.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/health", timeout=timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False
