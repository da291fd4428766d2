"""MessageLoop: garbage never crashes it and always lands in the dead-letter topic; commits follow processing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.schemas import Message, SchemaError, encode
from fleet.transport import DEADLETTER, TRAJECTORIES, MessageLoop, Record
from tests.data.factories import make_segment
from tests.data.fakes import FakeTransport


def _loop(transport: FakeTransport, handled: list[Message], **kwargs: object) -> MessageLoop:
    return MessageLoop(
        transport,
        group_id="test",
        topics=(TRAJECTORIES,),
        handler=lambda message, record: handled.append(message),
        **kwargs,  # type: ignore[arg-type]
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=300))
def test_fuzzed_bytes_are_dead_lettered_with_reason_and_source(payload: bytes) -> None:
    transport = FakeTransport()
    transport.send(TRAJECTORIES, payload, key="robot-9", headers=[("trace", b"t1")])
    handled: list[Message] = []
    loop = _loop(transport, handled)
    assert loop.step() == 1
    dead = transport.broker.records(DEADLETTER)
    assert not handled and len(dead) == 1
    headers = dict(dead[0].headers)
    assert dead[0].value == payload and dead[0].key == b"robot-9"
    assert headers["fleet.reason"]
    assert headers["fleet.source.topic"] == TRAJECTORIES.encode()
    assert headers["fleet.source.offset"] == b"0"
    assert headers["fleet.source.partition"].isdigit()
    assert headers["fleet.original.trace"] == b"t1"
    assert (
        transport.broker.committed[("test", TRAJECTORIES, dead[0].headers and int(headers["fleet.source.partition"]))]
        == 1
    )


def test_good_bad_and_duplicate_records_in_one_batch() -> None:
    transport = FakeTransport()
    good = encode(make_segment(size=4))
    for value in (good, b"\x93garbage", good):
        transport.send(TRAJECTORIES, value, key="robot-0")
    handled: list[Message] = []
    loop = _loop(transport, handled)
    assert loop.step() == 3
    assert len(handled) == 1
    assert loop.stats.duplicates == 1 and loop.stats.dead_lettered == 1
    assert b"not msgpack" in dict(transport.broker.records(DEADLETTER)[0].headers)["fleet.reason"]


def test_handler_schema_error_is_dead_lettered() -> None:
    transport = FakeTransport()
    transport.send(TRAJECTORIES, encode(make_segment(size=4)), key="robot-0")

    def reject(message: Message, record: Record) -> None:
        raise SchemaError("segment after the episode's end")

    loop = MessageLoop(transport, group_id="g", topics=(TRAJECTORIES,), handler=reject)
    loop.step()
    [dead] = transport.broker.records(DEADLETTER)
    assert dict(dead.headers)["fleet.reason"] == b"segment after the episode's end"


def test_nothing_is_committed_when_the_handler_keeps_failing() -> None:
    transport = FakeTransport()
    transport.send(TRAJECTORIES, encode(make_segment(size=4)), key="robot-0")

    def broken(message: Message, record: Record) -> None:
        raise OSError("disk full")

    loop = MessageLoop(transport, group_id="g", topics=(TRAJECTORIES,), handler=broken, handler_attempts=2)
    with pytest.raises(OSError, match="disk full"):
        loop.step()
    assert transport.broker.committed == {}
    assert not transport.broker.records(DEADLETTER)
