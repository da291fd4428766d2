"""`fleet record` on the real broker: its /metrics endpoint counts exactly the segments it recorded, the
consumer lag drains to 0, and its JSON log lines name the robot, episode and version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet.stack.process import free_port
from fleet.transport import TRAJECTORIES, KafkaTransport, TransportConfig, publish
from tests.data.factories import make_segment
from tests.data.test_integration import start_group_at_end

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
EPISODES, PER_EPISODE = 3, 8
N = EPISODES * PER_EPISODE


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_recorder_metrics_count_every_recorded_segment(kafka_bootstrap: str, tmp_path: Path) -> None:
    group, robot = f"obs-{uuid.uuid4().hex[:8]}", f"obs-robot-{uuid.uuid4().hex[:6]}"
    start_group_at_end(kafka_bootstrap, group)
    transport = KafkaTransport(TransportConfig(bootstrap=kafka_bootstrap, client_id=robot))
    for n in range(N):
        episode, index = divmod(n, PER_EPISODE)
        publish(transport, make_segment(robot, f"ep-{episode}", index, segments_per_episode=PER_EPISODE))
    assert transport.flush(timeout_s=60)
    transport.close()

    port = free_port()
    env = {**os.environ, "FLEET_METRICS_PORT_RECORDER": str(port), "FLEET_LOG_FORMAT": "json"}
    log_path = tmp_path / "recorder.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleet", "record", "--group", group, "--no-db", "--store", str(tmp_path / "store")],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            url, labels = f"http://127.0.0.1:{port}/metrics", (("group", group),)
            lag_key = ("fleet_consumer_lag_records", (("group", group), ("topic", TRAJECTORIES)))
            deadline, samples = time.monotonic() + 120, {}
            while time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text()
                try:
                    samples = _scrape(url)
                except OSError:  # not listening yet
                    samples = {}
                if samples.get(("fleet_recorder_segments_recorded_total", labels)) == N and samples.get(lag_key) == 0:
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"recorder metrics never reached {N} recorded / lag 0: {samples}\n{log_path.read_text()}")
            time.sleep(1.5)  # a few more (empty) polls: nothing is counted twice
            samples = _scrape(url)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

    assert samples[("fleet_recorder_segments_consumed_total", labels)] == N
    assert samples[("fleet_recorder_segments_recorded_total", labels)] == N
    assert samples[("fleet_recorder_episodes_recorded_total", labels)] == EPISODES
    assert samples[lag_key] == 0
    assert not [k for k in samples if k[0] == "fleet_dead_letters_total" and ("group", group) in k[1]]
    assert samples[("process_resident_memory_bytes", ())] > 0

    # The recorder's logs are JSON lines; each recorded episode names its robot, episode and version.
    lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    recorded = [x for x in lines if x["msg"].startswith("recorded episode")]
    assert sorted(x["episode"] for x in recorded) == [f"ep-{e}" for e in range(EPISODES)]
    assert {(x["service"], x["robot"], x["version"]) for x in recorded} == {("recorder", robot, "1")}
    print(json.dumps(recorded[0]))  # docs/observability.md quotes a line like this one


def test_consumer_lag_counts_the_backlog_down_to_zero(kafka_bootstrap: str) -> None:
    """In-process: the lag a group consumer exports is the backlog, batch in hand included, until it is handled."""
    from fleet import observability
    from fleet.transport import KafkaGroupConsumer

    group, robot = f"obs-lag-{uuid.uuid4().hex[:8]}", f"obs-lag-{uuid.uuid4().hex[:6]}"
    start_group_at_end(kafka_bootstrap, group)
    transport = KafkaTransport(TransportConfig(bootstrap=kafka_bootstrap, client_id=robot))
    for index in range(10):  # one robot id = one partition
        publish(transport, make_segment(robot, "ep-0", index, segments_per_episode=10, size=8))
    assert transport.flush(timeout_s=60)
    transport.close()

    def exported() -> float | None:
        families = text_string_to_metric_families(observability.render_metrics().decode())
        lag = next(f for f in families if f.name == "fleet_consumer_lag_records")
        return next((s.value for s in lag.samples if s.labels["group"] == group), None)

    consumer = KafkaGroupConsumer(TransportConfig(bootstrap=kafka_bootstrap), group_id=group, topics=[TRAJECTORIES])
    try:
        seen, lags, expected, deadline = 0, [], [], time.monotonic() + 60
        while seen < 10 and time.monotonic() < deadline:
            records = consumer.poll(timeout_s=1.0, max_records=4)
            if records:
                expected.append(10 - seen)  # everything from this batch's first record to the log end
                seen += len(records)
                lags.append(exported())
        consumer.poll(timeout_s=1.0, max_records=4)  # the last batch is handled: nothing behind any more
        lags.append(exported())
    finally:
        consumer.close()
    assert seen == 10 and len(lags) >= 2
    assert lags == [*expected, 0]  # e.g. [10, 6, 2, 0] in batches of 4
