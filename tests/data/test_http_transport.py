"""A robot's HTTPS transport (fleet.transport.http) against a scripted dashboard: in order, once, nothing lost.

`httpx.MockTransport` plays the dashboard's ingestion endpoint here; tests/faults/test_dashboard_kill.py runs the
transport against the real dashboard, killed while robots post."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fleet.transport import Delivery
from fleet.transport.http import HttpTransport, HttpTransportConfig

pytestmark = pytest.mark.timeout(60)


class Dashboard:
    """The ingestion endpoint, scripted: `answer(body)` returns a status (202 stores the body) or raises."""

    def __init__(self) -> None:
        self.stored: list[bytes] = []
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[bytes], int] = lambda body: 202
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            status = self.answer(request.content)
            if status == 202:
                self.stored.append(request.content)
                return httpx.Response(
                    202, json={"kind": "heartbeat", "topic": "fleet.heartbeats", "robot_id": "r-1",
                               "partition": 0, "offset": len(self.stored) - 1},
                )  # fmt: skip
            return httpx.Response(status, json={"detail": f"scripted {status}"})


def down(body: bytes) -> int:
    raise httpx.ConnectError("connection refused")


def _transport(dash: Dashboard, spool: Path | None, **overrides: object) -> HttpTransport:
    config = HttpTransportConfig(
        url="http://dashboard.test", robot_id="r-1", token="robot-token", spool_dir=spool, retry_s=0.05, **overrides
    )  # type: ignore[arg-type]
    return HttpTransport(config, client=httpx.Client(transport=httpx.MockTransport(dash)))


def _send(transport: HttpTransport, bodies: list[bytes], deliveries: list[Delivery] | None = None) -> None:
    for body in bodies:
        assert transport.send(
            "fleet.heartbeats", body, key="r-1", on_delivery=deliveries.append if deliveries is not None else None
        )


def test_messages_are_posted_in_order_with_the_robots_token_and_answered_with_where_kafka_put_them(
    tmp_path: Path,
) -> None:
    dash = Dashboard()
    transport = _transport(dash, tmp_path / "spool")
    deliveries: list[Delivery] = []
    _send(transport, [b"m%d" % i for i in range(20)], deliveries)
    assert transport.flush(10)
    transport.close()
    assert dash.stored == [b"m%d" % i for i in range(20)]
    request = dash.requests[0]
    assert request.url.path == "/api/v1/robots/r-1/messages"
    assert request.headers["authorization"] == "Bearer robot-token"
    assert request.headers["content-type"] == "application/msgpack"
    assert [(d.offset, d.error) for d in deliveries] == [(i, None) for i in range(20)]
    assert (transport.stats.acked, transport.stats.spooled, transport.stats.dropped) == (20, 0, 0)


@pytest.mark.parametrize("outage", ["refused", "503", "timeout", "401"])
def test_while_the_dashboard_cannot_take_messages_they_wait_on_disk_and_arrive_in_order_once(
    tmp_path: Path, outage: str
) -> None:
    dash = Dashboard()
    transport = _transport(dash, tmp_path / "spool")
    deliveries: list[Delivery] = []
    _send(transport, [b"before"], deliveries)
    assert transport.flush(10)

    def unavailable(body: bytes) -> int:
        if outage == "refused":
            raise httpx.ConnectError("connection refused")
        if outage == "timeout":
            raise httpx.ReadTimeout("no answer")
        return int(outage)

    dash.answer = unavailable
    _send(transport, [b"d%d" % i for i in range(30)], deliveries)
    assert not transport.flush(0.5)
    assert transport.state == "down" and transport.spooled == 30 and list((tmp_path / "spool").glob("spool-*"))
    assert dash.stored == [b"before"]
    dash.answer = lambda body: 202
    _send(transport, [b"after"], deliveries)
    assert transport.flush(10)
    transport.close()
    assert dash.stored == [b"before", *(b"d%d" % i for i in range(30)), b"after"]
    assert [d.error for d in deliveries] == [None] * 32 and transport.stats.dropped == 0
    assert transport.spooled == 0


def test_a_message_the_dashboard_refuses_is_dropped_with_its_reason_and_the_rest_go_on(tmp_path: Path) -> None:
    dash = Dashboard()
    dash.answer = lambda body: 413 if body == b"huge" else 202
    transport = _transport(dash, tmp_path / "spool")
    deliveries: list[Delivery] = []
    _send(transport, [b"a", b"huge", b"b"], deliveries)
    assert transport.flush(10)
    transport.close()
    assert dash.stored == [b"a", b"b"]
    assert [d.error for d in deliveries] == [None, "HTTP 413: scripted 413", None]
    assert transport.stats.dropped == 1


def test_a_robot_restarted_on_its_spool_sends_what_the_last_run_could_not(tmp_path: Path) -> None:
    dash = Dashboard()
    dash.answer = down
    first = _transport(dash, tmp_path / "spool")
    _send(first, [b"s%d" % i for i in range(10)])
    first.close(timeout_s=0.3)  # the dashboard is still down: they stay spooled
    assert dash.stored == []
    dash.answer = lambda body: 202
    second = _transport(dash, tmp_path / "spool")
    assert second.spooled == 10
    _send(second, [b"new"])
    assert second.flush(10)
    second.close()
    assert dash.stored == [*(b"s%d" % i for i in range(10)), b"new"]


def test_a_damaged_spool_record_is_dropped_and_the_others_sent(tmp_path: Path) -> None:
    dash = Dashboard()
    dash.answer = down
    first = _transport(dash, tmp_path / "spool")
    _send(first, [b"x%d" % i for i in range(5)])
    first.close(timeout_s=0.3)
    [segment] = sorted((tmp_path / "spool").glob("spool-*"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit pattern flipped inside the third record's payload
    segment.write_bytes(bytes(data))
    dash.answer = lambda body: 202
    second = _transport(dash, tmp_path / "spool")
    assert second.flush(10)
    second.close()
    assert dash.stored == [b"x0", b"x1", b"x3", b"x4"]
    assert second.stats.dropped == 1


def test_a_full_spool_refuses_whole_messages_and_says_so(tmp_path: Path) -> None:
    dash = Dashboard()
    dash.answer = down
    transport = _transport(dash, tmp_path / "spool", spool_max_bytes=1024**2, spool_segment_bytes=1024**2)
    deliveries: list[Delivery] = []
    _send(transport, [bytes(300 * 1024) for _ in range(5)], deliveries)
    assert not transport.flush(0.5)
    transport.close(timeout_s=0.1)
    assert transport.spooled == 3 and transport.stats.dropped == 2
    assert [d.error for d in deliveries] == ["spool full", "spool full"]


def test_config_refuses_a_missing_token_or_a_url_without_a_scheme() -> None:
    with pytest.raises(ValueError, match="FLEET_ROBOT_TOKEN"):
        HttpTransportConfig(url="https://fleet.example.org", robot_id="r-1", token="")
    with pytest.raises(ValueError, match="https://"):
        HttpTransportConfig(url="fleet.example.org", robot_id="r-1", token="t")


def test_a_robot_with_an_ingest_url_posts_through_the_dashboard_and_needs_its_token(tmp_path: Path) -> None:
    from fleet.client import robot_transport
    from fleet.settings import Settings

    settings = Settings(home=tmp_path, ingest_url="http://127.0.0.1:1", robot_token="t0k")
    transport = robot_transport(settings, "r-7")
    try:
        assert isinstance(transport, HttpTransport)
        assert transport.endpoint == "http://127.0.0.1:1/api/v1/robots/r-7/messages"
        assert transport.config.spool_dir == tmp_path / "spool" / "r-7"
    finally:
        transport.close(timeout_s=0.1)
    with pytest.raises(ValueError, match="FLEET_ROBOT_TOKEN"):
        robot_transport(Settings(home=tmp_path, ingest_url="http://127.0.0.1:1"), "r-7")
    with pytest.raises(ValueError, match="HTTPS only"):
        Settings(env="production", mlflow_tracking_uri="https://m", ingest_url="http://dash", robot_token="t")
