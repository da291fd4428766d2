"""Structured logs: the JSON formatter and `configure_logging`, as every service's CLI sets them up."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import numpy as np
import pytest

from fleet.observability import JsonFormatter, TextFormatter, configure_logging


def _emit(formatter: logging.Formatter, emit: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("tests.observability.emit")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        emit(logger)  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_robot_episode_and_version() -> None:
    out = _emit(
        JsonFormatter("robots"),
        lambda log: log.info(
            "swapped to %s",
            "v7",
            extra={"robot": "sim-3", "episode": "sim-3-ab12", "version": "7", "load_s": np.float32(0.25)},
        ),
    )
    lines = out.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert list(line)[:5] == ["ts", "level", "service", "logger", "msg"]
    assert line["level"] == "INFO" and line["service"] == "robots" and line["logger"] == "tests.observability.emit"
    assert line["msg"] == "swapped to v7"
    assert (line["robot"], line["episode"], line["version"]) == ("sim-3", "sim-3-ab12", "7")
    assert line["load_s"] == 0.25  # numpy scalars become JSON numbers, not strings
    assert line["ts"].endswith("Z") and "T" in line["ts"]


def test_json_keeps_tracebacks_in_one_line_and_fixed_fields_win() -> None:
    def emit(log: logging.Logger) -> None:
        try:
            raise ValueError("bad checkpoint")
        except ValueError:
            log.exception("refused", extra={"robot": "r1", "service": "spoofed"})

    lines = _emit(JsonFormatter("recorder"), emit).splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["service"] == "recorder" and line["level"] == "ERROR" and line["robot"] == "r1"
    assert "ValueError: bad checkpoint" in line["exc"]


def test_text_lines_show_the_extra_fields_once() -> None:
    out = _emit(
        TextFormatter(),
        lambda log: log.info("recorded episode robot=r1", extra={"robot": "r1", "episode": "e1", "version": "2"}),
    )
    assert out.rstrip().endswith("INFO tests.observability.emit: recorded episode robot=r1 episode=e1 version=2")


@pytest.fixture()
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_configure_logging_reads_fleet_log_format(
    root_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEET_LOG_FORMAT", "json")
    configure_logging("learner", "INFO")
    logging.getLogger("learner.service").info("published", extra={"version": "4"})
    logging.getLogger("learner.service").debug("not at INFO")
    logging.getLogger("kafka.conn").info("connection chatter stays out")
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(x)["msg"] for x in lines] == ["published"]
    assert json.loads(lines[0])["version"] == "4" and json.loads(lines[0])["service"] == "learner"

    monkeypatch.setenv("FLEET_LOG_FORMAT", "text")
    configure_logging("learner", "INFO")
    logging.getLogger("learner.service").info("published", extra={"version": "5"})
    err = capsys.readouterr().err
    assert "INFO learner.service: published version=5" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])
