"""Dashboard benchmark: the fleet status endpoint while 64 robots send heartbeats at 2 Hz.

Run against a broker started by `fleet up`, or let it start a throw-away stack::

    .venv/bin/python -m bench.dashboard                 # Kafka from FLEET_* settings
    .venv/bin/python -m bench.dashboard --start-stack   # temporary FLEET_HOME + a Kafka broker

The dashboard runs in-process under uvicorn with its real heartbeat consumer; simulated robots
publish `Heartbeat`s through fleet's Kafka transport (one producer thread for all robots). After
a warm-up, a client polls `GET /api/v1/fleet` back to back (viewer token) for `--seconds`; the
result records the heartbeats the dashboard consumed per second and the endpoint's latency
percentiles. Results go to bench/results/dashboard.json (printed too).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from pydantic import SecretStr

from dashboards import crud
from dashboards.app import create_app
from fleet.db import make_engine, session_factory
from fleet.db.migrate import upgrade
from fleet.schemas import Heartbeat, LoopStats
from fleet.settings import Settings
from fleet.stack.process import free_port
from fleet.transport import KafkaTransport, TransportConfig, publish

RESULTS = Path(__file__).parent / "results" / "dashboard.json"


def robots_loop(config: TransportConfig, *, robots: int, hz: float, stop: threading.Event) -> None:
    transport = KafkaTransport(config)
    loop = LoopStats(control_hz=10, ticks=5, missed_ticks=0, tick_ms_p50=2, tick_ms_p99=4, tick_ms_max=5)
    period = 1.0 / hz
    next_round = time.monotonic()
    while not stop.is_set():
        for i in range(robots):
            publish(
                transport,
                Heartbeat(
                    robot_id=f"bench-{i:03d}",
                    embodiment="panda",
                    state="running",
                    model_version=str(1 + i % 2),
                    task_id="pick",
                    sent_at=time.time(),
                    loop=loop,
                ),
            )
        next_round += period
        stop.wait(max(0.0, next_round - time.monotonic()))
    transport.close()


def run(settings: Settings, *, robots: int, hz: float, seconds: float, warmup_s: float) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix="fleet-bench-dash-"))
    db_url = f"sqlite:///{home / 'fleet.db'}"
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_factory(engine)() as session:
        _, token = crud.create_token(session, name="bench", scopes=["role:viewer"])
        session.commit()
    engine.dispose()
    dash_settings = settings.model_copy(
        update={"home": home, "database_url": db_url, "secret_key": SecretStr("bench-secret-key-0123456789")}
    )
    app = create_app(dash_settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    stop = threading.Event()
    sender = threading.Thread(
        target=robots_loop,
        args=(TransportConfig.from_settings(settings, client_id="bench-robots"),),
        kwargs={"robots": robots, "hz": hz, "stop": stop},
        daemon=True,
    )
    sender.start()
    fleet = app.state.services.fleet
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
    try:
        deadline = time.monotonic() + warmup_s + 30
        while len(fleet.robot_ids()) < robots and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(warmup_s)
        seen_before, started = fleet.heartbeats, time.monotonic()
        latencies: list[float] = []
        online = 0
        while time.monotonic() - started < seconds:
            t0 = time.perf_counter()
            r = client.get("/api/v1/fleet")
            latencies.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            online = sum(1 for x in r.json()["robots"] if x["state"] != "offline")
        elapsed = time.monotonic() - started
        received = fleet.heartbeats - seen_before
    finally:
        stop.set()
        sender.join(10)
        client.close()
        server.should_exit = True
    lat = np.array(latencies)
    return {
        "robots": robots,
        "robots_online_at_end": online,
        "heartbeat_hz_per_robot": hz,
        "heartbeats_per_s": round(received / elapsed, 1),
        "heartbeats_per_s_expected": robots * hz,
        "api_requests": len(lat),
        "api_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "api_p99_ms": round(float(np.percentile(lat, 99)), 2),
        "api_max_ms": round(float(lat.max()), 2),
        "seconds": round(elapsed, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "note": "dashboard, robots' producer, Kafka broker and the polling client share this machine",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--robots", type=int, default=64, help="simulated robots sending heartbeats")
    parser.add_argument("--hz", type=float, default=2.0, help="heartbeats per second per robot")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after every robot is seen, before timing")
    parser.add_argument("--start-stack", action="store_true", help="start a temporary local stack (Kafka) first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    kafka = None
    if args.start_stack:  # Kafka only: the benchmark needs no MLflow
        from fleet.stack.kafka import KafkaService

        os.environ["FLEET_HOME"] = tempfile.mkdtemp(prefix="fleet-bench-stack-")
        os.environ["FLEET_KAFKA_PORT"], os.environ["FLEET_KAFKA_CONTROLLER_PORT"] = str(free_port()), str(free_port())
        settings = Settings()
        kafka = KafkaService(settings)
        kafka.prepare().start()
        deadline = time.monotonic() + 120
        while not kafka.healthy(timeout_s=2.0):
            if time.monotonic() > deadline:
                kafka.process().stop()
                raise SystemExit(f"Kafka did not become healthy in 120 s; see {settings.log_dir}")
            time.sleep(0.5)
    else:
        settings = Settings()
    try:
        result = run(settings, robots=args.robots, hz=args.hz, seconds=args.seconds, warmup_s=args.warmup)
    finally:
        if kafka is not None:
            kafka.process().stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
