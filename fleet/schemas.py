"""Every message fleet puts on the wire: typed pydantic v2 models, encoded compactly with msgpack.

Wire format (``schema_version`` 1): one msgpack map per message holding ``kind`` (which model),
``schema_version`` and the model's fields by name. NumPy arrays travel as a map
``{"__nd__": 1, "dtype", "shape", "codec", "data"}`` where ``codec`` is ``raw`` (the bytes as-is),
``zstd`` (used when it saves at least 10%) or ``png`` (camera frames only: a list of one PNG per
frame). Nothing is pickled; decoding never executes code and caps every array at 64 MiB.

Size of a 1-second TrajectorySegment (10 steps at 10 Hz, one 64×64 RGB camera, panda: proprio 10,
action 4; measured by ``python -m bench.ingest --sizes`` on frames rendered by PyBullet's tiny
renderer, Panda arm over a plane): 3.2 KB with zstd frames (the default), 7.9 KB with PNG frames,
124 KB raw (the frames alone are 122,880 B); 1.2 KB without frames. Random-noise frames
(incompressible, worst case) stay at ~124 KB because the codec falls back to raw.

Compatibility: readers ignore fields they do not know (a newer producer may add fields without a
version bump); removing or changing the meaning of a field bumps ``schema_version``. A message
whose ``kind`` or ``schema_version`` this reader does not know, or that fails validation, raises
:class:`SchemaError` (the consumer dead-letters it). Array shapes are checked against
:mod:`fleet.embodiments` (proprio/action sizes) and against each other (same T everywhere).

Over 400 lines because the wire contract is in one place: every message and its codec, so a change is read
against all of it.
"""

from __future__ import annotations

import io
import math
import re
import threading
from typing import Annotated, Any, ClassVar, Literal

import msgpack
import numpy as np
import zstandard
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator

from fleet.embodiments import get_embodiment

SCHEMA_VERSION = 1
MAX_ARRAY_BYTES = 64 * 1024 * 1024  # decoded size cap per array: a forged shape cannot exhaust memory
_ZSTD_LEVEL = 3
_ZSTD_MIN_BYTES = 128  # below this, compression never pays for its frame header
_DTYPES = {"|b1", "|u1", "<i4", "<i8", "<f2", "<f4", "<f8"}  # the only dtypes accepted from the wire
_FRAME_DTYPE = np.dtype(np.uint8).str  # "|u1", as encode_array names frames' dtype
FrameCodec = Literal["zstd", "png", "raw"]


class SchemaError(ValueError):
    """A payload that is not a valid fleet message (malformed, unknown kind/version, bad shapes)."""


# --- arrays -------------------------------------------------------------------------------------

_local = threading.local()  # zstd contexts are not thread-safe; one pair per thread


def zstd_contexts() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    """This thread's zstd compressor (level 3) and decompressor: the wire's codec, and the episode store's."""
    if not hasattr(_local, "zstd"):
        _local.zstd = (zstandard.ZstdCompressor(level=_ZSTD_LEVEL), zstandard.ZstdDecompressor())
    return _local.zstd


def _array(dtype: type, ndim: int | None = None) -> Any:
    """Pydantic validator: coerce to a C-contiguous array of `dtype` (frames must already be uint8)."""

    def validate(value: Any) -> np.ndarray:
        if dtype is np.uint8 and isinstance(value, np.ndarray) and value.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {value.dtype}")
        try:
            arr: np.ndarray = np.ascontiguousarray(value, dtype=dtype)
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"not convertible to a {np.dtype(dtype).name} array: {e}") from None
        if ndim is not None and arr.ndim != ndim:
            raise ValueError(f"expected {ndim} dimensions, got shape {arr.shape}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError("contains NaN or infinity")
        return arr

    return PlainValidator(validate)


F32 = Annotated[np.ndarray, _array(np.float32)]
F64 = Annotated[np.ndarray, _array(np.float64, 1)]
CAMERA_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # also a file name in the episode store
Mask = Annotated[np.ndarray, _array(np.bool_, 1)]
Frames = Annotated[np.ndarray, _array(np.uint8, 4)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")]  # safe as a path component


def encode_array(arr: np.ndarray, *, codec: FrameCodec | None = None) -> dict[str, Any]:
    """Wire form of an array; `codec=None` picks zstd when it saves ≥10%, else raw."""
    arr = np.ascontiguousarray(arr)
    head = {"__nd__": 1, "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if codec == "png":
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise SchemaError(f"png codec needs uint8 (T, H, W, 3) frames, got {arr.dtype} {arr.shape}")
        from PIL import Image

        pngs = []
        for frame in arr:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="PNG", compress_level=6)
            pngs.append(buf.getvalue())
        return {**head, "codec": "png", "data": pngs}
    raw = arr.tobytes()
    if codec != "raw" and len(raw) >= _ZSTD_MIN_BYTES:
        packed = zstd_contexts()[0].compress(raw)
        if codec == "zstd" or len(packed) <= 0.9 * len(raw):
            return {**head, "codec": "zstd", "data": packed}
    return {**head, "codec": "raw", "data": raw}


def decode_array(obj: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`; raises SchemaError on anything inconsistent."""
    dtype, shape, codec, data = obj.get("dtype"), obj.get("shape"), obj.get("codec"), obj.get("data")
    if dtype not in _DTYPES:
        raise SchemaError(f"array dtype {dtype!r} not allowed (one of {sorted(_DTYPES)})")
    if not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d < 2**31 for d in shape):
        raise SchemaError(f"array shape {shape!r} is not a list of non-negative ints")
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise SchemaError(f"array of shape {shape} ({nbytes} B) exceeds the {MAX_ARRAY_BYTES} B cap")
    if codec == "png":
        return _decode_png(data, shape)
    if not isinstance(data, bytes):
        raise SchemaError("array data must be bytes")
    if codec == "zstd":
        try:
            # exactly one zstd frame: the episode store concatenates robots' frames as they came (fleet.episodes)
            data = zstd_contexts()[1].decompress(data, max_output_size=max(nbytes, 1), allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise SchemaError(f"array zstd data is corrupt: {e}") from None
    elif codec != "raw":
        raise SchemaError(f"unknown array codec {codec!r} (raw, zstd, png)")
    if len(data) != nbytes:
        raise SchemaError(f"array data holds {len(data)} B, shape {shape} of {dtype} needs {nbytes} B")
    return np.frombuffer(data, dtype=dt).reshape(shape)


def _decode_png(data: Any, shape: list[int]) -> np.ndarray:
    if len(shape) != 4 or shape[-1] != 3 or not isinstance(data, list) or len(data) != shape[0]:
        raise SchemaError(f"png frames: expected {shape[0] if shape else '?'} PNGs of shape {shape[1:]}")
    from PIL import Image

    out = np.empty(shape, dtype=np.uint8)
    for i, png in enumerate(data):
        try:
            img = Image.open(io.BytesIO(png), formats=["PNG"])
            if img.size != (shape[2], shape[1]) or img.mode != "RGB":
                raise SchemaError(f"png frame {i} is {img.mode} {img.size}, expected RGB {shape[2]}x{shape[1]}")
            out[i] = np.asarray(img)
        except SchemaError:
            raise
        except Exception as e:  # PIL raises a zoo of types on corrupt input
            raise SchemaError(f"png frame {i} is corrupt: {e}") from None
    return out


# --- messages -----------------------------------------------------------------------------------


class Message(BaseModel):
    """Base of every wire message: `kind` names the model, `schema_version` its wire layout."""

    # No NaN/inf in any float field (timestamps, rewards): a non-finite time would poison ordering and lag.
    model_config = ConfigDict(extra="ignore", frozen=True, arbitrary_types_allowed=True, allow_inf_nan=False)
    KIND: ClassVar[str]
    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1})

    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Kafka partition key: the robot id, so one robot's messages stay ordered."""
        return str(self.robot_id)  # type: ignore[attr-defined]

    @property
    def dedup_key(self) -> tuple[str, ...]:
        """Identity a consumer uses to ignore redelivered copies."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:  # arrays compare by value, not identity
        if type(self) is not type(other):
            return NotImplemented
        return all(_equal(getattr(self, n), getattr(other, n)) for n in type(self).model_fields)

    __hash__ = None  # type: ignore[assignment]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _check_dim(name: str, arr: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape} ({what})")


def _action_dim(embodiment: str) -> int:
    try:
        return get_embodiment(embodiment).action_dim
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None


class TrajectorySegment(Message):
    """One chunk of steps of one episode, attributed to the model version that acted."""

    KIND: ClassVar[str] = "trajectory_segment"
    robot_id: Id
    embodiment: str
    task_id: Id
    instruction: str
    episode_id: Id
    segment_index: int = Field(ge=0, lt=1_000_000)  # 0, 1, 2, ... within the episode
    step_start: int = Field(ge=0)  # episode step index of this segment's first step
    model_version: str | None  # registry version that produced the actions; None = scripted / human
    created_at: float  # producer wall clock (s) when the segment was closed; used for latency
    timestamps: F64  # (T,) wall-clock seconds of each step
    frames: dict[Annotated[str, Field(pattern=CAMERA_NAME)], Frames]  # camera -> (T, H, W, 3)
    proprio: F32  # (T, P) proprioceptive state before each action
    actions: F32  # (T, A) action executed at each step
    intervention: Mask  # (T,) True where a human drove the step
    rewards: F32  # (T,) step rewards
    done: bool = False  # last segment of the episode
    success: bool = False  # meaningful when done
    missed_ticks: int = Field(default=0, ge=0)  # control ticks that overran their deadline while it was recorded

    @property
    def length(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def dedup_key(self) -> tuple[str, ...]:
        return ("segment", self.robot_id, self.episode_id, str(self.segment_index))

    @model_validator(mode="after")
    def _shapes(self) -> TrajectorySegment:
        try:
            spec = get_embodiment(self.embodiment)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None
        t = self.length
        if not 1 <= t <= 10_000:
            raise ValueError(f"segment has {t} steps; expected 1..10000")
        _check_dim("proprio", self.proprio, (t, spec.proprio_dim), f"T={t}, {spec.name} proprio_dim")
        _check_dim("actions", self.actions, (t, spec.action_dim), f"T={t}, {spec.name} action_dim")
        _check_dim("intervention", self.intervention, (t,), f"T={t}")
        _check_dim("rewards", self.rewards, (t,), f"T={t}")
        for camera, frames in self.frames.items():
            if frames.shape[0] != t or frames.shape[-1] != 3 or 0 in frames.shape:
                raise ValueError(f"camera {camera!r} frames have shape {frames.shape}, expected ({t}, H, W, 3)")
        return self


class Correction(Message):
    """A human takeover: who drove which steps of which episode, and the actions they gave."""

    KIND: ClassVar[str] = "correction"
    correction_id: Id
    robot_id: Id
    embodiment: str
    task_id: Id
    episode_id: Id
    step_start: int = Field(ge=0)  # episode step index of the first corrected step
    actions: F32  # (n, A) the corrective actions, one per step from step_start
    operator: str  # who took over (user name or "supervisor:<script>")
    model_version: str | None  # version whose actions were overridden
    # The registry alias that version came from: "canary" tags the corrections a rollout drew (fleet.canary).
    channel: str | None = Field(default=None, max_length=32)
    created_at: float
    note: str = ""
    reason: str = Field(default="", max_length=200)  # why the takeover fired (the supervisor's rule and numbers)

    @property
    def step_end(self) -> int:
        """Episode step index one past the last corrected step."""
        return self.step_start + int(self.actions.shape[0])

    @property
    def dedup_key(self) -> tuple[str, ...]:
        return ("correction", self.correction_id)

    @model_validator(mode="after")
    def _shapes(self) -> Correction:
        n, a = (self.actions.shape[0] if self.actions.ndim else 0), _action_dim(self.embodiment)
        if n < 1:
            raise ValueError("a correction needs at least one action")
        _check_dim("actions", self.actions, (n, a), f"{self.embodiment} action_dim")
        return self


class RewardSignal(Message):
    """A late or human label for an episode: outcome and/or dense rewards from `step_start`."""

    KIND: ClassVar[str] = "reward_signal"
    reward_id: Id
    robot_id: Id
    episode_id: Id
    source: Literal["human", "sim", "classifier", "script"]
    labeller: str
    created_at: float
    success: bool | None = None  # episode outcome, if this signal labels it
    step_start: int = Field(default=0, ge=0)
    rewards: F32 | None = None  # (n,) dense rewards for steps step_start .. step_start + n

    @property
    def dedup_key(self) -> tuple[str, ...]:
        return ("reward", self.reward_id)

    @model_validator(mode="after")
    def _shapes(self) -> RewardSignal:
        if self.success is None and self.rewards is None:
            raise ValueError("a reward signal needs `success`, `rewards` or both")
        if self.rewards is not None and self.rewards.ndim != 1:
            raise ValueError(f"rewards must be 1-D, got shape {self.rewards.shape}")
        return self


class LoopStats(BaseModel):
    """Control-loop timing since the previous heartbeat."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)
    control_hz: float = Field(gt=0)  # target tick rate
    ticks: int = Field(ge=0)  # ticks run in the window
    missed_ticks: int = Field(ge=0)  # ticks that overran their deadline
    tick_ms_p50: float = Field(ge=0)
    tick_ms_p99: float = Field(ge=0)
    tick_ms_max: float = Field(ge=0)


class Heartbeat(Message):
    """Periodic robot status: what the dashboard's fleet page shows."""

    KIND: ClassVar[str] = "heartbeat"
    robot_id: Id
    embodiment: str
    state: Literal["starting", "idle", "running", "paused", "stopped", "out_of_rotation", "error"]
    model_version: str | None
    # The registry alias the robot's version came from: "production", or "canary" while a rollout includes it.
    channel: str | None = Field(default=None, max_length=32)
    task_id: str | None = None
    episode_id: str | None = None
    sent_at: float
    loop: LoopStats
    pending_command_id: str | None = None  # received, not yet applied (applied at a chunk boundary)
    applied_command_id: str | None = None  # last command applied
    spooled_messages: int = Field(default=0, ge=0)  # messages waiting in the robot's disk spool
    intervening: bool = False  # a human (supervisor) drives the robot right now
    error: str | None = None

    @property
    def dedup_key(self) -> tuple[str, ...]:
        return ("heartbeat", self.robot_id, repr(self.sent_at))


class ModelEvent(Message):
    """A registry change robots react to: new version, alias moved, pin."""

    KIND: ClassVar[str] = "model_event"
    event: Literal["registered", "promoted", "rolled_back", "pinned", "unpinned", "canary_started", "canary_ended"]
    model_name: str
    version: str
    alias: str | None = None  # "candidate" / "production" / "canary" when the event moves an alias
    artifact_uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    parent_version: str | None = None
    actor: str = "learner"  # who caused it (learner, or a dashboard user)
    reason: str = ""
    created_at: float

    @property
    def key(self) -> str:
        return self.model_name

    @property
    def dedup_key(self) -> tuple[str, ...]:
        return ("model", self.model_name, self.version, self.event, self.alias or "")


class Review(Message):
    """A reviewer's verdict on a correction: approve, reject (leaves the replay) or relabel."""

    KIND: ClassVar[str] = "review"
    review_id: Id
    correction_id: Id
    robot_id: Id
    reviewer: str
    decision: Literal["approve", "reject", "relabel"]
    relabel_success: bool | None = None  # relabel: the outcome the reviewer assigns the episode
    relabelled_actions: F32 | None = None  # relabel: (n, A) actions replacing the correction's
    note: str = ""  # the reviewer's reason
    created_at: float

    @property
    def dedup_key(self) -> tuple[str, ...]:
        return ("review", self.review_id)

    @model_validator(mode="after")
    def _relabel(self) -> Review:
        relabels = self.relabel_success is not None or self.relabelled_actions is not None
        if (self.decision == "relabel") != relabels:
            raise ValueError("relabel_success / relabelled_actions are required for decision='relabel' and only then")
        actions = self.relabelled_actions
        if actions is not None and (actions.ndim != 2 or not len(actions)):
            raise ValueError(f"relabelled_actions must be (n, A), got {actions.shape}")
        return self


class Command(Message):
    """An operator command to one robot (topic `fleet.commands`), applied at a chunk boundary."""

    KIND: ClassVar[str] = "command"
    command_id: Id
    robot_id: Id
    action: Literal["pause", "resume", "stop", "assign_task", "out_of_rotation"]
    task_id: Id | None = None  # assign_task only
    instruction: str | None = None  # assign_task only
    issued_by: str
    reason: str = ""
    created_at: float

    @property
    def dedup_key(self) -> tuple[str, ...]:
        return ("command", self.command_id)

    @model_validator(mode="after")
    def _task(self) -> Command:
        if (self.action == "assign_task") != (self.task_id is not None):
            raise ValueError("task_id is required for action='assign_task' and only then")
        return self


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.KIND: cls for cls in (TrajectorySegment, Correction, RewardSignal, Heartbeat, ModelEvent, Review, Command)
}


# --- encode / decode ----------------------------------------------------------------------------


def _to_wire(value: Any, frame_codec: FrameCodec) -> Any:
    if isinstance(value, np.ndarray):
        is_frames = value.ndim == 4 and value.dtype == np.uint8
        return encode_array(value, codec=frame_codec if is_frames and frame_codec != "zstd" else None)
    if isinstance(value, BaseModel):
        return {name: _to_wire(getattr(value, name), frame_codec) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {k: _to_wire(v, frame_codec) for k, v in value.items()}
    return value


def _from_wire(value: Any) -> Any:
    if isinstance(value, dict):
        if "__nd__" in value:
            return decode_array(value)
        return {k: _from_wire(v) for k, v in value.items()}
    return value


def encode(message: Message, *, frame_codec: FrameCodec = "zstd") -> bytes:
    """Serialize a message to bytes (msgpack; see the module docstring for the layout)."""
    body = _to_wire(message, frame_codec)
    body["kind"] = message.KIND
    return msgpack.packb(body, use_bin_type=True)


def _unpack(data: bytes) -> dict[str, Any]:
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise SchemaError(f"payload is not msgpack ({len(data)} B): {type(e).__name__}: {e}") from None
    if not isinstance(body, dict):
        raise SchemaError(f"payload is a msgpack {type(body).__name__}, expected a map")
    return body


def decode(data: bytes, expected: type[Message] | None = None) -> Message:
    """Parse bytes into the message they hold; SchemaError says what is wrong with a bad payload."""
    return _validate(_unpack(data), expected)


def decode_segment_keeping_frames(
    data: bytes, *, verify: bool = False
) -> tuple[TrajectorySegment, dict[str, tuple[tuple[int, ...], bytes]]]:
    """A trajectory segment whose frames stay compressed: the segment without frames, and per camera the frames'
    shape and one zstd frame holding their bytes.

    For a consumer that stores frames without looking at them (the recorder writes robots' zstd frames into the
    episode store as they came): frames the robot sent zstd-compressed are not kept decompressed; raw or PNG ones are
    decoded and compressed. `verify=True` refuses (SchemaError) every segment `decode` refuses, so it can replace
    `decode` where the bytes come off the wire: each zstd frame is decompressed once to prove it holds the bytes its
    shape needs, then dropped. `verify=False` trusts the bytes to be a segment such a decode accepted (the
    recorder's own staging log): only the frames' shapes are checked.
    """
    body = _unpack(data)
    wire = body.get("frames")
    body["frames"] = {}
    seg = _validate(body, TrajectorySegment)  # another kind of message is refused as such, before its frames
    assert isinstance(seg, TrajectorySegment)
    if not isinstance(wire, dict):
        raise SchemaError("trajectory_segment: frames must be a map of camera -> array")
    frames: dict[str, tuple[tuple[int, ...], bytes]] = {}
    for camera, obj in wire.items():
        if not isinstance(camera, str) or not re.fullmatch(CAMERA_NAME, camera):
            raise SchemaError(f"camera name {camera!r} does not match {CAMERA_NAME}")
        shape = obj.get("shape") if isinstance(obj, dict) else None
        if not (
            isinstance(obj, dict)
            and isinstance(shape, list)
            and len(shape) == 4
            and shape[0] == seg.length
            and shape[-1] == 3
            and 0 not in shape
            and obj.get("dtype") == _FRAME_DTYPE
        ):
            raise SchemaError(f"camera {camera!r} frames have shape {shape}, expected ({seg.length}, H, W, 3) uint8")
        chunk = obj.get("data")
        # passed through when its header states the size (an encoder may leave it out: compressed again below)
        if obj.get("codec") == "zstd" and isinstance(chunk, bytes) and _zstd_content_size(chunk) == math.prod(shape):
            if verify:
                decode_array(obj)  # raises on corrupt data; the pixels themselves are not kept
            frames[camera] = (tuple(shape), chunk)
        else:
            frames[camera] = (tuple(shape), zstd_contexts()[0].compress(decode_array(obj).tobytes()))
    return seg, frames


def _zstd_content_size(data: bytes) -> int:
    """The content size a zstd frame's header states; -1 when it states none or `data` is no zstd frame."""
    try:
        return int(zstandard.frame_content_size(data))
    except zstandard.ZstdError:
        return -1


def _validate(body: dict[str, Any], expected: type[Message] | None) -> Message:
    kind, version = body.get("kind"), body.get("schema_version")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SchemaError(f"unknown message kind {kind!r}; this reader knows {sorted(MESSAGE_TYPES)}")
    if expected is not None and cls is not expected:
        raise SchemaError(f"expected a {expected.KIND} message, got {kind!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version not in cls.SUPPORTED_VERSIONS:
        raise SchemaError(
            f"{kind} schema_version {version!r} is not supported (this reader: {sorted(cls.SUPPORTED_VERSIONS)});"
            " upgrade fleet on this consumer"
        )
    try:
        return cls.model_validate(_from_wire(body))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or kind}: {err['msg']}" for err in e.errors()[:5])
        raise SchemaError(f"invalid {kind}: {problems}") from None
    except SchemaError:
        raise
    except Exception as e:  # a validator tripping over a hostile value must still read as a bad payload
        raise SchemaError(f"invalid {kind}: {type(e).__name__}: {e}") from None
