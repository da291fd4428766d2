"""Observability for every fleet service: Prometheus metrics and structured (JSON) logs.

Metrics live in this module's `REGISTRY` (plus the process, platform and GC collectors), named
`fleet_<area>_<what>`, counters ending in `_total`; docs/observability.md lists them all.
- Events that happen in one place are counted there: `DEAD_LETTERS.labels(group, reason).inc()`.
- State an object already keeps is read at scrape time, never copied: producer stats and spool size
  (`track_producer`), consumer lag (`track_consumer`), a robot runtime's counters (`watch_robots`,
  fed by `RobotRuntime.metrics()` in-process or by the Ray actors' status in `fleet robots run`).

Endpoints: the recorder, learner and robots CLIs call `serve_metrics(port, host)`, a
`prometheus_client` HTTP server on `FLEET_METRICS_PORT_{RECORDER,LEARNER,ROBOTS}` (9101-9103; 0 = none)
bound to `Settings.metrics_bind_host`. These are unauthenticated, like most exporters: locally they
listen on loopback, in production on the container network only (compose publishes no metrics port).
The dashboard serves `/metrics` on its own port (`render_metrics`). Auth decision: a Prometheus
scraper has no dashboard session, so the route does not use the user/role system; it is open unless
`FLEET_METRICS_TOKEN` is set, then it wants `Authorization: Bearer <token>`. Open is acceptable
because labels carry only robot ids, consumer groups, topics, model versions and reason categories:
never user names, tokens, instructions, free-text errors or episode data.

Logs: `configure_logging(service, level, json=...)` at each CLI entry point. Text for people at a
terminal; with FLEET_LOG_FORMAT=json (docker-compose) one JSON object per line (ts, level, service,
logger, msg, then any `extra=` fields). Pass context as `extra={"robot": ..., "episode": ..., "version": ...}`.
"""

from __future__ import annotations

import hmac
import json as jsonlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from weakref import WeakSet

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from fleet.naming import version_number

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()  # fleet's own registry: nothing here touches prometheus_client's global one
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# --- counted where the event happens ---------------------------------------------------------------
# reason: undecodable (not a fleet message), decoder_error (decoder bug), invalid (schema/consistency check
# failed), episode_rejected (recorder: segments of an episode do not line up).
DEAD_LETTERS = Counter(
    "fleet_dead_letters", "Records sent to fleet.deadletter, by consumer group and reason.", ["group", "reason"],
    registry=REGISTRY,
)  # fmt: skip
RECORDER_SEGMENTS_CONSUMED = Counter(
    "fleet_recorder_segments_consumed", "Trajectory segments handed to the recorder (redeliveries included).",
    ["group"], registry=REGISTRY,
)  # fmt: skip
RECORDER_SEGMENTS_RECORDED = Counter(
    "fleet_recorder_segments_recorded", "Segments durably staged (fsync'd) for the first time.", ["group"],
    registry=REGISTRY,
)  # fmt: skip
RECORDER_EPISODES = Counter(
    "fleet_recorder_episodes_recorded", "Episodes written to the episode store.", ["group"], registry=REGISTRY
)
LEARNER_INGESTED = Counter(
    "fleet_learner_messages_ingested", "Messages the learner took in (segments, corrections, rewards, reviews).",
    ["topic"], registry=REGISTRY,
)  # fmt: skip
LEARNER_UPDATES = Counter("fleet_learner_updates", "Learner gradient updates.", registry=REGISTRY)
LEARNER_UPDATE_RATE = Gauge(
    "fleet_learner_updates_per_second", "Updates per second of wall clock over the last logging window.",
    registry=REGISTRY,
)  # fmt: skip
LEARNER_VERSIONS = Counter(
    "fleet_learner_versions_published", "Model versions the learner published, by eval gate outcome.", ["gate"],
    registry=REGISTRY,
)  # fmt: skip
LEARNER_RESTARTS = Counter(
    "fleet_learner_restarts_from_production",
    "Times the learner dropped its weights for production's after versions in a row regressed on the gate.",
    registry=REGISTRY,
)  # fmt: skip
LEARNER_VERSION = Gauge(
    "fleet_learner_published_version", "Number of the latest version the learner published.", registry=REGISTRY
)

# --- read at scrape time from the objects that keep the state ----------------------------------------
RELOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds: download + verify + load + warm-up

RobotSource = Callable[[], Iterable[Mapping[str, Any]]]  # yields RobotRuntime.metrics()-shaped dicts


class _Producer(Protocol):
    config: Any  # TransportConfig (client_id)
    stats: Any  # ProducerStats

    @property
    def spooled(self) -> int: ...

    @property
    def spooled_bytes(self) -> int: ...


class _Consumer(Protocol):
    group_id: str | None  # None: a live reader with no group (not tracked)
    lag: dict[tuple[str, int], int]  # (topic, partition) -> records behind the log end


_producers: WeakSet[Any] = WeakSet()
_consumers: WeakSet[Any] = WeakSet()
_robot_sources: dict[int, RobotSource] = {}


def track_producer(producer: _Producer) -> None:
    """Export a SpoolingProducer's stats and spool size (held weakly: a dropped producer drops out)."""
    _producers.add(producer)


def track_consumer(consumer: _Consumer) -> None:
    """Export a group consumer's lag per topic (held weakly)."""
    _consumers.add(consumer)


def watch_robots(source: RobotSource) -> Callable[[], None]:
    """Export per-robot series from `source()` at every scrape; returns the function that stops it."""
    key = id(source)
    _robot_sources[key] = source

    def stop() -> None:
        _robot_sources.pop(key, None)

    return stop


class _StateCollector:
    def collect(self) -> Iterator[Metric]:
        yield from _transport_metrics()
        yield from _robot_metrics()


def _transport_metrics() -> Iterator[Metric]:
    messages = CounterMetricFamily(
        "fleet_producer_messages", "Producer messages by outcome (sent, acked, spooled, replayed, dropped).",
        labels=["client", "outcome"],
    )  # fmt: skip
    records = GaugeMetricFamily("fleet_spool_pending_records", "Messages waiting in the spool.", labels=["client"])
    nbytes = GaugeMetricFamily("fleet_spool_pending_bytes", "Bytes waiting in the producer spool.", labels=["client"])
    totals: dict[str, dict[str, float]] = {}
    for producer in list(_producers):  # several producers may share a client id: their series add up
        t = totals.setdefault(producer.config.client_id, {})
        stats = producer.stats
        for outcome in ("sent", "acked", "spooled", "replayed", "dropped"):
            t[outcome] = t.get(outcome, 0) + getattr(stats, outcome)
        t["records"] = t.get("records", 0) + producer.spooled
        t["bytes"] = t.get("bytes", 0) + producer.spooled_bytes
    for client, t in sorted(totals.items()):
        for outcome in ("sent", "acked", "spooled", "replayed", "dropped"):
            messages.add_metric([client, outcome], t[outcome])
        records.add_metric([client], t["records"])
        nbytes.add_metric([client], t["bytes"])
    lag = GaugeMetricFamily(
        "fleet_consumer_lag_records", "Records between the log end and the consumer group's next unhandled one.",
        labels=["group", "topic"],
    )  # fmt: skip
    per_topic: dict[tuple[str, str], int] = {}
    for consumer in list(_consumers):
        if consumer.group_id is None:
            continue
        for (topic, _partition), behind in dict(consumer.lag).items():
            per_topic[(consumer.group_id, topic)] = per_topic.get((consumer.group_id, topic), 0) + behind
    for (group, topic), behind in sorted(per_topic.items()):
        lag.add_metric([group, topic], behind)
    yield from (messages, records, nbytes, lag)


def _robot_metrics() -> Iterator[Metric]:
    label = ["robot"]
    ticks = CounterMetricFamily("fleet_robot_ticks", "Control ticks run.", labels=label)
    missed = CounterMetricFamily("fleet_robot_missed_ticks", "Control ticks that overran their deadline.", labels=label)
    segments = CounterMetricFamily("fleet_robot_segments_produced", "Trajectory segments published.", labels=label)
    episodes = CounterMetricFamily("fleet_robot_episodes", "Episodes started.", labels=label)
    refused = CounterMetricFamily("fleet_robot_reloads_refused", "Versions refused at verification.", labels=label)
    version = GaugeMetricFamily("fleet_robot_model_version", "Registry version the robot acts with.", labels=label)
    spooled = GaugeMetricFamily("fleet_robot_spool_pending_records", "Messages in the robot's spool.", labels=label)
    spool_bytes = GaugeMetricFamily("fleet_robot_spool_pending_bytes", "Bytes in the robot's spool.", labels=label)
    reload = HistogramMetricFamily(
        "fleet_robot_reload_seconds", "Hot reloads: download + verify + load + warm-up time.", labels=label
    )
    robots: dict[str, Mapping[str, Any]] = {}
    for source in list(_robot_sources.values()):
        try:
            for snapshot in source():
                robots[str(snapshot["robot_id"])] = snapshot
        except Exception as err:  # noqa: BLE001 - a broken source must not take the whole scrape down
            log.warning("robot metrics source failed: %s", err)
    for robot, s in sorted(robots.items()):
        ticks.add_metric([robot], s.get("ticks", 0))
        missed.add_metric([robot], s.get("missed_ticks", 0))
        segments.add_metric([robot], s.get("segments", 0))
        episodes.add_metric([robot], s.get("episodes", 0))
        refused.add_metric([robot], s.get("reloads_refused", 0))
        if (number := version_number(s.get("version"))) is not None:
            version.add_metric([robot], number)
        spooled.add_metric([robot], s.get("spooled", 0))
        if "spool_bytes" in s:
            spool_bytes.add_metric([robot], s["spool_bytes"])
        loads = list(s.get("reload_seconds") or ())
        buckets = [(str(b), sum(x <= b for x in loads)) for b in RELOAD_BUCKETS] + [("+Inf", len(loads))]
        reload.add_metric([robot], buckets, sum(loads))
    yield from (ticks, missed, segments, episodes, refused, version, spooled, spool_bytes, reload)


REGISTRY.register(_StateCollector())


class FleetViewCollector:
    """The dashboard's fleet view from heartbeats (the only metrics of real robots that serve none)."""

    def __init__(self, robots: Callable[[], Sequence[Mapping[str, Any]]], heartbeats: Callable[[], int]) -> None:
        self.robots = robots  # FleetState.snapshot: robot_id, state, model_version, ...
        self.heartbeats = heartbeats

    def collect(self) -> Iterator[Metric]:
        robots = self.robots()
        by_state = GaugeMetricFamily("fleet_dashboard_robots", "Robots by state, from heartbeats.", labels=["state"])
        counts: dict[str, int] = {}
        for r in robots:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        for state, n in sorted(counts.items()):
            by_state.add_metric([state], n)
        version = GaugeMetricFamily(
            "fleet_dashboard_robot_model_version", "Version in each robot's last heartbeat.", labels=["robot"]
        )
        for r in robots:
            if (number := version_number(r.get("model_version"))) is not None:
                version.add_metric([r["robot_id"]], number)
        yield by_state
        yield version
        yield CounterMetricFamily("fleet_dashboard_heartbeats", "Heartbeats received.", value=self.heartbeats())


def render_metrics(*extra: Any) -> bytes:
    """Prometheus text format of `REGISTRY` plus per-app collectors (the dashboard's `FleetViewCollector`)."""

    class _All:
        def collect(self) -> Iterator[Metric]:
            yield from REGISTRY.collect()
            for collector in extra:
                yield from collector.collect()

    return generate_latest(_All())  # type: ignore[arg-type]


def token_matches(header: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>` check for a metrics scraper, in constant time."""
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


@dataclass
class MetricsServer:
    """A running `/metrics` HTTP endpoint; `close()` stops it."""

    host: str
    port: int
    _server: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(port: int, host: str = "127.0.0.1", *, service: str = "fleet") -> MetricsServer | None:
    """Serve `REGISTRY` on http://host:port/metrics from a daemon thread; None when `port` is 0 or taken.

    A taken port is logged, not raised: a service that records or learns must not stop for its metrics.
    """
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as err:
        log.error(
            "metrics endpoint not started: %s:%d unavailable (%s); set FLEET_METRICS_PORT_%s (0 = none)",
            host, port, err, service.upper(),
        )  # fmt: skip
        return None
    metrics = MetricsServer(host, port, server)
    log.info("serving Prometheus metrics at %s", metrics.url)
    return metrics


# --- logs -----------------------------------------------------------------------------------------------

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def log_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record (robot, episode, version, ...), in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and not k.startswith("_")}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)  # numpy scalars as numbers, the rest as text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, logger, msg, then the record's extra fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in log_extras(record).items():
            out.setdefault(key, value)  # an extra never overwrites the fixed fields
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(out, default=_plain, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`: the extra fields stay visible to people too."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        message = record.getMessage()
        pairs = (f"{k}={v}" for k, v in log_extras(record).items())
        extras = " ".join(p for p in pairs if p not in message)  # not twice where the message already says it
        if not extras:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the key=value pairs
        return f"{head} {extras}{sep}{tail}"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (test runners swap it; a bound stream would go stale)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(service: str, level: int | str = logging.INFO, *, json: bool | None = None) -> None:
    """Root logging for a service's process (CLI entry points only); `json=None` reads FLEET_LOG_FORMAT."""
    if json is None:
        from fleet.settings import get_settings

        json = get_settings().log_format == "json"
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(service) if json else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # the client logs every connection at INFO
