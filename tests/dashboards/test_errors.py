"""The dashboard's error handlers: what a refused request tells its caller, and what stays in the log."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError

from dashboards.errors import install_handlers

DB_TEXT = "value too long for type character varying(64)\nCONTEXT: INSERT INTO users (username) at db-internal:5432"


def test_a_value_the_database_refuses_is_a_400_without_the_databases_text(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    install_handlers(app)

    @app.post("/thing")
    def thing() -> None:
        raise DataError("INSERT INTO users (username) VALUES (%(u)s)", {"u": "x" * 99}, Exception(DB_TEXT))

    with caplog.at_level(logging.WARNING, logger="dashboards.errors"):
        r = TestClient(app).post("/thing")
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "too long or out of range" in detail
    for leak in ("users", "varying", "db-internal", "INSERT", "xxxx"):
        assert leak not in detail
    incident = detail.split("incident ")[1].split()[0]
    logged = [rec.getMessage() for rec in caplog.records if incident in rec.getMessage()]
    assert logged and "db-internal" in logged[0]  # the operator still finds the whole story
