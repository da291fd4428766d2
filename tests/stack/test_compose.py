"""docker-compose.yml: the production stack is complete and takes its secrets from the environment.

No Docker engine or compose plugin exists on the development machines, so this checks structure;
`docker compose config` is the real check where the plugin is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_every_service() -> None:
    services = _compose()["services"]
    assert {"kafka", "postgres", "mlflow", "recorder", "learner", "actors", "dashboard"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("recorder", "learner", "actors", "dashboard"):
        assert services[name]["build"] == "."
        assert services[name]["environment"]["FLEET_ENV"] == "production"


def test_compose_has_no_inline_secrets() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    secrets = list(re.finditer(r"^\s*\w*(PASSWORD|SECRET_KEY)\s*:\s*(\S+)", text, re.MULTILINE))
    assert len(secrets) >= 2  # the services' secret key and the PostgreSQL password
    for match in secrets:
        assert match.group(2).startswith("${") and ":?" in match.group(2), match.group(0)
    for match in re.finditer(r"://fleet:([^@]+)@", text):
        assert match.group(1).startswith("${POSTGRES_PASSWORD:?"), match.group(0)


def test_production_settings_refuse_missing_secrets(monkeypatch) -> None:  # noqa: ANN001
    import pydantic
    import pytest

    from fleet.settings import Settings

    monkeypatch.setenv("FLEET_ENV", "production")
    with pytest.raises(pydantic.ValidationError, match="FLEET_SECRET_KEY"):
        Settings()
