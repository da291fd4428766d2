"""Non-blocking producer: `send()` hands off to a thread that talks to Kafka or, when the broker is
down, to the disk spool; spooled messages are replayed in order once the broker is back.

States of the producer thread:
- ``up``: messages go straight to kafka-python (acks=all, idempotent, batched, compressed).
- ``down``: entered when the broker cannot be reached at start, a send times out, a delivery
  fails, or in-flight messages see no ack for `stall_s`. New messages go to the spool.
  The broker is probed every `probe_interval_s` (TCP connect); once it answers and nothing is
  in flight, the state is ``up`` again and the spool is replayed oldest first, in chunks, before
  any new message goes direct (so per-key order holds; new messages queue behind the spool).
A message whose delivery fails after kafka-python's own retries is spooled again, which can put it
behind newer ones; consumers order by (episode, segment index) and drop duplicates.

Over 400 lines because the producer thread's states (up, down, replay) share the in-flight and spool state and
its transitions only make sense read together.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.partitioner.default import murmur2

from fleet import observability
from fleet.transport.base import (
    DEADLETTER,
    Delivery,
    DeliveryCallback,
    Headers,
    Outstanding,
    ProducerStats,
    TransportConfig,
    kafka_producer_options,
)
from fleet.transport.spool import DiskSpool, MemorySpool, Spool, SpoolDamage

log = logging.getLogger(__name__)
_REPLAY_CHUNK = 500


@dataclass(slots=True)
class _Item:
    topic: str
    key: str | None
    value: bytes
    headers: list[tuple[str, bytes]]
    seq: int  # process-local, ties a replayed message back to its delivery callback
    on_delivery: DeliveryCallback | None = None
    replay: bool = False  # being resent from the spool (its spool copy stays until the chunk is acked)


class SpoolingProducer:
    """Kafka producer that never blocks its caller and survives broker outages via the spool."""

    def __init__(self, config: TransportConfig, *, on_connect: Callable[[], None] | None = None) -> None:
        self.config = config
        self.stats = ProducerStats()
        self._on_connect = on_connect  # e.g. ensure_topics, run once per successful connection
        # Hand-off queue: a deque (atomic append/popleft) plus a wake-up event; cheaper per message than
        # queue.Queue. The bound is checked in send().
        self._queue: deque[_Item] = deque()
        self._wakeup = threading.Event()
        self._idle = False  # the producer thread is (about to be) waiting on _wakeup
        self._spool: Spool = (
            DiskSpool(config.spool_dir, max_bytes=config.spool_max_bytes, segment_bytes=config.spool_segment_bytes)
            if config.spool_dir is not None
            else MemorySpool(max_bytes=config.spool_max_bytes)
        )
        self._lock = threading.Lock()
        self._outstanding = Outstanding(self._lock, self._spool.records)  # accepted and not yet delivered or dropped
        self._seq = 0
        # Below: producer thread only, no locks. In-flight futures are reaped in send order by polling
        # (`is_done`), which costs far less per message than registering callbacks on each future.
        self._inflight: deque[tuple[_Item, Any]] = deque()
        self._callbacks: dict[int, DeliveryCallback] = {}  # seq of a spooled item -> its delivery callback
        self._partition_counts: dict[str, int] = {}  # topic -> partitions, re-read every tick (topics can grow)
        self._key_partitions: dict[tuple[str, bytes, int], int] = {}
        self._run_id = os.urandom(8)
        self._producer: KafkaProducer | None = None
        self._state = "down"
        self._last_progress = time.monotonic()
        self._next_attempt = 0.0
        self._attempts = 0
        self._replay: _Replay | None = None
        self._closing = False
        self._dead = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-producer", daemon=True)
        self._thread.start()
        observability.track_producer(self)  # stats and spool size are read at each scrape

    # --- caller side (any thread, never blocks) -------------------------------------------------

    @property
    def state(self) -> str:
        """Either "up" (sending to Kafka) or "down" (spooling)."""
        return self._state

    @property
    def spooled(self) -> int:
        """Messages waiting in the spool (a robot reports this in its heartbeat)."""
        return self._spool.records

    @property
    def spooled_bytes(self) -> int:
        """Bytes waiting in the spool."""
        return self._spool.nbytes

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | None,
        headers: Headers = (),
        on_delivery: DeliveryCallback | None = None,
    ) -> bool:
        with self._lock:
            if self._closing or self._dead:  # checked under the lock: close() drains the queue after setting it
                raise RuntimeError("producer is closed" if self._closing else "producer thread died (see the log)")
            if len(self._queue) >= self.config.queue_size:
                self.stats.dropped += 1
                self.stats.errors["QueueFull"] = self.stats.errors.get("QueueFull", 0) + 1
                full = True
            else:
                self._seq += 1
                self._queue.append(_Item(topic, key, value, list(headers) if headers else [], self._seq, on_delivery))
                self._outstanding.add()
                full = False
        if full:
            log.error("producer queue full (%d): dropped a message for %s key=%s", self.config.queue_size, topic, key)
            return False
        if self._idle:
            self._wakeup.set()
        return True

    def flush(self, timeout_s: float = 30.0) -> bool:
        with self._lock:
            return self._outstanding.wait(timeout_s, working=lambda: not self._dead)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush for up to `timeout_s`; whatever is left (queued or in flight) goes to the spool."""
        if not self.flush(timeout_s):
            log.warning("producer closing, %d messages undelivered stay in the spool", self._outstanding.count)
        with self._lock:
            self._closing = True
        self._stop.set()
        self._wakeup.set()
        self._thread.join(timeout=timeout_s + 10)

    # --- producer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._tick()
            self._shutdown()
        except Exception:  # the thread dying silently would lose data: make it loud
            self._dead = True
            log.exception("producer thread crashed; messages stay queued/spooled")
            raise

    def _tick(self) -> None:
        if not self._queue:
            self._idle = True
            if not self._queue:  # re-check: a send() may have slipped in before _idle was visible
                self._wakeup.wait(0.005 if self._inflight else 0.05)  # poll acks at 200 Hz while any are due
            self._idle = False
            self._wakeup.clear()
        if self._inflight:
            self._reap()
        self._partition_counts.clear()
        items: list[_Item] = []
        pop = self._queue.popleft
        while self._queue and len(items) < 1000:
            items.append(pop())
        now = time.monotonic()
        if self._producer is None and now >= self._next_attempt:
            self._connect()
        self._check_health(now)
        if items:
            if self._state == "up" and self._spool.records == 0:
                self._send_all(items)
            else:
                self._to_spool(items)
        if self._state == "up" and self._spool.records and not self._inflight:
            self._replay_chunk()

    def _connect(self) -> None:
        try:
            self._producer = KafkaProducer(**kafka_producer_options(self.config))
        except KafkaError as e:
            self._attempts += 1
            backoff = min(self.config.probe_interval_s * 2 ** min(self._attempts, 4), 10.0)
            self._next_attempt = time.monotonic() + backoff
            if self._attempts in (1, 10) or self._attempts % 100 == 0:
                log.warning(
                    "Kafka not reachable at %s (%s): spooling; retry in %.1f s. Run `fleet up` or set "
                    "FLEET_KAFKA_BOOTSTRAP",
                    self.config.bootstrap,
                    e,
                    backoff,
                )
            return
        log.info("connected to Kafka at %s (after %d failed attempts)", self.config.bootstrap, self._attempts)
        self._attempts = 0
        self._set_state("up")
        if self._on_connect is not None:
            try:
                self._on_connect()
            except Exception as e:  # topic creation is best effort from a producer
                log.warning("on_connect hook failed: %s", e)

    def _check_health(self, now: float) -> None:
        if self._state == "up":
            if self._inflight and now - self._last_progress > self.config.stall_s:
                log.warning(
                    "no ack from Kafka at %s for %.1f s: spooling new messages",
                    self.config.bootstrap,
                    self.config.stall_s,
                )
                self._set_state("down")
        elif self._producer is not None and now >= self._next_attempt:
            self._next_attempt = now + self.config.probe_interval_s
            if not self._inflight and self._probe():
                log.info("Kafka at %s is back: replaying %d spooled messages", self.config.bootstrap, self.spooled)
                self._set_state("up")

    def _probe(self) -> bool:
        for server in self.config.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                    return True
            except OSError:
                continue
        return False

    def _set_state(self, state: str) -> None:
        self._state = state
        self._last_progress = time.monotonic()

    def _send_all(self, items: list[_Item]) -> None:
        for i, item in enumerate(items):
            if not self._send_one(item):
                self._to_spool(items[i:])
                return

    def _send_one(self, item: _Item) -> bool:
        """Hand one message to kafka-python; False when the broker looks gone (caller spools it)."""
        assert self._producer is not None
        key = item.key.encode() if item.key is not None else None
        try:
            future = self._producer.send(
                item.topic,
                value=item.value,
                key=key,
                headers=item.headers,
                partition=self._partition_for(item.topic, key) if key is not None else None,
            )
        except KafkaTimeoutError as e:  # metadata or buffer wait exceeded max_block_s: the broker is likely gone
            log.warning("send to %s timed out (%s): broker considered down, spooling", item.topic, e)
            self._set_state("down")
            return False
        except (KafkaError, ValueError, TypeError) as e:  # e.g. larger than max_request_bytes: never deliverable
            log.error("message for %s key=%s not deliverable: %s", item.topic, item.key, e)
            self._resolve([(item, None, f"{type(e).__name__}: {e}")])
            return True
        if not self._inflight:
            self._last_progress = time.monotonic()
        self._inflight.append((item, future))
        if item.replay:
            self.stats.replayed += 1
        else:
            self.stats.sent += 1
        return True

    def _partition_for(self, topic: str, key: bytes) -> int:
        """The default partitioner's choice (murmur2 of the key), cached: robot ids are few and kafka-python
        would otherwise hash and sort partitions for every message."""
        n = self._partition_counts.get(topic)
        if n is None:
            assert self._producer is not None
            n = self._partition_counts[topic] = len(self._producer.partitions_for(topic))
        cached = self._key_partitions.get((topic, key, n))
        if cached is None:
            if len(self._key_partitions) > 100_000:
                self._key_partitions.clear()
            cached = self._key_partitions[(topic, key, n)] = (murmur2(key) & 0x7FFFFFFF) % n
        return cached

    def _reap(self) -> None:
        """Resolve completed sends, oldest first (a slow partition holds back only the bookkeeping)."""
        done: list[tuple[_Item, Any, str | None]] = []
        respool: list[_Item] = []
        inflight = self._inflight
        while inflight and inflight[0][1].is_done:
            item, future = inflight.popleft()
            error = future.exception
            if error is None:
                done.append((item, future.value, None))
                continue
            name = type(error).__name__
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            if getattr(error, "retriable", False) and not self._closing:
                self._state = "down"  # kafka-python gave up retrying: the broker has been gone a while
                if item.replay and self._replay is not None:
                    self._replay.failed = True  # its spool copy stays; the chunk is resent
                elif not item.replay:
                    respool.append(item)
                continue
            log.error("message for %s key=%s not deliverable: %s", item.topic, item.key, error)
            done.append((item, None, f"{name}: {error}"))
        if done:
            self._last_progress = time.monotonic()
            self._resolve(done)
        if respool:
            self._to_spool(respool)

    def _resolve(self, done: list[tuple[_Item, Any, str | None]]) -> None:
        """Count finished messages (acked or dropped for good) and run their delivery callbacks."""
        counted = 0
        calls: list[tuple[DeliveryCallback, Delivery]] = []
        for item, metadata, error in done:
            if error is None:
                self.stats.acked += 1
            else:
                self.stats.dropped += 1
            callback = self._callbacks.pop(item.seq, None) if item.replay else item.on_delivery
            counted += not item.replay  # replayed messages are counted when their spool segment is removed
            if callback is not None:
                partition = getattr(metadata, "partition", None)
                offset = getattr(metadata, "offset", None)
                calls.append((callback, Delivery(item.topic, item.key, partition, offset, error)))
        self._release(counted)
        for callback, delivery in calls:
            try:
                callback(delivery)
            except Exception:
                log.exception("delivery callback failed for %s key=%s", delivery.topic, delivery.key)

    def _release(self, count: int) -> None:
        if count:
            with self._lock:
                self._outstanding.release(count)

    def _to_spool(self, items: list[_Item]) -> None:
        payloads = [
            msgpack.packb([it.topic, it.key, it.value, it.headers, it.seq, self._run_id], use_bin_type=True)
            for it in items
        ]
        written = self._spool.append_many(payloads)
        self.stats.spooled += written
        for it in items[:written]:
            if it.on_delivery is not None:
                self._callbacks[it.seq] = it.on_delivery
        if written < len(items):
            log.error(
                "spool full (%d B): dropped %d messages for %s", self.config.spool_max_bytes, len(items) - written,
                items[written].topic,
            )  # fmt: skip
            self._resolve([(it, None, "spool full") for it in items[written:]])

    def _replay_chunk(self) -> None:
        """Resend the next chunk of the oldest spool segment; delete the segment once all of it is acked."""
        if self._replay is None:
            token = self._spool.oldest()
            if token is None:
                return
            self._replay = _Replay(token, self._spool.read(token))
        replay = self._replay
        if replay.failed:  # a chunk failed: resend it from its start (duplicates are dropped by consumers)
            replay.cursor, replay.failed = replay.chunk_start, False
        if replay.cursor >= len(replay.entries):
            self._spool.remove(replay.token, len(replay.entries))
            self._release(len(replay.entries))
            self._replay = None
            return
        chunk = replay.entries[replay.cursor : replay.cursor + _REPLAY_CHUNK]
        replay.chunk_start, replay.cursor = replay.cursor, replay.cursor + len(chunk)
        for raw in chunk:
            if isinstance(raw, SpoolDamage):  # no message can be read from it: the dead-letter topic keeps the bytes
                with self._lock:
                    self._seq += 1
                    seq = -self._seq
                reason = [("fleet.reason", raw.reason.encode()), ("fleet.source.spool", str(replay.token).encode())]
                if not self._send_one(_Item(DEADLETTER, None, raw.data, reason, seq, replay=True)):
                    replay.failed = True
                    return
                continue
            topic, key, value, headers, seq, run_id = msgpack.unpackb(raw, raw=False)
            if run_id != self._run_id:  # spooled by an earlier process: no callback to tie back to
                with self._lock:
                    self._seq += 1
                    seq = -self._seq
            item = _Item(topic, key, value, [(k, v) for k, v in headers], seq, replay=True)
            if not self._send_one(item):
                replay.failed = True
                return

    def _shutdown(self) -> None:
        self._reap()
        unsent = [item for item, future in self._inflight if not item.replay and not future.is_done]
        self._inflight.clear()
        unsent += list(self._queue)
        self._queue.clear()
        if unsent:
            self._to_spool(unsent)  # may duplicate a message acked at the last moment: consumers dedupe
        self._spool.close()
        if self._producer is not None:
            self._producer.close(timeout=1)


@dataclass(slots=True)
class _Replay:
    """Progress through the spool segment being replayed."""

    token: Any  # spool segment (a Path, or a list for the memory spool)
    entries: list[bytes | SpoolDamage]
    cursor: int = 0  # next entry to send
    chunk_start: int = 0  # first entry of the chunk in flight
    failed: bool = False  # some entry of the chunk in flight failed
