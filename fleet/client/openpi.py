"""openpi's policy-server protocol: msgpack with numpy arrays, over a websocket.

The wire format is openpi-client's (`openpi_client.msgpack_numpy`): an array travels as a map
{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str, b"shape": shape} and a numpy scalar as
{b"__npgeneric__": True, b"data": value, b"dtype": dtype.str}; everything else is plain msgpack. After the websocket
handshake the server sends one metadata map; then each request (an observation map) gets one response map, or a text
frame with the error.

Decoding builds arrays from raw bytes only for plain numeric, bool and fixed-width string dtypes: an object or void
dtype would turn bytes from the network into Python object pointers, so it is refused (as pickle is everywhere in
fleet). `PolicyClient` is the robot's side (`fleet[client]`: no torch); `fleet serve` (actors/serve.py) the server's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

ALLOWED_KINDS = frozenset("biufUS")  # bool, ints, unsigned, floats, fixed-width str / bytes


class ProtocolError(ValueError):
    """A frame that is not a message of this protocol (a bad array, an unsafe dtype, not msgpack)."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind not in ALLOWED_KINDS:
        raise ProtocolError(f"arrays of dtype {obj.dtype} cannot be sent")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}  # fmt: skip
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _dtype(name: Any) -> np.dtype:
    try:
        dtype = np.dtype(name)
    except TypeError as err:
        raise ProtocolError(f"unknown dtype {name!r}") from err
    if dtype.kind not in ALLOWED_KINDS:
        raise ProtocolError(f"dtype {dtype} is refused: only numbers, bools and fixed-width strings travel as arrays")
    return dtype


def _decode(obj: dict[Any, Any]) -> Any:
    if b"__ndarray__" in obj:
        dtype, shape, data = _dtype(obj.get(b"dtype")), obj.get(b"shape"), obj.get(b"data")
        if not isinstance(shape, list | tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ProtocolError(f"bad array shape {shape!r}")
        if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
            raise ProtocolError(f"array data does not match shape {list(shape)} of {dtype}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()  # writable, owns its memory
    if b"__npgeneric__" in obj:
        return _dtype(obj.get(b"dtype")).type(obj.get(b"data"))
    return obj


packb = functools.partial(msgpack.packb, default=_encode)


def unpackb(frame: bytes, *, max_bytes: int = 64 << 20) -> Any:
    """Decode one frame (arrays as numpy); ProtocolError for anything else."""
    if len(frame) > max_bytes:
        raise ProtocolError(f"frame of {len(frame)} bytes is over the limit of {max_bytes}")
    try:
        return msgpack.unpackb(frame, object_hook=_decode, strict_map_key=False)
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as err:
        raise ProtocolError(f"not a msgpack message: {err}") from err


class PolicyClient:
    """Action chunks from `fleet serve` (or any openpi policy server) for a robot that streams through
    `fleet.client.RobotClient`:

        policy = PolicyClient("wss://fleet.example.org:8000", api_key=token)
        reply = policy.infer({"images": {...}, "proprio": ..., "instruction": "...", "embodiment": "panda"})
        reply["actions"]        # float32 (H, action_dim), executed as fleet.chunks schedules them
        reply["model_version"]  # pass it to EpisodeStream.act(version=...)
    """

    def __init__(self, uri: str, *, api_key: str | None = None, open_timeout_s: float = 10.0) -> None:
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self._ws = connect(uri, compression=None, max_size=None, additional_headers=headers, legacy=True,
                           open_timeout=open_timeout_s)  # fmt: skip
        hello = self._ws.recv()
        if isinstance(hello, str):
            raise RuntimeError(f"policy server: {hello}")
        self.metadata: Mapping[str, Any] = unpackb(hello)

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        self._ws.send(packb(dict(obs)))
        reply = self._ws.recv()
        if isinstance(reply, str):  # the protocol's error frame
            raise RuntimeError(f"policy server: {reply}")
        return dict(unpackb(reply))

    def close(self) -> None:
        self._ws.close()
