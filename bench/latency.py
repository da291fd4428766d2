"""Latency of the loop: data → live model, and fleet convergence after promote and rollback.

Starts its own stack (temporary FLEET_HOME, free ports), registers a random-weight VLA as version 1,
and runs a real-time simulated fleet (10 Hz ticks) on Ray. Then:

* **convergence**: `rounds` times, publish a new version and promote it (+ `fleet.models` event),
  then roll back to the previous one; the time from the promote/rollback call to the last robot's
  swap (robots record the wall-clock time of each swap) gives `promote_converge_*` and
  `rollback_converge_*`.
* **data → live**: the learner (`fleet learner run --preset latency`: tiny model, a version every
  ~15 s) trains on the fleet's stream; the bench promotes every candidate as soon as it appears
  (an approving operator). For every correction a version was trained on, latency = the time the
  last robot swapped to that version − the correction's Kafka timestamp.
* **missed ticks** within [-0.5 s, +1 s] of each robot's swaps (`missed_ticks`; for each, how late
  it started, how long it ran, the ms it waited for its next chunk and lost to the garbage collector, and
  which of the reloader's steps ran beside it, in `missed_ticks_detail`) and over the whole run
  (`missed_ticks_total`), with the real-time 10 Hz control loop.

Writes bench/results/latency.json. Command that produced the committed result:

    .venv/bin/python -m bench.latency --robots 4 --rounds 10 --learner-minutes 5

That run (session 9) has the robots at niceness -5 (`RobotConfig.niceness`; Ray starts actors at 15) and the
MLflow server without its job runner: 0 missed ticks in 12,799 (0 in 160 swaps); an identical run before the
MLflow change also had 0 in 12,823. Earlier runs at Ray's niceness 15: 0-3 missed in swaps, ~5 per run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _random_model(seed: int):  # noqa: ANN202
    import torch

    from fleet.policy.config import debug_model_config
    from fleet.policy.model import VLAModel

    torch.manual_seed(seed)
    return VLAModel(debug_model_config())


def _wait_swapped(actors: list, version: str, timeout_s: float, after: float) -> float | None:
    """Wall-clock time the last robot swapped to `version` after `after` (None: not all of them within `timeout_s`)."""
    from actors.sim_fleet import wait_swapped

    times = wait_swapped(actors, version, after=after, timeout_s=timeout_s)
    return None if None in times else max(t for t in times if t is not None)


def _correction_timestamps(bootstrap: str) -> dict[tuple[int, int], float]:
    """(partition, offset) -> Kafka timestamp (s) of every record on fleet.corrections."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
    parts = [TopicPartition("fleet.corrections", p) for p in consumer.partitions_for_topic("fleet.corrections") or []]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    end = consumer.end_offsets(parts)  # read up to here: robots may still be producing
    out: dict[tuple[int, int], float] = {}
    for record in consumer:
        if record.offset < end[TopicPartition(record.topic, record.partition)]:
            out[(record.partition, record.offset)] = record.timestamp / 1000.0
        if all(consumer.position(tp) >= end[tp] for tp in parts):
            break
    consumer.close()
    return out


def main() -> None:  # noqa: PLR0915 - one bench, top to bottom
    from actors.sim_fleet import FleetConfig, start_fleet

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10, help="promote + rollback rounds")
    parser.add_argument("--learner-minutes", type=float, default=5.0)
    parser.add_argument(
        "--reload-stagger", type=float, default=FleetConfig.reload_stagger_s,
        help="seconds over which the robots' reloads after an event are spread (0 = all at once)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    from fleet.stack.process import isolated_env

    home = Path(tempfile.mkdtemp(prefix="fleet-latency-"))
    os.environ.update(isolated_env(home))
    import ray

    from fleet.registry import Registry, announce, publish_model
    from fleet.settings import Settings
    from fleet.stack import launcher

    settings = Settings()
    launcher.up(settings, log=lambda _m: None)
    learner = None
    try:
        registry = Registry(settings)
        v1 = publish_model(registry, _random_model(0), parent_version=None, actor="bench")
        registry.promote(v1.version, actor="bench", role="admin", reason="bench start")
        fleet = FleetConfig(
            n=args.robots,
            tasks=("pick", "push"),
            embodiments=("panda", "kuka"),
            duration_s=3600,
            realtime=True,
            reload_stagger_s=args.reload_stagger,
        )
        actors = start_fleet(settings, fleet)
        runs = [a.run.remote(None, 3600) for a in actors]

        promote_s, rollback_s = [], []
        previous = v1
        # Warm-up (not counted): robots' model-event listeners join their consumer groups while the
        # first robots still load; a robot that misses the push converges by its alias poll instead.
        warm = publish_model(registry, _random_model(10_000), parent_version=v1.version, actor="bench")
        t0 = time.time()
        registry.promote(warm.version, actor="bench", role="admin", reason="warm-up")
        announce(settings, warm, event="promoted", alias="production", actor="bench", reason="warm-up")
        warm_s = (_wait_swapped(actors, warm.version, 60, t0) or float("nan")) - t0
        registry.rollback(v1.version, actor="bench", role="admin", reason="warm-up")
        announce(settings, v1, event="rolled_back", alias="production", actor="bench", reason="warm-up")
        _wait_swapped(actors, v1.version, 60, t0)
        registry.unpin(actor="bench", role="admin", reason="warm-up")
        for i in range(args.rounds):
            new = publish_model(registry, _random_model(i + 1), parent_version=previous.version, actor="bench")
            t0 = time.time()
            registry.promote(new.version, actor="bench", role="admin", reason="bench promote")
            announce(settings, new, event="promoted", alias="production", actor="bench", reason="bench")
            at = _wait_swapped(actors, new.version, 60, t0)
            promote_s.append((at - t0) if at else float("nan"))
            t0 = time.time()
            back = registry.rollback(previous.version, actor="bench", role="admin", reason="bench rollback")
            announce(settings, back, event="rolled_back", alias="production", actor="bench", reason="bench")
            at = _wait_swapped(actors, previous.version, 60, t0)
            rollback_s.append((at - t0) if at else float("nan"))
            registry.unpin(actor="bench", role="admin", reason="bench")
            print(f"round {i + 1}: promote {promote_s[-1]:.2f} s, rollback {rollback_s[-1]:.2f} s", flush=True)

        learner = subprocess.Popen(
            [sys.executable, "-m", "fleet", "learner", "run", "--preset", "latency", "--log-level", "WARNING"],
            stdout=open(home / "learner.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )  # fmt: skip
        live: dict[str, float] = {}
        seen: set[str] = set()
        deadline = time.monotonic() + args.learner_minutes * 60
        while time.monotonic() < deadline:
            candidate = registry.version_for_alias("candidate")
            if candidate is not None and candidate.version not in seen and candidate.tags.get("learner_preset"):
                seen.add(candidate.version)
                t0 = time.time()
                registry.promote(candidate.version, actor="bench", role="admin", reason="approve candidate")
                announce(settings, candidate, event="promoted", alias="production", actor="bench", reason="approve")
                at = _wait_swapped(actors, candidate.version, 60, t0)
                if at is not None:
                    live[candidate.version] = at
                    print(f"learner v{candidate.version} live on every robot", flush=True)
            time.sleep(0.5)

        stamps = _correction_timestamps(settings.bootstrap_servers)
        data_to_live = []
        for version, at in live.items():
            window = registry.get_version(version).data_offsets.get("fleet.corrections", {})
            for partition, (first, last) in window.items():
                for offset in range(int(first), int(last) + 1):
                    ts = stamps.get((int(partition), offset))
                    if ts is not None:
                        data_to_live.append(at - ts)

        statuses = ray.get([a.status.remote() for a in actors])
        for a in actors:
            a.stop.remote()
        ray.get(runs, timeout=120)
        ray.get([a.close.remote() for a in actors], timeout=120)
        missed = sum(s["missed_ticks"] for s in statuses)
        # Missed ticks of a robot within [-0.5 s, +1 s] of one of its own swaps: what a swap costs. Each says
        # how late it started, how long it ran, how much of that waited for its chunk and went to the collector.
        in_swaps: list[dict] = []
        elsewhere: list[dict] = []  # the rest of the run's misses, said the same way (the machine's own noise)
        for s in statuses:
            for miss in s["missed_log"]:
                near = any(-0.5 <= miss["at"] - swapped <= 1.0 for _, swapped in s["swaps"])
                (in_swaps if near else elsewhere).append({k: v for k, v in miss.items() if k != "at"})
        missed_in_swaps = len(in_swaps)
        swaps = sum(len(s["swaps"]) for s in statuses)
        ticks = sum(s["ticks"] for s in statuses)
    finally:
        if learner is not None:
            learner.terminate()
            learner.wait(timeout=60)
        ray.shutdown()
        launcher.down(settings, log=lambda _m: None)

    def pct(values: list[float], q: float) -> float | None:
        finite = [v for v in values if np.isfinite(v)]
        return round(float(np.percentile(finite, q)), 3) if finite else None

    result = {
        "data_to_live_p50_s": pct(data_to_live, 50),
        "data_to_live_p99_s": pct(data_to_live, 99),
        "promote_converge_p50_s": pct(promote_s, 50),
        "promote_converge_p99_s": pct(promote_s, 99),
        "rollback_converge_p50_s": pct(rollback_s, 50),
        "rollback_converge_p99_s": pct(rollback_s, 99),
        "missed_ticks": missed_in_swaps,  # during swaps (the target: 0)
        "missed_ticks_detail": in_swaps,  # per missed tick in a swap: why (RobotRuntime.missed_log)
        "swaps": swaps,
        "missed_ticks_elsewhere_detail": elsewhere,
        "missed_ticks_total": missed,  # whole run, on a 2-core machine shared with the learner and the stack
        "ticks": ticks,
        "warmup_promote_converge_s": round(warm_s, 3),
        "robots": args.robots,
        "robot_niceness": sorted({s["niceness"] for s in statuses}),  # the robots' process priority (RobotConfig)
        "rounds": args.rounds,
        "reload_stagger_s": args.reload_stagger,
        "learner_versions_live": len(live),
        "corrections_measured": len(data_to_live),
        "promote_converge_s": [round(v, 3) for v in promote_s],
        "rollback_converge_s": [round(v, 3) for v in rollback_s],
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
