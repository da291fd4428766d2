"""Messages published only after the transaction that decided them commits (the transactional outbox).

A review changes the `corrections` row and tells the learner on fleet.reviews. Publishing before the commit lets the
learner act on a verdict the database then rolls back; publishing after it loses the verdict if the process dies in
between. So the message is written as an `outbox` row in the same transaction (`Outbox.add`), and a relay sends
committed rows oldest first and deletes each once Kafka has acknowledged it (acks=all). A crash before the ack
leaves the row, and the relay sends it again on start-up: the learner may see a verdict twice, never a verdict the
database does not hold. Applying the same verdict twice changes nothing, and the rows of one correction go out in
the order they were written, on one key (so one partition).

    Outbox.add(session, review_message)   # before session.commit()
    services.outbox.relay_soon()          # after it (the relay thread also retries every `interval_s`)
"""

from __future__ import annotations

import logging
import threading
from functools import partial

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from fleet.db import OutboxMessage
from fleet.schemas import Message, encode
from fleet.transport import TOPIC_FOR_KIND, Delivery, Transport

log = logging.getLogger(__name__)


class Outbox:
    """Relays committed `outbox` rows to Kafka (one per dashboard process; see the module docstring)."""

    def __init__(
        self, sessions: sessionmaker[Session], transport: Transport | None, *, interval_s: float = 5.0, batch: int = 500
    ) -> None:
        if interval_s <= 0 or batch < 1:
            raise ValueError("Outbox needs interval_s > 0 and batch >= 1")
        self.sessions, self.transport, self.interval_s, self.batch = sessions, transport, interval_s, batch
        self._relaying = threading.Lock()  # one relay pass at a time (request threads and the relay thread)
        self._state = threading.Lock()  # guards the two below (delivery callbacks run on the producer's thread)
        self._inflight: set[int] = set()  # rows sent and not yet acknowledged or failed
        self._acked: list[int] = []  # rows Kafka acknowledged, to delete
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def add(session: Session, message: Message) -> None:
        """Publish `message` once `session` commits (and never if it rolls back)."""
        session.add(OutboxMessage(topic=TOPIC_FOR_KIND[message.KIND], key=message.key, payload=encode(message)))

    def pending(self) -> int:
        """Rows not yet acknowledged by Kafka."""
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)

    def relay(self) -> int:
        """Send every committed row not already in flight, oldest first; delete the acknowledged ones. Returns how
        many rows this pass sent."""
        if self.transport is None:
            return 0
        with self._relaying:
            self._delete_acked()
            with self._state:
                skip = set(self._inflight)
            with self.sessions() as session:
                query = select(OutboxMessage.id, OutboxMessage.topic, OutboxMessage.key, OutboxMessage.payload)
                rows = session.execute(query.order_by(OutboxMessage.id).limit(self.batch)).all()
            sent = 0
            for row_id, topic, key, payload in rows:
                if row_id in skip:
                    continue
                with self._state:
                    self._inflight.add(row_id)
                queued = False
                try:
                    queued = self.transport.send(topic, payload, key=key, on_delivery=partial(self._delivered, row_id))
                finally:
                    if not queued:  # refused or raised: not in flight after all, the next pass sends it again
                        with self._state:
                            self._inflight.discard(row_id)
                if not queued:
                    break  # the producer's queue is full: the rest waits for the next pass, in order
                sent += 1
            self._delete_acked()
            return sent

    def relay_soon(self) -> None:
        """Relay right after a commit, on the caller's thread; a failure is logged, not raised: the request that
        committed has done its part (its row is durable), and the relay thread sends it on its next pass."""
        try:
            self.relay()
        except Exception:  # noqa: BLE001 - a database or transport hiccup must not turn a committed review into a 500
            log.exception("outbox relay after a commit failed; the relay thread retries in %.0f s", self.interval_s)

    def start(self) -> None:
        """Relay now (rows left by a previous process) and then every `interval_s` or when a delivery settles."""
        if self.transport is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="dashboard-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.relay()
            except Exception:  # a database or transport hiccup: the rows stay and the next pass retries
                log.exception("outbox relay failed; retrying in %.0f s", self.interval_s)
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def _delivered(self, row_id: int, delivery: Delivery) -> None:
        with self._state:
            if delivery.error is None:
                self._acked.append(row_id)
            else:
                log.warning("outbox: %s message %d not delivered (%s); sending it again", delivery.topic, row_id,
                            delivery.error)  # fmt: skip
                self._inflight.discard(row_id)
        self._wake.set()

    def _delete_acked(self) -> None:
        with self._state:
            done, self._acked = self._acked, []
        if not done:
            return
        with self.sessions() as session:
            session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(done)))
            session.commit()
        with self._state:
            self._inflight.difference_update(done)
