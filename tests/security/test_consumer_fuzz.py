"""Adversarial messages against every Kafka consumer: valid msgpack, well-formed-looking, wrong inside.

Each adversarial message is one valid message of one kind (segment, correction, reward, heartbeat, model event,
review, command) with exactly one thing broken: a field of the wrong type, a negative length or index, an
unknown schema version or kind, a missing field, or an array with NaN/inf, a negative or absurd shape, the wrong
embodiment dims, a forbidden dtype or codec, corrupt or short data, a 10,001-step segment. `corpus()` enumerates
them (every field of every kind × every breakage of its category); `adversarial()` draws them with hypothesis from
random valid messages (tests/data/test_schemas.py's strategies).

Consumers and what they must do with each one:
  * `fleet.schemas.decode` (every consumer's first step): SchemaError with a reason, nothing else;
  * `MessageLoop` / the recorder, on any topic: dead-letter it with `fleet.reason`, commit, keep going;
  * the learner's `_consume`: dead-letter it with the reason, advance its offsets, keep going;
  * the dashboard's heartbeat and corrections monitors: count and skip it (they do not own dead-lettering),
    and schema-valid but extreme values (NaN/huge times, ids longer than the tables' keys) never wedge them;
  * on the real broker (integration): a MessageLoop dead-letters 100% of the corpus on every fleet topic, and a
    robot's command listener ignores adversarial commands and still applies the next good one.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from dashboards.fleet_state import CommandTracker, FleetState
from dashboards.monitor import CorrectionsMonitor, HeartbeatMonitor
from fleet.db import Correction as CorrectionRow
from fleet.db import Robot, make_engine, session_factory
from fleet.embodiments import get_embodiment
from fleet.recorder import Recorder, RecorderConfig
from fleet.schemas import (
    Command,
    Correction,
    Message,
    ModelEvent,
    Review,
    RewardSignal,
    SchemaError,
    decode,
    decode_segment_keeping_frames,
    encode,
)
from fleet.transport import COMMANDS, DEADLETTER, TOPIC_FOR_KIND, TOPICS, TRAJECTORIES, MessageLoop
from tests.dashboards.factories import heartbeat
from tests.data.factories import make_segment
from tests.data.fakes import FakeTransport
from tests.data.test_schemas import STRATEGIES

pytestmark = pytest.mark.timeout(120)

# --- valid messages, one per kind -------------------------------------------------------------------------


def valid_messages() -> dict[str, Message]:
    now = time.time()
    messages: list[Message] = [
        make_segment("robot-f", "ep-f", 0, steps=3, size=4),
        Correction(
            correction_id="cor-f",
            robot_id="robot-f",
            embodiment="panda",
            task_id="pick",
            episode_id="ep-f",
            step_start=1,
            actions=np.full((2, 4), 0.5, np.float32),
            operator="supervisor:script",
            model_version="3",
            created_at=now,
        ),
        RewardSignal(
            reward_id="rew-f",
            robot_id="robot-f",
            episode_id="ep-f",
            source="human",
            labeller="alice",
            created_at=now,
            success=True,
            rewards=np.ones(3, np.float32),
        ),
        heartbeat("robot-f"),
        ModelEvent(
            event="promoted", model_name="vla", version="4", artifact_uri="s3://m/4", sha256="a" * 64, created_at=now
        ),
        Review(
            review_id="rev-f",
            correction_id="cor-f",
            robot_id="robot-f",
            reviewer="bob",
            decision="relabel",
            relabel_success=True,
            relabelled_actions=np.zeros((2, 4), np.float32),
            created_at=now,
        ),
        Command(command_id="cmd-f", robot_id="robot-f", action="pause", issued_by="op", created_at=now),
    ]
    return {m.KIND: m for m in messages}


# --- what can break, per field ----------------------------------------------------------------------------

# Values that are invalid for every field of the category (pydantic's lax mode accepts e.g. "1.5" for a float
# or "yes" for a bool, so those are not here).
BAD: dict[str, list[Any]] = {
    "id": [123, 4.5, None, ["x"], {"a": 1}, b"\xff\xfe", "", "../../etc/passwd", "x" * 129, "has space", True],
    "text": [123, 4.5, None, ["x"], {"a": 1}, b"\xff\xfe", True],
    "opt_id": [123, 4.5, ["x"], {"a": 1}, b"\xff\xfe", "", "../../etc/passwd", "x" * 129, "has space", True],
    "opt_text": [123, 4.5, ["x"], {"a": 1}, b"\xff\xfe", True],
    "embodiment": ["pandaa", "", 7, None, "x" * 1000],
    "time": ["now", None, [1.0], {"t": 1.0}, b"\xff\xfe", math.nan, math.inf, -math.inf],
    "index": [-1, 10**6, 2**64 - 1, "first", 1.5, None, [0]],
    "count": [-1, -(2**63), "x", 1.5, None, [0]],
    "bool": ["maybe", 2, 1.5, [True], {"a": 1}, None],
    "opt_bool": ["maybe", 2, 1.5, [True], {"a": 1}],
    "literal": ["exploded", 1, None, ["x"], ""],
    "sha": ["0" * 63, "G" * 64, 1, None],
    "loop": ["fast", 1, [], None, {"control_hz": -1}, {"control_hz": float("nan"), "ticks": 1}],
    "array": [],  # arrays are broken by ARRAY_BREAKS below
    "opt_array": [],
    "frames": ["frames", [1, 2], {"../x": None}],
}

FIELDS: dict[str, dict[str, str]] = {
    "trajectory_segment": {
        "robot_id": "id",
        "embodiment": "embodiment",
        "task_id": "id",
        "instruction": "text",
        "episode_id": "id",
        "segment_index": "index",
        "step_start": "count",
        "model_version": "opt_text",
        "created_at": "time",
        "timestamps": "array",
        "frames": "frames",
        "proprio": "array",
        "actions": "array",
        "intervention": "array",
        "rewards": "array",
        "done": "bool",
        "success": "bool",
    },
    "correction": {
        "correction_id": "id",
        "robot_id": "id",
        "embodiment": "embodiment",
        "task_id": "id",
        "episode_id": "id",
        "step_start": "count",
        "actions": "array",
        "operator": "text",
        "model_version": "opt_text",
        "created_at": "time",
        "note": "text",
    },
    "reward_signal": {
        "reward_id": "id",
        "robot_id": "id",
        "episode_id": "id",
        "source": "literal",
        "labeller": "text",
        "created_at": "time",
        "success": "opt_bool",
        "step_start": "count",
        "rewards": "opt_array",
    },
    "heartbeat": {
        "robot_id": "id",
        "embodiment": "text",
        "state": "literal",
        "model_version": "opt_text",
        "task_id": "opt_text",
        "episode_id": "opt_text",
        "sent_at": "time",
        "loop": "loop",
        "pending_command_id": "opt_text",
        "applied_command_id": "opt_text",
        "spooled_messages": "count",
        "intervening": "bool",
        "error": "opt_text",
    },
    "model_event": {
        "event": "literal",
        "model_name": "text",
        "version": "text",
        "alias": "opt_text",
        "artifact_uri": "text",
        "sha256": "sha",
        "parent_version": "opt_text",
        "actor": "text",
        "reason": "text",
        "created_at": "time",
    },
    "review": {
        "review_id": "id",
        "correction_id": "id",
        "robot_id": "id",
        "reviewer": "text",
        "decision": "literal",
        "relabel_success": "opt_bool",
        "relabelled_actions": "opt_array",
        "note": "text",
        "created_at": "time",
    },
    "command": {
        "command_id": "id",
        "robot_id": "id",
        "action": "literal",
        "task_id": "opt_id",
        "instruction": "opt_text",
        "issued_by": "text",
        "reason": "text",
        "created_at": "time",
    },
}
REQUIRED = {  # fields without a default: removing one must be refused
    "trajectory_segment": [f for f in FIELDS["trajectory_segment"] if f not in ("done", "success")],
    "correction": [f for f in FIELDS["correction"] if f != "note"],
    "reward_signal": ["reward_id", "robot_id", "episode_id", "source", "labeller", "created_at"],
    "heartbeat": ["robot_id", "embodiment", "state", "model_version", "sent_at", "loop"],
    "model_event": ["event", "model_name", "version", "artifact_uri", "sha256", "created_at"],
    "review": ["review_id", "correction_id", "robot_id", "reviewer", "decision", "created_at"],
    "command": ["command_id", "robot_id", "action", "issued_by", "created_at"],
}


def _body(message: Message) -> dict[str, Any]:
    return msgpack.unpackb(encode(message), raw=False)


def _pack(body: Any) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def _nd(arr: np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(arr)
    return {"__nd__": 1, "dtype": arr.dtype.str, "shape": list(arr.shape), "codec": "raw", "data": arr.tobytes()}


def _decoded(wire: dict[str, Any]) -> np.ndarray:
    from fleet.schemas import decode_array

    return decode_array(wire)


def _wrong_shape(kind: str, name: str, arr: np.ndarray) -> tuple[int, ...]:
    """A shape this field can never have, given the rest of the (valid) message."""
    if kind == "reward_signal":
        return (max(arr.shape[0], 1), 2)  # rewards must be 1-D
    if kind == "review":
        return (max(arr.shape[0], 1),)  # relabelled actions must be (n, A)
    if name == "frames":
        return (*arr.shape[:-1], 4)  # RGB only
    if arr.ndim == 2:
        return (arr.shape[0], arr.shape[1] + 1)  # another embodiment's proprio/action size
    return (arr.shape[0] + 1,)  # one step more than the segment's T


def _filled(arr: np.ndarray, value: float) -> dict[str, Any]:
    return _nd(np.full(arr.shape if arr.size else (1,) * max(arr.ndim, 1), value, arr.dtype))


# (name, applies to dtype kind or None for all, breaker(kind, field, decoded array, wire dict) -> new wire value)
def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)  # states the content size in its header


ARRAY_BREAKS: list[tuple[str, str | None, Callable[[str, str, np.ndarray, dict[str, Any]], Any]]] = [
    ("nan", "f", lambda k, n, a, w: _filled(a, math.nan)),
    ("inf", "f", lambda k, n, a, w: _filled(a, math.inf)),
    ("-inf", "f", lambda k, n, a, w: _filled(a, -math.inf)),
    ("negative shape", None, lambda k, n, a, w: {**w, "shape": [-1, *w["shape"][1:]]}),
    ("absurd shape", None, lambda k, n, a, w: {**w, "shape": [2**31 - 1] * max(len(w["shape"]), 2)}),
    ("wrong dims", None, lambda k, n, a, w: _nd(np.zeros(_wrong_shape(k, n, a), a.dtype))),
    ("object dtype", None, lambda k, n, a, w: {**w, "dtype": "|O"}),
    ("complex dtype", None, lambda k, n, a, w: {**w, "dtype": "<c16"}),
    ("dtype not a string", None, lambda k, n, a, w: {**w, "dtype": 5}),
    ("unknown codec", None, lambda k, n, a, w: {**_nd(a), "codec": "lzma"}),
    ("data not bytes", None, lambda k, n, a, w: {**_nd(a), "data": "AAAA"}),
    ("data too long", None, lambda k, n, a, w: {**_nd(a), "data": a.tobytes() + b"\0"}),
    ("corrupt zstd", None, lambda k, n, a, w: {**_nd(a), "codec": "zstd", "data": b"\x28\xb5\x2f\xfd\x00junk"}),
    # its header states the right size: only decompressing finds it (what a consumer keeping frames compressed skips)
    ("truncated zstd", None, lambda k, n, a, w: {**_nd(a), "codec": "zstd", "data": _zstd(a.tobytes())[:-4]}),
    ("not an array", None, lambda k, n, a, w: {"__nd__": 1}),
]


def _array_fields(kind: str, body: dict[str, Any]) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """(field, camera, wire array) for each array in the body; optional arrays that are absent get a valid one."""
    for name, category in FIELDS[kind].items():
        if category == "frames":
            for camera, wire in body[name].items():
                yield name, camera, wire
        elif category in ("array", "opt_array"):
            wire = body.get(name)
            if wire is None:
                wire = _nd(np.zeros((2, 4) if kind == "review" else (2,), np.float32))
            yield name, None, wire


def _set_array(body: dict[str, Any], name: str, camera: str | None, value: Any) -> None:
    if camera is None:
        body[name] = value
    else:
        body[name] = {**body[name], camera: value}


def mutations(kind: str, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every single-fault variant of a valid body: (what was broken, broken body)."""
    for version in (0, 2, 99, -1, 2**40, "1", None, [1], {"v": 1}):
        yield f"schema_version={version!r}", {**body, "schema_version": version}
    for other in ("telemetry", "", 1, None, "TrajectorySegment"):
        yield f"kind={other!r}", {**body, "kind": other}
    for name in REQUIRED[kind]:
        yield f"missing {name}", {k: v for k, v in body.items() if k != name}
    for name, category in FIELDS[kind].items():
        for value in BAD[category]:
            yield f"{name}={value!r:.40}", {**body, name: value}
    for name, camera, wire in _array_fields(kind, body):
        arr = _decoded(wire) if "__nd__" in wire and wire.get("codec") != "png" else None
        if arr is None:
            continue
        for label, dtype_kind, breaker in ARRAY_BREAKS:
            if dtype_kind is not None and arr.dtype.kind != dtype_kind:
                continue
            broken = dict(body)
            _set_array(broken, name, camera, breaker(kind, name, arr, wire))
            yield f"{name}{'/' + camera if camera else ''}: {label}", broken
    if kind == "trajectory_segment":  # a real 10,001-step segment (~0.7 MB): over the 10,000-step limit
        t = 10_001
        spec = get_embodiment(body["embodiment"])
        yield (
            "10001 steps",
            {
                **body,
                "timestamps": _nd(np.arange(t, dtype=np.float64)),
                "frames": {},
                "proprio": _nd(np.zeros((t, spec.proprio_dim), np.float32)),
                "actions": _nd(np.zeros((t, spec.action_dim), np.float32)),
                "intervention": _nd(np.zeros(t, bool)),
                "rewards": _nd(np.zeros(t, np.float32)),
            },
        )


def corpus() -> list[tuple[str, str, bytes]]:
    """(kind, what was broken, payload) for every kind and every breakage."""
    out = []
    for kind, message in valid_messages().items():
        for what, broken in mutations(kind, _body(message)):
            out.append((kind, what, _pack(broken)))
    return out


CORPUS = corpus()

# Breakages that once got past fleet.schemas (an unhashable schema_version raised TypeError, NaN/inf times were
# accepted); kept as named groups so the consumers' survival of them stays tested.
UNHASHABLE_VERSION = {"schema_version=[1]", "schema_version={'v': 1}"}
NON_FINITE_TIME = {f"{f}={v}" for f in ("created_at", "sent_at") for v in ("nan", "inf", "-inf")}


def gap(what: str) -> str | None:
    """Why fleet.schemas would not refuse breakage `what` (None: it does). Add an entry to xfail a known gap."""
    return None


REFUSED = [c for c in CORPUS if gap(c[1]) is None]  # what every consumer must dead-letter / skip
UNHASHABLE = [c for c in CORPUS if c[1] in UNHASHABLE_VERSION]  # once fatal to the learner and the command listener
DEAD = REFUSED  # what MessageLoop (and so the recorder) dead-letters


@st.composite
def adversarial(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """A random valid message of a random kind with one random breakage."""
    cls = draw(st.sampled_from(sorted(STRATEGIES, key=lambda c: c.KIND)))
    message = draw(STRATEGIES[cls])
    variants = list(mutations(cls.KIND, _body(message)))
    what, broken = draw(st.sampled_from([v for v in variants if gap(v[0]) is None]))
    return cls.KIND, what, _pack(broken)


# --- decode: the gate every consumer goes through ---------------------------------------------------------


def test_corpus_covers_every_kind_and_breakage() -> None:
    kinds = {kind for kind, _, _ in CORPUS}
    assert kinds == set(FIELDS) == {cls.KIND for cls in STRATEGIES}
    assert len(CORPUS) > 400
    for kind, message in valid_messages().items():
        assert decode(encode(message)) == message, kind  # the bases are valid: each breakage is the only fault


@pytest.mark.parametrize(
    ("kind", "what", "payload"),
    [
        pytest.param(k, w, p, marks=[pytest.mark.xfail(strict=True, reason=gap(w))] if gap(w) else [], id=f"{k}:{w}")
        for k, w, p in CORPUS
    ],
)
def test_decode_refuses_every_breakage_with_a_reason(kind: str, what: str, payload: bytes) -> None:
    with pytest.raises(SchemaError) as refused:
        decode(payload)
    assert len(str(refused.value)) > 10


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sample=adversarial())
def test_decode_refuses_random_breakages(sample: tuple[str, str, bytes]) -> None:
    kind, what, payload = sample
    with pytest.raises(SchemaError):
        decode(payload)


SEGMENT_BREAKAGES = [c for c in REFUSED if c[0] == "trajectory_segment"]


@pytest.mark.parametrize(("kind", "what", "payload"), [pytest.param(*c, id=c[1]) for c in SEGMENT_BREAKAGES])
def test_the_recorder_s_decode_refuses_every_segment_breakage_decode_refuses(
    kind: str, what: str, payload: bytes
) -> None:
    """The recorder decodes with `decode_segment_keeping_frames(verify=True)` instead of `decode`."""
    with pytest.raises(SchemaError):
        decode_segment_keeping_frames(payload, verify=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sample=adversarial())
def test_the_recorder_s_decode_refuses_random_breakages(sample: tuple[str, str, bytes]) -> None:
    with pytest.raises(SchemaError):
        decode_segment_keeping_frames(sample[2], verify=True)


# --- consumers (unit level, real decode/validate path) -----------------------------------------------------


def _send_corpus(
    transport: FakeTransport, cases: list[tuple[str, str, bytes]], *, topic_of: Callable[[str], str]
) -> dict[tuple[str, int, int], str]:
    """Send these cases; returns (topic, partition, offset) -> what was broken."""
    sent = {}
    for kind, what, payload in cases:
        record = transport.broker.append(topic_of(kind), payload, key="robot-f", headers=[("case", what.encode())])
        sent[(record.topic, record.partition, record.offset)] = f"{kind}: {what}"
    return sent


def _assert_all_dead(transport: FakeTransport, sent: dict[tuple[str, int, int], str], group: str) -> None:
    dead = transport.broker.records(DEADLETTER)
    by_source = {}
    for letter in dead:
        h = dict(letter.headers)
        assert h["fleet.reason"], h
        assert h["fleet.consumer.group"] == group.encode()
        source = (h["fleet.source.topic"].decode(), int(h["fleet.source.partition"]), int(h["fleet.source.offset"]))
        by_source[source] = h["fleet.reason"].decode()
    missing = [sent[s] for s in sent if s not in by_source]
    assert not missing, f"{len(missing)} of {len(sent)} not dead-lettered, e.g. {missing[:5]}"
    assert len(dead) == len(sent)


def test_message_loop_dead_letters_every_breakage_on_its_own_topic_and_keeps_going() -> None:
    transport = FakeTransport()
    sent = _send_corpus(transport, DEAD, topic_of=lambda kind: TOPIC_FOR_KIND[kind])
    handled: list[Message] = []
    consumer_topics = tuple(t for t in TOPICS if t != DEADLETTER)
    loop = MessageLoop(
        transport, group_id="fuzz", topics=consumer_topics, handler=lambda m, r: handled.append(m), max_records=97
    )
    while loop.step():
        pass
    assert not handled
    _assert_all_dead(transport, sent, "fuzz")
    assert loop.stats.dead_lettered == len(DEAD)
    for (group, topic, partition), offset in transport.broker.committed.items():  # everything committed
        assert offset == len(transport.broker.logs[(topic, partition)]), (group, topic, partition)
    transport.send(TRAJECTORIES, encode(make_segment("robot-ok", size=4)), key="robot-ok")
    loop.step()
    assert [m.KIND for m in handled] == ["trajectory_segment"]  # still alive and consuming


def test_recorder_dead_letters_every_breakage_and_still_records(tmp_path: Path) -> None:
    transport = FakeTransport()
    sent = _send_corpus(transport, DEAD, topic_of=lambda kind: TRAJECTORIES)  # whatever lands on its topic
    config = RecorderConfig(store_dir=tmp_path / "store", staging_dir=tmp_path / "staging", group_id="recorder-fuzz")
    recorder = Recorder(config, transport=transport, index=None)
    try:
        while recorder.step():
            pass
        _assert_all_dead(transport, sent, "recorder-fuzz")
        transport.send(TRAJECTORIES, encode(make_segment("robot-ok", segments_per_episode=1, size=4)), key="robot-ok")
        recorder.step()
        assert recorder.episodes_recorded == 1
    finally:
        recorder.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(samples=st.lists(adversarial(), min_size=1, max_size=8))
def test_message_loop_dead_letters_random_breakages(samples: list[tuple[str, str, bytes]]) -> None:
    transport = FakeTransport()
    for kind, _what, payload in samples:
        transport.send(TOPIC_FOR_KIND[kind], payload, key="robot-f")
    loop = MessageLoop(transport, group_id="g", topics=TOPICS[:-1], handler=lambda m, r: None)
    assert loop.step() == len(samples)
    dead = transport.broker.records(DEADLETTER)
    assert len(dead) == len(samples) and all(dict(d.headers)["fleet.reason"] for d in dead)


def _learner(transport: FakeTransport, handled: list[Message]) -> Any:
    """Just the consuming part of a LearnerService (no model, no registry), on the fake transport."""
    from learner.checkpoints import LearnerState
    from learner.service import LearnerService

    service = object.__new__(LearnerService)
    service.state = LearnerState(0, {}, {}, 0, 0, None)
    service.window = {}
    service.ingest = SimpleNamespace(handle=handled.append)
    service.transport = transport
    service.loop = MessageLoop(transport, group_id="learner-fuzz", topics=(), handler=service._ingest,
                               commit_each_batch=False)  # fmt: skip
    return service


LEARNER_KINDS = {"trajectory_segment", "correction", "reward_signal", "review"}


def _learner_topic(kind: str) -> str:
    return TOPIC_FOR_KIND[kind] if kind in LEARNER_KINDS else TRAJECTORIES


def test_learner_dead_letters_every_breakage_and_advances() -> None:
    transport, handled = FakeTransport(), []
    sent = _send_corpus(transport, REFUSED, topic_of=_learner_topic)
    service = _learner(transport, handled)
    for (_topic, _p), log in sorted(transport.broker.logs.items()):
        service._consume(log)
    assert not handled
    _assert_all_dead(transport, sent, "learner-fuzz")
    for (topic, partition), log in transport.broker.logs.items():
        if topic != DEADLETTER:
            assert service.state.offsets[topic][str(partition)] == len(log)


def test_learner_survives_an_unhashable_schema_version() -> None:
    transport, handled = FakeTransport(), []
    sent = _send_corpus(transport, UNHASHABLE, topic_of=_learner_topic)
    service = _learner(transport, handled)
    for (_topic, _p), log in sorted(transport.broker.logs.items()):
        service._consume(log)
    _assert_all_dead(transport, sent, "learner-fuzz")


def _read(monitor: Any, topic: str, payloads: list[bytes]) -> Any:
    """One step of a monitor's own loop over `payloads` on `topic`; the loop (its stats) and the transport."""
    transport = FakeTransport()
    for payload in payloads:
        transport.send(topic, payload, key="robot-f")
    loop = monitor.reader(transport)
    assert loop.step() == len(payloads)
    return loop, transport


@pytest.fixture()
def sessions(tmp_path: Path, template_db: Path) -> Any:
    import shutil

    shutil.copy(template_db, tmp_path / "fleet.db")
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    yield session_factory(engine)
    engine.dispose()


def test_dashboard_heartbeat_monitor_skips_every_breakage(sessions: Any) -> None:
    fleet = FleetState(offline_after_s=5)
    monitor = HeartbeatMonitor(
        SimpleNamespace(bootstrap="unused:9", client_id="t"),
        fleet=fleet,
        commands=CommandTracker(keep=10),
        sessions=sessions,
        flush_interval_s=0.01,
    )
    payloads = [p for _, _, p in DEAD]
    _, transport = _read(monitor, "fleet.heartbeats", payloads)
    assert monitor.decode_errors == len(payloads) and fleet.robot_ids() == []
    assert not transport.broker.records(DEADLETTER)  # a reader skips; the stream's owner dead-letters
    _read(monitor, "fleet.heartbeats", [encode(heartbeat("robot-ok"))])
    assert fleet.robot_ids() == ["robot-ok"]


def test_dashboard_corrections_monitor_skips_every_breakage_and_commits(sessions: Any) -> None:
    monitor = CorrectionsMonitor(SimpleNamespace(bootstrap="unused:9", client_id="t"), sessions=sessions, group_id="g")
    loop, transport = _read(monitor, "fleet.corrections", [p for _, _, p in DEAD])
    assert monitor.decode_errors == len(DEAD)
    committed = sum(o for (group, topic, _), o in transport.broker.committed.items() if group == "g")
    assert loop.stats.commits == 1 and committed == len(DEAD)


def _correction(**changes: Any) -> Correction:
    base = valid_messages()["correction"]
    return base.model_copy(update={"correction_id": f"cor-{uuid.uuid4().hex[:8]}", **changes})


@pytest.mark.parametrize(
    ("changes", "stored"),
    [
        ({"created_at": 1e300}, True),  # no usable time (NaN/inf never decode): queued with the time it arrived
        ({"created_at": -1e300}, True),
        ({"model_version": "v" * 500 + "\x00"}, True),  # cut to the column, NUL removed
        ({"operator": "op\x00erator" * 50}, True),
        ({"task_id": "t" * 128}, True),
        ({"correction_id": "c" * 128}, False),  # longer than the review queue's key: skipped, not retried forever
        ({"robot_id": "r" * 128}, False),
        ({"episode_id": "e" * 128}, False),
        ({"step_start": 2**40}, False),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else str(v),
)
def test_corrections_monitor_is_not_wedged_by_schema_valid_extremes(
    sessions: Any, changes: dict[str, Any], stored: bool
) -> None:
    monitor = CorrectionsMonitor(SimpleNamespace(bootstrap="unused:9", client_id="t"), sessions=sessions, group_id="g")
    poison, good = _correction(**changes), _correction()
    assert isinstance(decode(encode(poison)), Correction)  # schema-valid: the monitor, not the decoder, must cope
    loop, _ = _read(monitor, "fleet.corrections", [encode(poison), encode(good)])
    assert loop.stats.commits == 1  # progress: the batch is done, not retried
    with sessions() as s:
        ids = set(s.scalars(select(CorrectionRow.id)))
    assert good.correction_id in ids
    assert (poison.correction_id in ids) is stored


def test_heartbeat_flush_survives_schema_valid_extremes(sessions: Any) -> None:
    fleet = FleetState(offline_after_s=5)
    monitor = HeartbeatMonitor(
        SimpleNamespace(bootstrap="unused:9", client_id="t"),
        fleet=fleet,
        commands=CommandTracker(keep=10),
        sessions=sessions,
        flush_interval_s=0.0,
    )
    extremes = [
        heartbeat("r" * 128),
        heartbeat("robot-x", version="v" * 300, task_id="t\x00" * 100).model_copy(
            update={"embodiment": "e" * 100, "sent_at": 1e300}
        ),
        heartbeat("robot-ok"),
    ]
    _read(monitor, "fleet.heartbeats", [encode(h) for h in extremes])
    monitor._next_flush = 0.0
    monitor._tick()
    with sessions() as s:
        stored = {r.id: r for r in s.scalars(select(Robot))}
    assert {"robot-x", "robot-ok"} <= set(stored) and "r" * 128 not in stored
    assert len(stored["robot-x"].current_version) == 32 and "\x00" not in stored["robot-x"].task
    assert set(fleet.robot_ids()) == {"r" * 128, "robot-x", "robot-ok"}  # all still shown live


# --- the real broker ---------------------------------------------------------------------------------------


def _watch_dead_letters(bootstrap: str) -> Any:
    from kafka import KafkaConsumer, TopicPartition

    watcher = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(DEADLETTER, p) for p in sorted(watcher.partitions_for_topic(DEADLETTER))]
    watcher.assign(partitions)
    watcher.seek_to_end(*partitions)
    for tp in partitions:
        watcher.position(tp)  # resolve "end" now, before any dead letter is written
    return watcher


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_real_broker_every_breakage_on_every_topic_is_dead_lettered(kafka_bootstrap: str) -> None:
    from fleet.transport import KafkaTransport, TransportConfig, ensure_topics

    prefix = f"fuzz-{uuid.uuid4().hex[:8]}"
    config = TransportConfig(bootstrap=kafka_bootstrap, client_id=prefix)
    ensure_topics(config)
    group = f"{prefix}-group"
    topics = tuple(t for t in TOPICS if t != DEADLETTER)
    producer = KafkaTransport(config)
    consumer_transport = KafkaTransport(config)
    handled: list[Message] = []
    loop = MessageLoop(consumer_transport, group_id=group, topics=topics, handler=lambda m, r: handled.append(m))
    watcher = _watch_dead_letters(kafka_bootstrap)
    try:
        # The group joins at the topics' end: start it before producing, so it sees exactly our records.
        from kafka import KafkaConsumer, TopicPartition
        from kafka.structs import OffsetAndMetadata

        pin = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
        tps = [TopicPartition(t, p) for t in topics for p in sorted(pin.partitions_for_topic(t))]
        pin.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in pin.end_offsets(tps).items()})
        pin.close(autocommit=False)

        for kind, what, payload in DEAD:
            producer.send(TOPIC_FOR_KIND[kind], payload, key=f"{prefix}-robot", headers=[("case", what.encode())])
        good = make_segment(f"{prefix}-robot", size=4)
        producer.send(TRAJECTORIES, encode(good), key=f"{prefix}-robot")
        assert producer.flush(60)

        deadline = time.monotonic() + 120
        while not handled and time.monotonic() < deadline:
            loop.step()
        while loop.stats.dead_lettered < len(DEAD) and time.monotonic() < deadline:
            loop.step()
        assert consumer_transport.flush(60)
        letters: list[Any] = []
        while len(letters) < len(DEAD) and time.monotonic() < deadline:
            polled = [r for rs in watcher.poll(timeout_ms=500).values() for r in rs]
            letters += [r for r in polled if dict(r.headers)["fleet.consumer.group"] == group.encode()]
    finally:
        loop.close()
        consumer_transport.close()
        producer.close()
        watcher.close()
    assert [m.KIND for m in handled] == ["trajectory_segment"]  # the good one, after all the junk
    assert len(letters) == len(DEAD)
    cases = {dict(r.headers)["fleet.original.case"].decode() for r in letters}
    assert cases == {what for _, what, _ in DEAD}
    assert all(dict(r.headers)["fleet.reason"] for r in letters)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_real_broker_robot_listener_ignores_bad_commands_and_applies_the_next_good_one(
    kafka_bootstrap: str, stack: Any
) -> None:
    from actors.robot import listen_for_events
    from fleet.transport import KafkaTransport, TransportConfig, ensure_topics

    robot_id = f"fuzz-{uuid.uuid4().hex[:8]}"
    ensure_topics(TransportConfig(bootstrap=kafka_bootstrap))
    submitted: list[Command] = []
    reloader = SimpleNamespace(notify=lambda: None)
    listener = listen_for_events(stack, robot_id, reloader, submitted.append)
    producer = KafkaTransport(TransportConfig(bootstrap=kafka_bootstrap, client_id=robot_id))
    try:
        time.sleep(3.0)  # let the listener's group join (it starts at the earliest offset anyway)
        bad = [p for kind, _, p in REFUSED if kind == "command"] + [p for kind, _, p in REFUSED if kind != "command"]
        for payload in bad:
            producer.send(COMMANDS, payload, key=robot_id)
        good = Command(command_id="cmd-good", robot_id=robot_id, action="pause", issued_by="op", created_at=time.time())
        producer.send(COMMANDS, encode(good), key=robot_id)
        assert producer.flush(30)
        deadline = time.monotonic() + 60
        while not submitted and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listener.connected.is_set()
    finally:
        listener.stop(timeout_s=15)
        producer.close()
    assert [c.command_id for c in submitted] == ["cmd-good"]
