"""Correction review: queue order and filters, frames and plot, verdicts published to Kafka and audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from fleet.db import AuditEntry, Correction, Review
from fleet.policy.config import debug_model_config
from fleet.schemas import Review as ReviewMessage
from fleet.schemas import decode
from fleet.transport import REVIEWS, REWARDS
from tests.dashboards.conftest import Dash
from tests.dashboards.factories import add_correction, add_episode, store_episode

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def queue(dash: Dash) -> Dash:
    store_episode(dash.services.episodes)
    with dash.services.sessions() as s:
        add_episode(s, success=False, interventions=9)
        add_correction(s, correction_id="c-old", age_s=60)
        add_correction(s, correction_id="c-new", age_s=1)
        add_correction(s, correction_id="c-other", robot_id="robot-2", task="push", version="2", age_s=30)
        s.commit()
    return dash


def ids(r) -> list[str]:  # noqa: ANN001
    return [c["id"] for c in r.json()]


def test_queue_is_newest_first_and_filterable(queue: Dash) -> None:
    h = queue.auth("viewer")
    assert ids(queue.client.get("/api/v1/corrections", headers=h)) == ["c-new", "c-other", "c-old"]
    assert ids(queue.client.get("/api/v1/corrections?robot_id=robot-2", headers=h)) == ["c-other"]
    assert ids(queue.client.get("/api/v1/corrections?task=pick&version=3", headers=h)) == ["c-new", "c-old"]


def test_detail_has_instruction_filmstrip_frames_and_plot(queue: Dash) -> None:
    h = queue.auth("viewer")
    detail = queue.client.get("/api/v1/corrections/c-new", headers=h).json()
    assert detail["instruction"] == "pick up the red cube" and detail["cameras"] == ["front"]
    steps = [f["step"] for f in detail["filmstrip"]]
    assert steps[0] == 4 and steps[-1] == 20 and len(steps) <= 12  # 8 steps of context before the takeover at 12
    assert any(f["human"] for f in detail["filmstrip"]) and not detail["filmstrip"][0]["human"]
    png = queue.client.get("/api/v1/corrections/c-new/frames/12.png", headers=h)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert queue.client.get("/api/v1/corrections/c-new/frames/99.png", headers=h).status_code == 404
    svg = queue.client.get("/api/v1/corrections/c-new/actions.svg", headers=h)
    assert svg.headers["content-type"].startswith("image/svg+xml") and "stroke-dasharray" in svg.text


def test_reject_publishes_a_review_and_leaves_the_queue(queue: Dash) -> None:
    r = queue.client.post(
        "/api/v1/corrections/c-new/review",
        json={"decision": "reject", "reason": "operator slipped"},
        headers=queue.auth("reviewer"),
    )
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    [record] = queue.transport.broker.records(REVIEWS)
    msg = decode(record.value, ReviewMessage)
    assert (msg.correction_id, msg.decision, msg.reviewer, record.key) == (
        "c-new",
        "reject",
        "reviewer-token",
        b"robot-1",
    )
    assert "c-new" not in ids(queue.client.get("/api/v1/corrections", headers=queue.auth("viewer")))
    with queue.services.sessions() as s:
        assert s.scalar(select(Review)).decision == "reject"
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "review.reject"))
        assert (entry.actor, entry.reason, entry.details["previous_status"]) == (
            "reviewer-token",
            "operator slipped",
            "pending",
        )


def test_relabel_success_publishes_a_relabel_review(queue: Dash) -> None:
    h = queue.auth("reviewer")
    assert (
        queue.client.post("/api/v1/corrections/c-old/review", json={"decision": "relabel"}, headers=h).status_code
        == 400
    )
    verdict = {"decision": "relabel", "success": True, "reason": "it worked"}
    r = queue.client.post("/api/v1/corrections/c-old/review", json=verdict, headers=h)
    assert r.status_code == 200 and r.json()["relabel_success"] is True and r.json()["status"] == "approved"
    [record] = queue.transport.broker.records(REVIEWS)
    msg = decode(record.value, ReviewMessage)
    assert (msg.correction_id, msg.decision, msg.relabel_success, msg.note) == ("c-old", "relabel", True, "it worked")
    assert queue.transport.broker.records(REWARDS) == []  # the Review carries the label; no second message
    with queue.services.sessions() as s:
        assert s.get(Correction, "c-old").relabel_success is True
        assert s.scalar(select(Review)).decision == "relabel"


def test_the_learner_applies_the_dashboards_relabel_and_reject(queue: Dash) -> None:
    """The wire contract: the Reviews this route publishes change the learner's replay as promised."""
    from learner.ingest import Ingest
    from learner.replay import ReplayBuffer, ReplayConfig
    from tests.learner.fakes import correction, segments
    from tests.policy.fakes import FAKE_ENCODER, HashEmbedder

    replay = ReplayBuffer(ReplayConfig(), debug_model_config(text_encoder=FAKE_ENCODER), embedder=HashEmbedder())
    ingest = Ingest(replay)
    for message in segments("robot-1", "ep-1", lengths=(10, 20), success=False):
        ingest.handle(message)
    ingest.handle(correction("robot-1", "ep-1", "c-old", 12, 9))
    ingest.handle(correction("robot-1", "ep-1", "c-new", 25, 2))
    h = queue.auth("reviewer")
    for cid, verdict in (("c-old", {"decision": "relabel", "success": True}), ("c-new", {"decision": "reject"})):
        assert queue.client.post(f"/api/v1/corrections/{cid}/review", json=verdict, headers=h).status_code == 200
    for record in queue.transport.broker.records(REVIEWS):
        ingest.handle(decode(record.value, ReviewMessage))
    stored = replay.episode("robot-1", "ep-1")
    assert stored is not None and stored.success and stored.returns.max() > -1.0  # relabelled: a success now
    assert len(replay.correction_steps("c-old")) == 9 and replay.correction_steps("c-new") == []
