"""Nothing the dashboard acknowledges is lost: a robot's posted message is answered 202 only once Kafka has stored
it, and a review's verdict is published from the outbox only after its transaction commits, again after a restart
until Kafka acknowledges it, and never when the transaction rolls back."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import func, select

from dashboards import crud
from dashboards.outbox import Outbox
from fleet.db import Correction, OutboxMessage
from fleet.schemas import Review as ReviewMessage
from fleet.schemas import decode, encode
from fleet.settings import Settings
from fleet.stack.process import free_port
from fleet.transport import HEARTBEATS, REVIEWS, Delivery, KafkaTransport, TransportConfig
from tests.dashboards.conftest import Dash
from tests.dashboards.factories import add_correction, add_episode, heartbeat
from tests.data.fakes import FakeTransport
from tests.faults.record import record_fault

pytestmark = pytest.mark.timeout(120)
MSGPACK = {"Content-Type": "application/msgpack"}


class Unacked(FakeTransport):
    """A broker that takes messages and never acknowledges them (down, or partitioned away), or fails each one."""

    def __init__(self, error: str | None = None) -> None:
        super().__init__()
        self.error, self.sent = error, 0

    def send(self, topic: str, value: bytes, *, key: str | None, headers: Sequence = (), on_delivery=None) -> bool:  # type: ignore[no-untyped-def,override]
        self.sent += 1
        if self.error is not None and on_delivery is not None:
            on_delivery(Delivery(topic, key, None, None, self.error))
        return True


def _robot_token(dash: Dash, robot_id: str) -> dict[str, str]:
    with dash.services.sessions() as s:
        _, token = crud.create_token(s, name=robot_id, scopes=["robot:produce"], robot_id=robot_id)
        s.commit()
    return {"Authorization": f"Bearer {token}", **MSGPACK}


def _fast_timeouts(dash: Dash, transport: FakeTransport) -> None:
    services = dash.services
    services.config = dataclasses.replace(services.config, ingest_ack_timeout_s=0.3)
    services.transport = transport
    services.outbox = Outbox(services.sessions, transport)


def test_a_posted_message_is_answered_with_where_kafka_stored_it(dash: Dash) -> None:
    r = dash.client.post("/api/v1/robots/robot-a/messages", content=encode(heartbeat("robot-a")),
                         headers=_robot_token(dash, "robot-a"))  # fmt: skip
    assert r.status_code == 202, r.text
    [record] = dash.transport.broker.records(HEARTBEATS)
    assert r.json() == {"kind": "heartbeat", "topic": HEARTBEATS, "robot_id": "robot-a",
                        "partition": record.partition, "offset": record.offset}  # fmt: skip


@pytest.mark.parametrize("error", [None, "KafkaTimeoutError"])
def test_a_message_kafka_has_not_stored_is_a_503_to_send_again(dash: Dash, error: str | None) -> None:
    headers = _robot_token(dash, "robot-a")
    transport = Unacked(error)
    _fast_timeouts(dash, transport)
    started = time.monotonic()
    r = dash.client.post("/api/v1/robots/robot-a/messages", content=encode(heartbeat("robot-a")), headers=headers)
    assert r.status_code == 503, r.text
    assert "send it again" in r.json()["detail"] and (error is None or error in r.json()["detail"])
    assert transport.sent == 1 and time.monotonic() - started < 10


@pytest.fixture()
def queue(dash: Dash) -> Dash:
    with dash.services.sessions() as s:
        add_episode(s)
        add_correction(s)
        s.commit()
    return dash


def _review(dash: Dash, decision: str) -> None:
    r = dash.client.post("/api/v1/corrections/c-1/review", json={"decision": decision}, headers=dash.auth("reviewer"))
    assert r.status_code == 200, r.text


def test_a_verdict_kafka_has_not_acknowledged_is_sent_again_after_a_restart(queue: Dash) -> None:
    transport = Unacked()
    _fast_timeouts(queue, transport)
    _review(queue, "reject")
    _review(queue, "approve")
    assert transport.sent == 2 and queue.services.outbox.pending() == 2  # sent, never acknowledged: kept
    assert queue.services.outbox.relay() == 0  # in flight: not sent twice by this process
    restarted = Outbox(queue.services.sessions, queue.transport)  # a new dashboard process, Kafka back
    assert restarted.relay() == 2
    sent = [decode(r.value, ReviewMessage) for r in queue.transport.broker.records(REVIEWS)]
    assert [(m.correction_id, m.decision) for m in sent] == [("c-1", "reject"), ("c-1", "approve")]  # in order
    assert restarted.pending() == 0 and restarted.relay() == 0  # acknowledged rows are gone


def test_a_rejection_committed_before_the_dashboard_died_still_takes_the_correction_out_of_training(
    queue: Dash,
) -> None:
    """The learner holds correction c-1's steps; a reviewer rejects it; the dashboard commits the verdict and dies
    before Kafka acknowledges it. The next dashboard process relays it, and the learner drops the steps."""
    from fleet.policy.config import debug_model_config
    from learner.ingest import Ingest
    from learner.replay import ReplayBuffer, ReplayConfig
    from tests.learner.fakes import correction, segments
    from tests.policy.fakes import FAKE_ENCODER, HashEmbedder

    replay = ReplayBuffer(ReplayConfig(), debug_model_config(text_encoder=FAKE_ENCODER), embedder=HashEmbedder())
    ingest = Ingest(replay)
    for message in segments("robot-1", "ep-1", lengths=(10, 20), success=False):
        ingest.handle(message)
    ingest.handle(correction("robot-1", "ep-1", "c-1", 12, 9))
    assert len(replay.correction_steps("c-1")) == 9
    _fast_timeouts(queue, Unacked())
    _review(queue, "reject")  # committed; Kafka never acknowledged it; the process dies
    restarted = Outbox(queue.services.sessions, queue.transport)
    restarted.relay()
    for record in queue.transport.broker.records(REVIEWS):
        ingest.handle(decode(record.value, ReviewMessage))
    left = len(replay.correction_steps("c-1"))
    record_fault("dashboard_killed_between_review_commit_and_ack", lost=restarted.pending(), trained_on_rejected=left)
    assert restarted.pending() == 0 and left == 0


def test_a_failed_delivery_is_sent_again_by_the_same_process(queue: Dash) -> None:
    failing = Unacked("NotEnoughReplicas")
    _fast_timeouts(queue, failing)
    _review(queue, "reject")
    assert failing.sent == 1 and queue.services.outbox.pending() == 1
    queue.services.outbox.transport = queue.transport  # the broker recovers
    assert queue.services.outbox.relay() == 1 and queue.services.outbox.pending() == 0
    assert [decode(r.value, ReviewMessage).decision for r in queue.transport.broker.records(REVIEWS)] == ["reject"]


class Raising(FakeTransport):
    """A producer that raises on send (e.g. its client died), as the relay right after a commit can meet."""

    def send(self, topic: str, value: bytes, *, key: str | None, headers: Sequence = (), on_delivery=None) -> bool:  # type: ignore[no-untyped-def,override]
        raise RuntimeError("producer closed")


def test_a_committed_verdict_is_answered_200_when_the_relay_fails_and_sent_later(queue: Dash) -> None:
    _fast_timeouts(queue, Raising())
    _review(queue, "reject")  # 200: the verdict is committed; the relay's failure is logged, not answered
    assert queue.services.outbox.pending() == 1
    with queue.services.sessions() as s:
        assert s.get(Correction, "c-1").status == "rejected"
    queue.services.outbox.transport = queue.transport  # the producer is back: the relay thread's next pass
    assert queue.services.outbox.relay() == 1 and queue.services.outbox.pending() == 0
    assert [decode(r.value, ReviewMessage).decision for r in queue.transport.broker.records(REVIEWS)] == ["reject"]


def test_a_verdict_whose_transaction_rolls_back_is_never_published(queue: Dash) -> None:
    outbox = queue.services.outbox
    with queue.services.sessions() as s:
        row = s.get(Correction, "c-1")
        row.status = "rejected"
        Outbox.add(s, ReviewMessage(review_id="rev-x", correction_id="c-1", robot_id="robot-1", reviewer="r",
                                    decision="reject", created_at=1.0))  # fmt: skip
        s.flush()
        s.rollback()  # e.g. the audit row failed to insert
    assert outbox.relay() == 0 and not queue.transport.broker.records(REVIEWS)
    with queue.services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        assert s.get(Correction, "c-1").status == "pending"


# --- against the real broker ----------------------------------------------------------------------------------


def test_the_real_broker_holds_the_message_at_the_offset_the_202_names(
    stack: Settings, kafka_bootstrap: str, dash: Dash
) -> None:
    transport = KafkaTransport(TransportConfig.from_settings(stack, client_id="dashboard-durable-test"))
    try:
        _fast_timeouts(dash, transport)  # type: ignore[arg-type]
        dash.services.config = dataclasses.replace(dash.services.config, ingest_ack_timeout_s=30.0)
        robot = f"robot-{uuid.uuid4().hex[:8]}"
        body = encode(heartbeat(robot))
        r = dash.client.post(f"/api/v1/robots/{robot}/messages", content=body, headers=_robot_token(dash, robot))
        assert r.status_code == 202, r.text
        where = TopicPartition(HEARTBEATS, r.json()["partition"])
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
        try:
            consumer.assign([where])
            consumer.seek(where, r.json()["offset"])
            records = consumer.poll(timeout_ms=10_000, max_records=1).get(where, [])
        finally:
            consumer.close()
        assert [rec.value for rec in records] == [body]
    finally:
        transport.close()


def test_no_broker_is_a_503_not_a_202(dash: Dash, tmp_path: Path) -> None:
    config = TransportConfig(bootstrap=f"127.0.0.1:{free_port()}", client_id="dashboard-no-broker")
    transport = KafkaTransport(config)
    try:
        headers = _robot_token(dash, "robot-a")
        _fast_timeouts(dash, transport)  # type: ignore[arg-type]
        dash.services.config = dataclasses.replace(dash.services.config, ingest_ack_timeout_s=2.0)
        r = dash.client.post("/api/v1/robots/robot-a/messages", content=encode(heartbeat("robot-a")), headers=headers)
        assert r.status_code == 503 and "has not stored the message within 2 s" in r.json()["detail"], r.text
    finally:
        transport.close(timeout_s=0.5)
