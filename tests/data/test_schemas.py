"""Wire messages: every kind round-trips exactly; bad payloads fail with a SchemaError that says why."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fleet.embodiments import EMBODIMENTS
from fleet.schemas import (
    MESSAGE_TYPES,
    Command,
    Correction,
    Heartbeat,
    LoopStats,
    Message,
    ModelEvent,
    Review,
    RewardSignal,
    SchemaError,
    TrajectorySegment,
    decode,
    decode_segment_keeping_frames,
    encode,
    zstd_contexts,
)
from tests.data.factories import make_segment

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,20}", fullmatch=True)
texts = st.text(max_size=40)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
versions = st.none() | st.from_regex(r"[0-9]{1,4}", fullmatch=True)
codecs = st.sampled_from(["zstd", "png", "raw"])


def f32_array(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float32, shape, elements=f32)


@st.composite
def segments(draw: st.DrawFn) -> TrajectorySegment:
    spec = EMBODIMENTS[draw(st.sampled_from(sorted(EMBODIMENTS)))]
    t = draw(st.integers(1, 12))
    cams = draw(st.lists(st.sampled_from(["front", "wrist", "side"]), max_size=2, unique=True))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    return TrajectorySegment(
        robot_id=draw(ids),
        embodiment=spec.name,
        task_id=draw(ids),
        instruction=draw(texts),
        episode_id=draw(ids),
        segment_index=draw(st.integers(0, 999_999)),
        step_start=draw(st.integers(0, 2**40)),
        model_version=draw(versions),
        created_at=draw(times),
        timestamps=draw(hnp.arrays(np.float64, (t,), elements=times)),
        frames={c: draw(hnp.arrays(np.uint8, (t, h, w, 3))) for c in cams},
        proprio=draw(f32_array((t, spec.proprio_dim))),
        actions=draw(f32_array((t, spec.action_dim))),
        intervention=draw(hnp.arrays(np.bool_, (t,))),
        rewards=draw(f32_array((t,))),
        done=draw(st.booleans()),
        success=draw(st.booleans()),
    )


@st.composite
def corrections(draw: st.DrawFn) -> Correction:
    spec = EMBODIMENTS[draw(st.sampled_from(sorted(EMBODIMENTS)))]
    return Correction(
        correction_id=draw(ids),
        robot_id=draw(ids),
        embodiment=spec.name,
        task_id=draw(ids),
        episode_id=draw(ids),
        step_start=draw(st.integers(0, 10_000)),
        actions=draw(f32_array((draw(st.integers(1, 20)), spec.action_dim))),
        operator=draw(texts),
        model_version=draw(versions),
        created_at=draw(times),
        note=draw(texts),
        reason=draw(st.text(max_size=200)),
    )


@st.composite
def reward_signals(draw: st.DrawFn) -> RewardSignal:
    success = draw(st.none() | st.booleans())
    rewards = draw(st.none() | f32_array((draw(st.integers(0, 20)),)))
    if success is None and rewards is None:
        success = True
    return RewardSignal(
        reward_id=draw(ids),
        robot_id=draw(ids),
        episode_id=draw(ids),
        source=draw(st.sampled_from(["human", "sim", "classifier", "script"])),
        labeller=draw(texts),
        created_at=draw(times),
        success=success,
        step_start=draw(st.integers(0, 1000)),
        rewards=rewards,
    )


ms = st.floats(min_value=0, max_value=1e4, allow_nan=False)
loop_stats = st.builds(
    LoopStats,
    control_hz=st.floats(min_value=0.1, max_value=1000),
    ticks=st.integers(0, 10**6),
    missed_ticks=st.integers(0, 10**6),
    tick_ms_p50=ms,
    tick_ms_p99=ms,
    tick_ms_max=ms,
)
heartbeats = st.builds(
    Heartbeat,
    robot_id=ids,
    embodiment=st.sampled_from(sorted(EMBODIMENTS)),
    state=st.sampled_from(["starting", "idle", "running", "paused", "stopped", "out_of_rotation", "error"]),
    model_version=versions,
    task_id=st.none() | ids,
    episode_id=st.none() | ids,
    sent_at=times,
    loop=loop_stats,
    pending_command_id=st.none() | ids,
    applied_command_id=st.none() | ids,
    spooled_messages=st.integers(0, 10**6),
    error=st.none() | texts,
)
model_events = st.builds(
    ModelEvent,
    event=st.sampled_from(["registered", "promoted", "rolled_back", "pinned", "unpinned"]),
    model_name=texts,
    version=st.from_regex(r"[0-9]{1,4}", fullmatch=True),
    alias=st.none() | st.sampled_from(["candidate", "production"]),
    artifact_uri=texts,
    sha256=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    parent_version=versions,
    actor=texts,
    reason=texts,
    created_at=times,
)


@st.composite
def reviews(draw: st.DrawFn) -> Review:
    decision = draw(st.sampled_from(["approve", "reject", "relabel"]))
    actions, success = None, None
    if decision == "relabel":
        actions = draw(st.none() | f32_array((draw(st.integers(1, 5)), 4)))
        success = draw(st.booleans()) if actions is None else draw(st.none() | st.booleans())
    return Review(
        review_id=draw(ids),
        correction_id=draw(ids),
        robot_id=draw(ids),
        reviewer=draw(texts),
        decision=decision,
        relabel_success=success,
        relabelled_actions=actions,
        note=draw(texts),
        created_at=draw(times),
    )


@st.composite
def commands(draw: st.DrawFn) -> Command:
    action = draw(st.sampled_from(["pause", "resume", "stop", "assign_task", "out_of_rotation"]))
    assign = action == "assign_task"
    return Command(
        command_id=draw(ids),
        robot_id=draw(ids),
        action=action,
        task_id=draw(ids) if assign else None,
        instruction=draw(texts) if assign else None,
        issued_by=draw(texts),
        reason=draw(texts),
        created_at=draw(times),
    )


STRATEGIES: dict[type[Message], st.SearchStrategy[Any]] = {
    TrajectorySegment: segments(),
    Correction: corrections(),
    RewardSignal: reward_signals(),
    Heartbeat: heartbeats,
    ModelEvent: model_events,
    Review: reviews(),
    Command: commands(),
}


def test_every_message_kind_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(MESSAGE_TYPES.values())


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), codec=codecs)
def test_round_trip(cls: type[Message], data: st.DataObject, codec: str) -> None:
    message = data.draw(STRATEGIES[cls])
    wire = encode(message, frame_codec=codec)  # type: ignore[arg-type]
    back = decode(wire)
    assert type(back) is cls
    assert back == message
    assert decode(wire, cls) == message
    assert encode(back, frame_codec=codec) == wire  # type: ignore[arg-type]


def _body(message: Message) -> dict[str, Any]:
    return msgpack.unpackb(encode(message), raw=False)


def _pack(body: dict[str, Any]) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def test_unknown_fields_are_tolerated() -> None:
    body = _body(make_segment())
    body["gripper_camera_exposure"] = 0.02
    body["frames"]["front"]["future_codec_hint"] = "fast"
    assert decode(_pack(body)) == make_segment().model_copy(update={"created_at": body["created_at"]})


def test_unknown_schema_version_is_a_schema_error() -> None:
    body = _body(make_segment())
    body["schema_version"] = 99
    with pytest.raises(SchemaError, match="schema_version 99 is not supported"):
        decode(_pack(body))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b.update(kind="telemetry"), "unknown message kind"),
        (lambda b: b.update(embodiment="pandaa"), "Did you mean 'panda'"),
        (lambda b: b["proprio"].update(shape=[20, 5], codec="raw", data=b"\0" * 400), "proprio has shape"),
        (lambda b: b["rewards"].update(shape=[9], codec="raw", data=b"\0" * 36), r"rewards has shape \(9,\)"),
        (lambda b: b["frames"]["front"].update(shape=[10, 2**20, 2**20, 3]), "exceeds"),
        (lambda b: b["actions"].update(dtype="|O"), "dtype"),
        (lambda b: b["actions"].update(codec="zstd", data=b"garbage"), "zstd data is corrupt"),
        (lambda b: b["frames"]["front"].update(data=b["frames"]["front"]["data"] * 2), "unused data"),
        (lambda b: b["actions"].update(codec="raw", data=b"\0\0\xc0\x7f" * 40), "NaN"),
        (lambda b: b.update(robot_id="../../etc"), "robot_id"),
        (lambda b: b.pop("episode_id"), "episode_id"),
        (lambda b: b.update(segment_index=-1), "segment_index"),
    ],
)
def test_bad_segments_say_what_is_wrong(mutate: Any, match: str) -> None:
    body = _body(make_segment(size=8))
    mutate(body)
    with pytest.raises(SchemaError, match=match):
        decode(_pack(body))


def test_frames_must_be_uint8() -> None:
    seg = make_segment(size=4)
    fields = {name: getattr(seg, name) for name in TrajectorySegment.model_fields}
    with pytest.raises(ValueError, match="uint8"):
        TrajectorySegment(**{**fields, "frames": {"front": seg.frames["front"].astype(np.float32)}})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_schema_error(data: bytes) -> None:
    with contextlib.suppress(SchemaError):  # anything else (or a crash) fails the test
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_payloads_only_ever_raise_schema_error(data: st.DataObject) -> None:
    wire = bytearray(encode(make_segment(size=4, steps=3)))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(wire)))
    with contextlib.suppress(SchemaError):
        decode(bytes(wire[:cut]))


def test_one_second_64px_segment_is_compact() -> None:
    """The module docstring's size claim, on the factory's flat-shaded frames (10 steps, 64×64, one camera)."""
    seg = make_segment(steps=10, size=64)
    assert sum(f.nbytes for f in seg.frames.values()) == 122_880
    assert len(encode(seg)) < 5_000
    assert len(encode(seg, frame_codec="png")) < 10_000


@pytest.mark.parametrize("codec", ["zstd", "png", "raw"])
def test_a_segment_decoded_keeping_its_frames_compressed_equals_the_decoded_one(codec: str) -> None:
    seg = make_segment(size=16, steps=5, cameras=("front", "wrist"))
    wire = encode(seg, frame_codec=codec)  # type: ignore[arg-type]
    kept, frames = decode_segment_keeping_frames(wire)
    assert kept.frames == {}
    assert kept.model_dump(exclude={"frames"}).keys() == seg.model_dump(exclude={"frames"}).keys()
    np.testing.assert_array_equal(kept.proprio, seg.proprio)
    assert sorted(frames) == ["front", "wrist"]
    for camera, (shape, chunk) in frames.items():
        assert shape == seg.frames[camera].shape
        raw = zstd_contexts()[1].decompress(chunk)
        np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(shape), seg.frames[camera])
    if codec == "zstd":  # passed through as the robot compressed it
        assert frames["front"][1] == _body(seg)["frames"]["front"]["data"]


def test_zstd_frames_without_their_size_in_the_header_are_compressed_again_when_kept() -> None:
    seg = make_segment(size=16, steps=5)
    body = _body(seg)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(seg.frames["front"].tobytes())
    body["frames"]["front"]["data"] = unsized
    _, frames = decode_segment_keeping_frames(_pack(body))
    assert zstandard.frame_content_size(frames["front"][1]) == seg.frames["front"].nbytes


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b["frames"]["front"].update(shape=[4, 16, 16, 3]), r"expected \(5, H, W, 3\)"),
        (lambda b: b["frames"].update({"../x": b["frames"]["front"]}), "camera name"),
        (lambda b: b.update(frames=[]), "frames must be a map"),
    ],
)
def test_a_segment_kept_compressed_still_refuses_frames_that_do_not_fit(mutate: Any, match: str) -> None:
    body = _body(make_segment(size=16, steps=5))
    mutate(body)
    with pytest.raises(SchemaError, match=match):
        decode_segment_keeping_frames(_pack(body))
