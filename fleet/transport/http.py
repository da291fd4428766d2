"""Robot messages over HTTPS, through the dashboard's ingestion endpoint, for robots with no route to Kafka.

`HttpTransport` is the robot-side twin of the Kafka transport's `SpoolingProducer`: `send()` never blocks, and a
thread POSTs each message, in send order, to `POST /api/v1/robots/{robot_id}/messages` (dashboards/routes/
ingest.py) with the robot's token. The dashboard answers 202 only once Kafka has stored the message, so a message
is done when its 202 arrives, and only then.

- Anything that may pass (the dashboard down or restarting, a timeout, 503 while the broker is down, 429, 5xx)
  puts the transport ``down``: that message and every later one go to the disk spool (fsync'd), the oldest
  spooled message is tried again every `retry_s`, and once one is taken the spool is replayed, oldest first,
  before anything new goes direct. A robot that restarts replays what its previous run spooled.
- A 401 (token expired or revoked) is not the message's fault: messages wait in the spool, and the log says to
  replace the token.
- A message the dashboard refuses for what it is (400, 403, 404, 413, 415) can never be delivered: it is dropped
  with the dashboard's reason (delivery callback, `stats.dropped`, an ERROR log); so is a spool record whose crc
  fails (a robot token may not write the dead-letter topic).

A dashboard that dies after Kafka stored a message and before its 202 reached the robot gets that message again;
consumers drop the duplicate (segments are keyed by episode and index), as they do behind the Kafka producer.
Robots on this transport read commands and model events from nowhere: their reloader polls the registry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import msgpack

from fleet.schemas import Command
from fleet.transport.base import (
    Consumer,
    Delivery,
    DeliveryCallback,
    Headers,
    Outstanding,
    ProducerStats,
    TransportError,
)
from fleet.transport.spool import DiskSpool, MemorySpool, Spool, SpoolDamage

log = logging.getLogger(__name__)

PERMANENT = frozenset({400, 403, 404, 405, 413, 415, 422})  # the message itself is refused: resending cannot help


@dataclass(frozen=True)
class HttpTransportConfig:
    """Where and as whom a robot posts. `FLEET_INGEST_URL` and `FLEET_ROBOT_TOKEN` in services."""

    url: str  # the dashboard's base URL, e.g. https://fleet.example.org
    robot_id: str
    token: str  # a robot token (`robot:produce`) bound to `robot_id`
    spool_dir: Path | None = None  # where messages wait while the dashboard cannot take them; None = memory
    spool_max_bytes: int = 1024**3
    spool_segment_bytes: int = 16 * 1024**2
    queue_size: int = 10_000  # hand-off queue between `send()` and the sender thread
    timeout_s: float = 15.0  # one POST, connection to answer (the dashboard's own wait for Kafka is shorter)
    retry_s: float = 1.0  # while down, how often the oldest spooled message is tried again

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"ingest URL {self.url!r} must start with https:// (or http:// on loopback)")
        if not self.token:
            raise ValueError("a robot posting through the dashboard needs its token: set FLEET_ROBOT_TOKEN")
        if self.retry_s <= 0 or self.timeout_s <= 0 or self.queue_size < 1:
            raise ValueError("retry_s, timeout_s and queue_size must be positive")


@dataclass(slots=True)
class _Item:
    topic: str
    key: str | None
    value: bytes
    on_delivery: DeliveryCallback | None = None


class _Retry(Exception):
    """The dashboard did not take the message this time; it stays (spooled) and is sent again."""


class HttpTransport:
    """`Transport` (producer side) over the dashboard's ingestion endpoint; see the module docstring."""

    def __init__(self, config: HttpTransportConfig, *, client: httpx.Client | None = None) -> None:
        self.config = config
        self.stats = ProducerStats()
        self._robot_url = f"{config.url.rstrip('/')}/api/v1/robots/{quote(config.robot_id, safe='')}"
        self.endpoint = f"{self._robot_url}/messages"
        self._client = client or httpx.Client(timeout=config.timeout_s)
        self._headers = {"Authorization": f"Bearer {config.token}", "Content-Type": "application/msgpack"}
        self._spool: Spool = (
            DiskSpool(config.spool_dir, max_bytes=config.spool_max_bytes, segment_bytes=config.spool_segment_bytes)
            if config.spool_dir is not None
            else MemorySpool(max_bytes=config.spool_max_bytes)
        )
        self._queue: deque[_Item] = deque()
        self._wakeup = threading.Event()
        self._lock = threading.Lock()
        self._outstanding = Outstanding(self._lock, self._spool.records)  # accepted and not yet delivered or dropped
        # Sender thread only:
        self._callbacks: dict[int, DeliveryCallback] = {}  # id of a spooled message -> its delivery callback
        self._next_id = 0
        self._run_id = os.urandom(8)  # ids in records spooled by an earlier run tie back to no callback
        self._replay: tuple[object, list[bytes | SpoolDamage]] | None = None  # segment being replayed, its records
        self._cursor = 0  # next record of that segment to send
        self._state = "up"
        self._next_try = 0.0
        self._closing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fleet-http-{config.robot_id}", daemon=True)
        self._thread.start()

    # --- caller side (any thread, never blocks) -------------------------------------------------

    @property
    def state(self) -> str:
        """Either "up" (posting directly) or "down" (spooling, trying the oldest message every `retry_s`)."""
        return self._state

    @property
    def spooled(self) -> int:
        """Messages waiting in the spool (a robot reports this in its heartbeat)."""
        return self._spool.records

    @property
    def producer(self) -> HttpTransport:
        """Itself: callers written for `KafkaTransport` read `transport.producer.spooled`."""
        return self

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | None,
        headers: Headers = (),
        on_delivery: DeliveryCallback | None = None,
    ) -> bool:
        """Queue a message (the dashboard picks its topic from its kind; `headers` do not travel over HTTP)."""
        with self._lock:
            if self._closing:
                raise RuntimeError("transport is closed")
            if len(self._queue) >= self.config.queue_size:
                self.stats.dropped += 1
                self.stats.errors["QueueFull"] = self.stats.errors.get("QueueFull", 0) + 1
                log.error("HTTP transport queue full (%d): dropped a message for %s", self.config.queue_size, topic)
                return False
            self._queue.append(_Item(topic, key, value, on_delivery))
            self._outstanding.add()
        self._wakeup.set()
        return True

    def flush(self, timeout_s: float = 30.0) -> bool:
        with self._lock:
            return self._outstanding.wait(timeout_s, working=self._thread.is_alive)

    def commands(self, after: float) -> list[Command]:
        """This robot's commands created after `after` (its clock's seconds), from the dashboard's feed of
        `fleet.commands`, oldest first; [] while the dashboard cannot answer (the next poll asks again)."""
        try:
            response = self._client.get(
                f"{self._robot_url}/commands", params={"after": repr(after)}, headers=self._headers
            )
        except httpx.HTTPError as e:
            log.debug("commands not fetched: %s", e, extra={"robot": self.config.robot_id})
            return []
        if response.status_code != 200:
            log.warning("commands not fetched: %s %s", response.status_code, _detail(response),
                        extra={"robot": self.config.robot_id})  # fmt: skip
            return []
        out = []
        for raw in response.json().get("commands", []):
            try:
                out.append(Command.model_validate(raw))
            except ValueError as e:  # a feed entry this robot cannot read: skipped, the others still apply
                log.error("bad command from the dashboard skipped: %s", e, extra={"robot": self.config.robot_id})
        return out

    def consumer(
        self, *, group_id: str | None, topics: Sequence[str], start_at: Mapping[tuple[str, int], int] | None = None
    ) -> Consumer:
        raise TransportError("a robot posting through the dashboard has no Kafka consumer")

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush for up to `timeout_s`; whatever is left stays in the spool for the next run."""
        if not self.flush(timeout_s):
            log.warning("HTTP transport closing, %d messages undelivered stay spooled", self._outstanding.count)
        with self._lock:
            self._closing = True
        self._stop.set()
        self._wakeup.set()
        self._thread.join(timeout=timeout_s + self.config.timeout_s)
        self._client.close()

    # --- sender thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._tick()
        except Exception:  # the thread dying silently would lose data: make it loud
            log.exception("HTTP transport's sender crashed; messages stay queued/spooled")
            raise
        finally:
            self._to_spool(self._take())  # what never left memory waits on disk for the next run
            self._spool.close()

    def _take(self) -> list[_Item]:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
        return items

    def _tick(self) -> None:
        if not self._queue and (self._state == "down" or not self._spool.records):
            self._wakeup.wait(max(0.0, self._next_try - time.monotonic()) if self._state == "down" else 0.5)
            self._wakeup.clear()
        items = self._take()
        if self._state == "down" and time.monotonic() >= self._next_try:
            self._state = "up"  # try again: the oldest spooled message goes first
        if self._state == "up" and self._spool.records:
            self._to_spool(items)  # new messages queue behind the spool, so order holds
            self._replay_some()
            return
        for i, item in enumerate(items):
            if self._state == "down":
                self._to_spool(items[i:])
                return
            self._deliver(item.value, item.on_delivery, item.topic, item.key, direct=True)

    def _deliver(
        self, value: bytes, callback: DeliveryCallback | None, topic: str, key: str | None, *, direct: bool
    ) -> bool:
        """POST one message; True once it is done (delivered or refused for good), False when it must wait."""
        try:
            answer = self._post(value)
        except _Retry as e:
            self._down(str(e))
            if direct:
                self._to_spool([_Item(topic, key, value, callback)])
            return False
        error = answer.get("error")
        if error is None:
            self.stats.acked += 1
        else:
            self.stats.dropped += 1
            self.stats.errors["Refused"] = self.stats.errors.get("Refused", 0) + 1
            log.error("the dashboard refused a message for %s key=%s for good: %s", topic, key, error)
        if direct:
            self.stats.sent += 1
            self._release(1)
        else:
            self.stats.replayed += 1
        if callback is not None:
            delivery = Delivery(answer.get("topic", topic), key, answer.get("partition"), answer.get("offset"), error)
            try:
                callback(delivery)
            except Exception:
                log.exception("delivery callback failed for %s key=%s", topic, key)
        return True

    def _post(self, value: bytes) -> dict:
        try:
            response = self._client.post(self.endpoint, content=value, headers=self._headers)
        except httpx.HTTPError as e:
            raise _Retry(f"dashboard at {self.config.url} not reachable ({type(e).__name__}: {e})") from None
        if response.status_code == 202:
            return response.json()
        detail = _detail(response)
        if response.status_code in PERMANENT:
            return {"error": f"HTTP {response.status_code}: {detail}"}
        if response.status_code == 401:
            raise _Retry(f"token refused ({detail}): messages wait in the spool; replace FLEET_ROBOT_TOKEN")
        raise _Retry(f"HTTP {response.status_code}: {detail}")

    def _down(self, reason: str) -> None:
        if self._state == "up":
            log.warning("%s: spooling, retrying every %.1f s", reason, self.config.retry_s)
        self._state = "down"
        self._next_try = time.monotonic() + self.config.retry_s

    def _to_spool(self, items: list[_Item]) -> None:
        if not items:
            return
        payloads = []
        for item in items:
            self._next_id += 1
            if item.on_delivery is not None:
                self._callbacks[self._next_id] = item.on_delivery
            payloads.append(
                msgpack.packb([item.topic, item.key, item.value, self._next_id, self._run_id], use_bin_type=True)
            )
        written = self._spool.append_many(payloads)
        self.stats.spooled += written
        refused = items[written:]
        if refused:
            log.error("spool full (%d B): dropped %d messages", self.config.spool_max_bytes, len(refused))
            self.stats.dropped += len(refused)
            self._release(len(refused))
            for i, item in enumerate(refused, start=self._next_id - len(refused) + 1):
                callback = self._callbacks.pop(i, None)
                if callback is not None:
                    callback(Delivery(item.topic, item.key, None, None, "spool full"))

    def _replay_some(self) -> None:
        """Send the oldest spool segment's records in order; delete the segment once every one is done."""
        if self._replay is None:
            token = self._spool.oldest()
            if token is None:
                return
            self._replay, self._cursor = (token, self._spool.read(token)), 0
        token, records = self._replay
        while self._cursor < len(records) and not self._stop.is_set():
            raw = records[self._cursor]
            if isinstance(raw, SpoolDamage):
                log.error("%s: dropped (no message can be read from it)", raw.reason)
                self.stats.dropped += 1
            else:
                topic, key, value, ident, run_id = msgpack.unpackb(raw, raw=False)
                mine = run_id == self._run_id
                callback = self._callbacks.get(ident) if mine else None
                if not self._deliver(value, callback, topic, key, direct=False):
                    return
                if mine:
                    self._callbacks.pop(ident, None)
            self._cursor += 1
            if self._queue:  # fresh messages go to disk behind the spool as they come, not only at the end
                self._to_spool(self._take())
        if self._cursor >= len(records):
            self._spool.remove(token, len(records))
            self._release(len(records))
            self._replay = None

    def _release(self, count: int) -> None:
        with self._lock:
            self._outstanding.release(count)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail) if detail else response.text[:200] or response.reason_phrase
