"""MLflow with authentication (its basic-auth app, really started): no caller without a password, and each service's
user can do what that service does and nothing more (fleet.stack.mlflow_auth)."""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from pydantic import SecretStr

from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from fleet.registry import EXPERIMENT, Registry, RegistryError, publish_model
from fleet.settings import Settings
from fleet.stack.mlflow_auth import SERVICE_PERMISSIONS, setup_users
from fleet.stack.mlflow_server import MlflowService
from fleet.stack.process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict[str, str]]]:
    """A local MLflow server running the basic-auth app, set up as the mlflow-setup job sets up production."""
    port = free_port()
    admin = secrets.token_urlsafe(24)
    settings = Settings(
        home=tmp_path_factory.mktemp("mlflow-auth"), mlflow_port=port, mlflow_tracking_uri=f"http://127.0.0.1:{port}",
        mlflow_backend_store_uri=None, mlflow_artifacts_destination=None, mlflow_admin_password=SecretStr(admin),
        model_name="vla-auth-test",
    )  # fmt: skip
    service = MlflowService(settings)
    process = service.prepare()
    process.start()
    try:
        deadline = time.monotonic() + 120
        while not service.healthy(timeout_s=2.0):
            assert process.pid() is not None, process.log_tail()
            assert time.monotonic() < deadline, "MLflow with basic auth did not answer within 120 s"
            time.sleep(1.0)
        passwords = {service: secrets.token_urlsafe(24) for service in SERVICE_PERMISSIONS}
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            mp.setenv("MLFLOW_TRACKING_PASSWORD", admin)
            granted = setup_users(settings.tracking_uri, passwords, experiment=EXPERIMENT, model_name="vla-auth-test")
            assert granted == SERVICE_PERMISSIONS
            assert setup_users(settings.tracking_uri, passwords, experiment=EXPERIMENT, model_name="vla-auth-test")
        yield settings, passwords
    finally:
        process.stop()


def _as(monkeypatch: pytest.MonkeyPatch, user: str, password: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_no_password_no_access(secured: tuple[Settings, dict[str, str]]) -> None:
    settings, _ = secured
    url = f"{settings.tracking_uri}/api/2.0/mlflow/registered-models/get?name=vla-auth-test"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401


def test_each_service_does_its_own_work_and_no_more(
    secured: tuple[Settings, dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, passwords = secured
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # the learner publishes a signed version and makes it production
    _as(monkeypatch, "learner", passwords["learner"])
    learner = Registry(settings, sessions=False)
    v1 = publish_model(learner, VLAModel(debug_model_config()), parent_version=None)
    learner.promote(v1.version, actor="learner", role="service", reason="first version")

    # a robot finds production and downloads it, verified ...
    _as(monkeypatch, "robots", passwords["robots"])
    robot = Registry(settings, sessions=False)
    production = robot.version_for_alias("production")
    assert production is not None and production.version == v1.version
    assert (robot.download(v1.version, tmp_path / "v1") / "model.safetensors").is_file()
    # ... and can neither publish nor move an alias
    with pytest.raises((MlflowException, RegistryError), match="PERMISSION_DENIED|Permission denied|403"):
        publish_model(robot, VLAModel(debug_model_config()), parent_version=v1.version)
    with pytest.raises((MlflowException, RegistryError), match="PERMISSION_DENIED|Permission denied|403"):
        robot.client.set_registered_model_alias("vla-auth-test", "production", v1.version)

    # the dashboard moves aliases (promote, roll back) but cannot delete the model or its versions
    _as(monkeypatch, "dashboard", passwords["dashboard"])
    dashboard = Registry(settings, sessions=False)
    dashboard.client.set_registered_model_alias("vla-auth-test", "canary", v1.version)
    assert dashboard.version_for_alias("canary").version == v1.version  # type: ignore[union-attr]
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied|403"):
        dashboard.client.delete_model_version("vla-auth-test", v1.version)

    # a wrong password is no user at all
    _as(monkeypatch, "learner", "not-the-password-0123456789")
    with pytest.raises(MlflowException, match="401|Unauthorized|credentials"):
        Registry(settings, sessions=False).client.get_registered_model("vla-auth-test")


def test_the_production_configuration_is_the_one_tested() -> None:
    import yaml

    from fleet.stack.mlflow_auth import auth_ini

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert (ROOT / "docker" / "mlflow-auth.ini").read_text() == auth_ini("sqlite:////auth/basic_auth.db")
    assert "--app-name=basic-auth" in compose["mlflow"]["command"]
    assert compose["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    users = {"learner": "learner", "dashboard": "dashboard", "actors": "robots"}
    for name, user in users.items():
        env = compose[name]["environment"]
        assert env["MLFLOW_TRACKING_USERNAME"] == user
        assert env["MLFLOW_TRACKING_PASSWORD"].startswith(f"${{MLFLOW_{user.upper()}_PASSWORD:?"), name
    assert "MLFLOW_TRACKING_PASSWORD" not in compose["recorder"]["environment"]  # it never talks to MLflow
    setup = compose["mlflow-setup"]
    assert setup["command"] == ["models", "setup-users"] and setup["environment"]["MLFLOW_TRACKING_USERNAME"] == "admin"
    for name in users:
        assert compose[name]["depends_on"]["mlflow-setup"] == {"condition": "service_completed_successfully"}
