"""How many event streams may be open: a total for the process and a share per caller.

Every open stream holds a connection and reads the database before each event, so one user's forgotten tabs or a
looping script must not take them all. `StreamSlots.take` answers a `Slot` or raises `TooManyRequests` (429);
the response serving the stream gives the slot back however the stream ends (`SlotStreamingResponse`).
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi.responses import StreamingResponse

from dashboards.auth import Principal
from dashboards.errors import TooManyRequests


def caller_key(principal: Principal) -> str:
    """Whose share a stream counts against: a user (all of their sessions together) or one API token."""
    return f"token:{principal.token_id}" if principal.via == "token" else f"user:{principal.name}"


class Slot:
    """One open stream's place; `release` may be called any number of times (only the first counts)."""

    def __init__(self, slots: StreamSlots, caller: str) -> None:
        self._slots, self.caller = slots, caller
        self.released = False

    def release(self) -> None:
        self._slots.give_back(self)


class StreamSlots:
    """Counts open streams per caller; thread-safe."""

    def __init__(self, *, total: int, per_caller: int) -> None:
        self.total, self.per_caller = total, per_caller
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, caller: str) -> Slot:
        with self._lock:
            mine = self._open.get(caller, 0)
            if mine >= self.per_caller:
                raise TooManyRequests(
                    f"you already have {mine} live event streams open (at most {self.per_caller}): "
                    "close another fleet page or wait for one of your streams to end"
                )
            if sum(self._open.values()) >= self.total:
                raise TooManyRequests(
                    f"the dashboard is serving its limit of {self.total} live event streams: try again later "
                    "(or raise DashboardConfig.sse_max_streams)"
                )
            self._open[caller] = mine + 1
        return Slot(self, caller)

    def open_streams(self, caller: str | None = None) -> int:
        with self._lock:
            return sum(self._open.values()) if caller is None else self._open.get(caller, 0)

    def give_back(self, slot: Slot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            left = self._open.get(slot.caller, 0) - 1
            if left > 0:
                self._open[slot.caller] = left
            else:
                self._open.pop(slot.caller, None)


class SlotStreamingResponse(StreamingResponse):
    """A `StreamingResponse` that releases its stream slot when the response is over: the stream ended, the client
    went away (cancelled, or `ClientDisconnect`), or anything else stopped it."""

    def __init__(self, content: Any, *, slot: Slot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()
