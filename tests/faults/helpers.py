"""Fault injection on the real local stack: kill and restart services, run fleet services as child processes.

Every process a fault test starts runs in its own session and is ended by its pid (process group),
so a test leaves nothing behind even when it fails half-way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from fleet.registry import VersionInfo
from fleet.schemas import TrajectorySegment, decode
from fleet.settings import Settings
from fleet.stack import launcher
from fleet.stack.kafka import KafkaService
from fleet.stack.mlflow_server import MlflowService
from fleet.stack.process import ManagedProcess
from fleet.transport import TRAJECTORIES, KafkaTransport, TransportConfig, ensure_topics, publish
from learner.service import TOPICS as LEARNER_TOPICS
from tests.data.test_integration import wait_for
from tests.learner.fakes import correction, segments

Partition = tuple[str, int]

log = logging.getLogger(__name__)

__all__ = [
    "ChildService",
    "StreamReader",
    "group_stable",
    "kill_service",
    "restart_stack",
    "start_group_at_end",
    "topic_ends",
    "wait_for",
]


def kill_service(service: KafkaService | MlflowService) -> float:
    """SIGKILL a stack service's whole process group (no clean shutdown at all); returns time.monotonic()."""
    proc: ManagedProcess = service.process()
    pid = proc.pid()
    assert pid is not None, f"{service.name} is not running"
    os.killpg(pid, signal.SIGKILL)
    killed = time.monotonic()
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # started by this test session: reap it
    wait_for(lambda: not service.healthy(timeout_s=1.0), 30, f"{service.name} to be gone")
    proc.pid_path.unlink(missing_ok=True)
    return killed


def restart_stack(settings: Settings) -> float:
    """Start whatever stack service is down (`prepare()` + `start()`, as `fleet up` does) and wait until all are
    healthy; returns the time.

    Waits on health only: `launcher.up` also polls the pid file, and `ManagedProcess.pid()` can misread a child
    still inside exec (empty /proc/<pid>/cmdline) on a loaded machine, drop its pid file and report a healthy
    start as a crash.
    """
    services = launcher.services(settings)
    for service in services:
        if not service.healthy(timeout_s=2.0):
            service.prepare().start()
    wait_for(lambda: all(s.healthy(timeout_s=2.0) for s in services), 120, f"the stack (logs in {settings.log_dir})")
    return time.monotonic()


def topic_ends(bootstrap: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """End offset of every partition of `topics`."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))]
        return {(tp.topic, tp.partition): offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def start_group_at_end(bootstrap: str, group_id: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """Commit the current end of `topics` for `group_id` (earlier tests' data is not ours); returns those offsets."""
    ensure_topics(TransportConfig(bootstrap=bootstrap))
    ends = topic_ends(bootstrap, topics)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in ends.items()})
    finally:
        consumer.close(autocommit=False)
    return ends


def group_stable(bootstrap: str, group_id: str) -> bool:
    """True once `group_id` has members with partitions assigned (a consumer service is up and consuming)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        group = admin.describe_groups([group_id])[group_id]
        return group.get("group_state") == "Stable" and bool(group.get("members"))
    except KafkaError:  # no coordinator yet (a fresh broker's offsets topic is still being created)
        return False
    finally:
        admin.close()


class ChildService:
    """A fleet service (`python -m ...`) as a child process in its own session, logging to a file."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str], log_path: Path) -> None:
        self.argv = [sys.executable, "-m", *args]
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> ChildService:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def supervise(self, stop: threading.Event, *, delay_s: float = 1.0) -> threading.Thread:
        """Restart the service whenever it exits, until `stop` (compose's `restart: unless-stopped`);
        `self.restarts` counts the restarts."""

        def loop() -> None:
            while not stop.wait(0.2):
                if not self.alive() and not stop.wait(delay_s):
                    self.restarts += 1
                    self.start()

        thread = threading.Thread(target=loop, name="supervisor", daemon=True)
        thread.start()
        return thread

    def kill(self) -> None:
        """SIGKILL, no clean-up: mid-batch, mid-update, whatever it was doing."""
        self._signal(signal.SIGKILL, 10.0)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout_s`); returns the exit code."""
        self._signal(signal.SIGTERM, timeout_s)
        if self.alive():
            self._signal(signal.SIGKILL, 10.0)
        return self.proc.returncode if self.proc is not None else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _signal(self, sig: int, wait_s: float) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=wait_s)


def read_from(bootstrap: str, start: dict[tuple[str, int], int], key_prefix: str, *, timeout_s: float = 60.0) -> list:
    """Every record after `start` (as `topic_ends` returned it) up to the topics' current ends whose key starts with
    `key_prefix`, decoded (fleet.schemas.decode), duplicates included."""
    from fleet.schemas import decode

    ends = topic_ends(bootstrap, sorted({t for t, _ in start}))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    out: list = []
    try:
        parts = [TopicPartition(t, p) for t, p in start]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, start[(tp.topic, tp.partition)])
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[(tp.topic, tp.partition)] for tp in parts):
            assert time.monotonic() < deadline, "could not read the topics to their ends"
            for records in consumer.poll(timeout_ms=1000).values():
                out += [decode(r.value) for r in records if r.key is not None and r.key.decode().startswith(key_prefix)]
    finally:
        consumer.close()
    return out


class StreamReader(threading.Thread):
    """A consumer-group member on the learner's topics (as `LearnerService` polls them) keeping our segment ids."""

    def __init__(self, bootstrap: str, group_id: str, prefix: str) -> None:
        super().__init__(name="learner-reader", daemon=True)
        self.config = TransportConfig(bootstrap=bootstrap, client_id=f"{prefix}-reader")
        self.group_id, self.prefix = group_id, prefix.encode()
        self.ids: list[tuple[str, str, int]] = []  # every record read, duplicates included
        self.errors = 0
        self.stopping = threading.Event()

    def wait_for_all(self, produced: Sequence[tuple[str, str, int]], timeout_s: float) -> None:
        """Until every produced segment was read, then 2 s more so a late duplicate (if any) is counted too."""
        wait_for(lambda: len(set(self.ids)) >= len(produced), timeout_s, "the learner-side reader to catch up")
        time.sleep(2)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)

    def run(self) -> None:
        consumer = KafkaTransport(self.config).consumer(group_id=self.group_id, topics=LEARNER_TOPICS)
        try:
            while not self.stopping.is_set():
                try:
                    records = consumer.poll(timeout_s=0.5, max_records=500)
                    for r in records:
                        if r.topic == TRAJECTORIES and r.key is not None and r.key.startswith(self.prefix):
                            seg = decode(r.value, TrajectorySegment)
                            assert isinstance(seg, TrajectorySegment)
                            self.ids.append((seg.robot_id, seg.episode_id, seg.segment_index))
                    if records:
                        consumer.commit(records)
                except KafkaError as e:  # broker down: the learner retries the same way
                    self.errors += 1
                    log.info("reader: %s", e)
                    time.sleep(0.5)
        finally:
            consumer.close()


class Feeder(threading.Thread):
    """Streams one episode (two segments and a correction) every `interval_s`, round-robin over robots."""

    def __init__(self, settings: Settings, prefix: str, *, robots: int = 4, interval_s: float = 0.5) -> None:
        super().__init__(name="feeder", daemon=True)
        self.transport = KafkaTransport(TransportConfig.from_settings(settings, client_id=f"{prefix}-feeder"))
        self.robots = [f"{prefix}-r{i}" for i in range(robots)]
        self.interval_s = interval_s
        self.episodes = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            robot = self.robots[self.episodes % len(self.robots)]
            episode = f"{robot}-e{self.episodes}"
            for segment in segments(robot, episode, lengths=(5, 5), intervention=(2, 4), seed=self.episodes):
                publish(self.transport, segment)
            publish(self.transport, correction(robot, episode, f"c-{episode}", 2, 2))
            self.episodes += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        assert self.transport.flush(timeout_s=30)
        self.transport.close()


def tiles(versions: list[VersionInfo], start: dict[Partition, int], end: dict[Partition, int]) -> int:
    """Assert the versions' data windows cover [start, end) of every partition exactly once; returns the count."""
    covered = 0
    for (topic, partition), first in start.items():
        spans = sorted(
            tuple(v.data_offsets[topic][str(partition)])
            for v in versions
            if str(partition) in v.data_offsets.get(topic, {})
        )
        expected_next = first
        for lo, hi in spans:
            assert lo == expected_next, f"{topic}/{partition}: window {lo}..{hi} after {expected_next - 1}"
            expected_next = hi + 1
        assert expected_next == end[(topic, partition)], f"{topic}/{partition}: consumed up to {expected_next - 1}"
        covered += expected_next - first
    return covered


def published_up_to(run_dir: Path, start: dict[Partition, int], end: dict[Partition, int]) -> bool:
    """Whether the learner's newest checkpoint under `run_dir` is published and has read every partition to `end`."""
    from learner import checkpoints

    done = checkpoints.list_checkpoints(run_dir / "checkpoints")
    state = checkpoints.load_state(done[-1])[0] if done else None
    return (
        state is not None
        and state.published_version is not None
        and all(state.offsets.get(t, {}).get(str(p), start[(t, p)]) == o for (t, p), o in end.items())
    )
