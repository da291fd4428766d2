"""FLEET_KAFKA_SECURITY_PROTOCOL / _SASL_* reach every Kafka client fleet builds; SASL without credentials fails."""

from __future__ import annotations

import pydantic
import pytest

from fleet.settings import Settings
from fleet.transport import TransportConfig, kafka_producer_options, kafka_security_options

SASL_ENV = {
    "FLEET_KAFKA_BOOTSTRAP": "kafka:9092",
    "FLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "FLEET_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "FLEET_KAFKA_SASL_USERNAME": "recorder",
    "FLEET_KAFKA_SASL_PASSWORD": "s3cret-from-env",
    "FLEET_KAFKA_SSL_CAFILE": "/etc/fleet/ca.pem",
}


def test_sasl_settings_from_env_reach_producer_consumer_and_admin_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SASL_ENV.items():
        monkeypatch.setenv(key, value)
    config = TransportConfig.from_settings(Settings())
    assert kafka_security_options(config) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "recorder",
        "sasl_plain_password": "s3cret-from-env",
        "ssl_cafile": "/etc/fleet/ca.pem",
    }
    assert kafka_producer_options(config)["sasl_plain_password"] == "s3cret-from-env"
    assert "s3cret" not in repr(config) and "s3cret" not in repr(Settings())  # never logged with the config


def test_plaintext_is_the_local_default() -> None:
    config = TransportConfig.from_settings(Settings())
    assert kafka_security_options(config) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("missing", [k for k in SASL_ENV if "_SASL_" in k])
def test_sasl_without_credentials_is_refused_with_the_variable_to_set(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    for key, value in SASL_ENV.items():
        if key != missing:
            monkeypatch.setenv(key, value)
    with pytest.raises(pydantic.ValidationError, match=missing):
        Settings()
    with pytest.raises(ValueError, match="FLEET_KAFKA_SASL"):
        TransportConfig(bootstrap="k:9092", security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")
