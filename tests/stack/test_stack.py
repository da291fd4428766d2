"""Integration tests of the local stack: real Kafka, real MLflow server, real database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from fleet.settings import Settings
from fleet.stack import launcher
from fleet.stack.errors import StackError
from fleet.stack.process import _group_alive

pytestmark = pytest.mark.integration


def _fleet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


@pytest.mark.timeout(120)
def test_message_round_trips_through_the_broker(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    payloads = [f"message {i}".encode() for i in range(20)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    for payload in payloads:
        producer.send(topic, key=b"robot-1", value=payload)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=20_000,
    )
    received = []
    for record in consumer:
        received.append(record.value)
        if len(received) == len(payloads):
            break
    consumer.close()
    assert received == payloads  # same key -> same partition -> same order


@pytest.mark.timeout(120)
def test_mlflow_run_and_model_version_through_the_http_api(mlflow_uri: str) -> None:
    api = httpx.Client(base_url=f"{mlflow_uri}/api/2.0/mlflow", timeout=30)
    experiment = api.post("/experiments/create", json={"name": f"test-{uuid.uuid4().hex[:8]}"})
    experiment.raise_for_status()
    experiment_id = experiment.json()["experiment_id"]
    run = api.post("/runs/create", json={"experiment_id": experiment_id, "start_time": int(time.time() * 1000)})
    run.raise_for_status()
    run_id = run.json()["run"]["info"]["run_id"]
    api.post(
        "/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 0}
    ).raise_for_status()

    name = f"vla-{uuid.uuid4().hex[:8]}"
    api.post("/registered-models/create", json={"name": name}).raise_for_status()
    created = api.post(
        "/model-versions/create",
        json={
            "name": name,
            "source": f"runs:/{run_id}/model",
            "run_id": run_id,
            "tags": [{"key": "sha256", "value": "ab"}],
        },
    )
    created.raise_for_status()
    version = created.json()["model_version"]["version"]
    api.post(
        "/registered-models/alias", json={"name": name, "alias": "production", "version": version}
    ).raise_for_status()

    got_run = api.get("/runs/get", params={"run_id": run_id}).json()["run"]
    assert got_run["data"]["metrics"][0]["key"] == "loss"
    by_alias = api.get("/registered-models/alias", params={"name": name, "alias": "production"}).json()
    assert by_alias["model_version"]["version"] == version
    assert {"key": "sha256", "value": "ab"} in by_alias["model_version"]["tags"]


@pytest.mark.timeout(180)
def test_up_is_idempotent_and_status_reports_each_service(stack: Settings) -> None:
    pids_before = {s.name: s.process().pid() for s in launcher.services(stack)}
    rows = launcher.up(stack, log=lambda _m: None)
    assert all(row.up for row in rows), rows
    assert {s.name: s.process().pid() for s in launcher.services(stack)} == pids_before  # nothing restarted
    assert [row.name for row in rows] == ["kafka", "mlflow", "database"]

    result = _fleet("status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(result.stdout.strip().splitlines()) == 3


def test_port_in_use_gives_a_clear_error(stack: Settings, tmp_path) -> None:  # noqa: ANN001
    # A second stack pointed at the running broker's port must refuse, not crash.
    other = Settings(home=tmp_path / "other", kafka_port=stack.kafka_port, mlflow_port=stack.mlflow_port)
    with pytest.raises(StackError, match=f"port {stack.kafka_port} .* in use"):
        launcher.up(other, log=lambda _m: None)


@pytest.mark.timeout(240)
def test_down_leaves_no_process_and_status_fails(stack: Settings) -> None:
    pids = [s.process().pid() for s in launcher.services(stack)]
    assert all(pids)
    try:
        result = _fleet("down")
        assert result.returncode == 0, result.stderr
        assert not any(_group_alive(pid) for pid in pids if pid)
        status = _fleet("status")
        assert status.returncode == 1
        assert "DOWN" in status.stdout
    finally:
        launcher.up(stack, timeout_s=120, log=lambda _m: None)  # later tests need the stack
    assert all(row.up for row in launcher.status(stack))


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """`StorageTool format -t -abc...` reads a dash-led id as an option: such ids are drawn again."""
    from fleet.stack import kafka

    dash_led = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # base64url "-AAA..."
    draws = iter([dash_led, uuid.UUID(int=1)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))
    assert kafka._cluster_id() == "AAAAAAAAAAAAAAAAAAAAAQ"


def test_throw_away_stacks_take_ports_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker a fault test kills and restarts must find its port free: ports a client connection may hold as its
    local port (the kernel's ephemeral range, 32768 on) are never handed out, and a block with a listener is skipped."""
    import socket

    from fleet.stack import process

    env = process.isolated_env("/tmp/unused-home")
    ports = [int(env[k]) for k in ("FLEET_KAFKA_PORT", "FLEET_KAFKA_CONTROLLER_PORT", "FLEET_MLFLOW_PORT",
                                   "FLEET_DASHBOARD_PORT")]  # fmt: skip
    assert len(set(ports)) == 4 and all(21000 <= port < 32768 for port in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", ports[1]))
        listener.listen()
        monkeypatch.setattr(process.random, "randrange", lambda n: (ports[0] - 21000) // 5)
        base = process.port_block(4)
    assert base != ports[0] and not {base, base + 1, base + 2, base + 3} & {ports[1]}


def _process_group(pgid: int) -> list[str]:
    """Command lines of the processes in one process group (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()  # noqa: SIM115, PTH123
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()  # noqa: SIM115, PTH123
        except OSError:  # the process ended meanwhile
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:  # fields after the command: state, ppid, pgrp
            out.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_local_mlflow_server_runs_no_job_workers(stack: Settings) -> None:
    # MLflow 3 starts a job runner and 7 polling huey workers unless told not to: CPU the robots need.
    mlflow = next(s for s in launcher.services(stack) if s.name == "mlflow")
    pid = mlflow.process().pid()
    assert pid
    group = _process_group(pid)
    assert any("mlflow" in cmd and "server" in cmd for cmd in group), group  # the server is in its own group
    assert not [cmd for cmd in group if "huey" in cmd or "_job_runner" in cmd], group
