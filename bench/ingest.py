"""Ingest benchmark: fleet's producer vs raw kafka-python, and produce → recorded latency.

Run against a broker started by `fleet up` (or any bootstrap)::

    .venv/bin/python -m bench.ingest                       # bootstrap from FLEET_* settings
    .venv/bin/python -m bench.ingest --bootstrap 127.0.0.1:29092   # the run in bench/results/ingest.json
    .venv/bin/python -m bench.ingest --sizes               # encoded size of a 1-second 64×64 segment

Throughput: the same pre-serialized 1-second segment (10 steps, one 64×64 camera, ~3 KB) is sent
`--segments` times, keyed over 8 robots, by (a) a raw `KafkaProducer` with the same options fleet
uses (acks=all, idempotence, lz4, linger, batch size; kafka-python's default key partitioner, one
no-op callback per message) and (b) fleet's `KafkaTransport` (hand-off queue, producer thread,
delivery tracking, spool enabled; it caches the default partitioner's choice per robot key and reaps
futures by polling, which is why it can need less CPU per segment than the raw loop; both are
reported as `*_cpu_us_per_segment`, all threads of this process). Each side runs `--repeats` times,
alternating, timed from the first send to the end of `flush()`; the median run of each side is
reported (`ratio_vs_raw` = median/median; `ratio_pairwise_median` = median of the per-pair ratios,
steadier on a shared machine).
Latency: an in-process recorder (consumer group, staging with fsync, SQLite index) consumes while
8 robots publish at `--rate` segments/s in total; latency = recorder staged the segment − robot
created it. Results go to bench/results/ingest.json (printed too).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from fleet.schemas import TrajectorySegment, encode

RESULTS = Path(__file__).parent / "results" / "ingest.json"
ROBOTS = 8


def frames_64(steps: int = 10) -> tuple[np.ndarray, str]:
    """Frames rendered by PyBullet (Panda over a plane) when available, else a flat-shaded synthetic scene."""
    try:
        import pybullet as p
        import pybullet_data

        cid = p.connect(p.DIRECT)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=cid)
        p.loadURDF("plane.urdf", physicsClientId=cid)
        arm = p.loadURDF("franka_panda/panda.urdf", useFixedBase=True, physicsClientId=cid)
        p.loadURDF("cube_small.urdf", [0.5, 0.1, 0.02], physicsClientId=cid)
        view = p.computeViewMatrix([1.0, 0, 0.6], [0.4, 0, 0.1], [0, 0, 1])
        proj = p.computeProjectionMatrixFOV(60, 1, 0.1, 3)
        out = []
        for i in range(steps):
            for j in range(7):
                p.resetJointState(arm, j, 0.03 * i * (1 if j % 2 else -1), physicsClientId=cid)
            rgb = p.getCameraImage(64, 64, view, proj, renderer=p.ER_TINY_RENDERER, physicsClientId=cid)[2]
            out.append(np.asarray(rgb, np.uint8).reshape(64, 64, 4)[..., :3])
        p.disconnect(cid)
        return np.stack(out), "pybullet tiny renderer, Panda over a plane"
    except ImportError:
        yy, xx = np.mgrid[0:64, 0:64]
        base = np.stack([90 + yy // 2, 100 + yy // 3, 110 + xx // 4], -1).astype(np.uint8)
        out = np.repeat(base[None], steps, 0)
        for i in range(steps):
            out[i, 30 + i : 42 + i, 20 + i : 32 + i] = (200, 40, 40)
        return out, "synthetic flat-shaded scene"


def segment(robot_id: str, episode_id: str, index: int, frames: np.ndarray, *, done: bool) -> TrajectorySegment:
    t = frames.shape[0]
    rng = np.random.default_rng(index)
    now = time.time()
    return TrajectorySegment(
        robot_id=robot_id,
        embodiment="panda",
        task_id="pick-cube",
        instruction="pick up the red cube",
        episode_id=episode_id,
        segment_index=index,
        step_start=index * t,
        model_version="1",
        created_at=now,
        timestamps=now + np.arange(t) / 10,
        frames={"front": frames},
        proprio=rng.normal(size=(t, 10)),
        actions=rng.normal(size=(t, 4)),
        intervention=np.zeros(t, bool),
        rewards=np.zeros(t),
        done=done,
        success=done,
    )


def sizes() -> dict[str, int]:
    frames, source = frames_64()
    seg = segment("robot-0", "ep-0", 0, frames, done=False)
    out = {f"segment_bytes_{codec}": len(encode(seg, frame_codec=codec)) for codec in ("zstd", "png", "raw")}  # type: ignore[arg-type]
    out["segment_bytes_no_frames"] = len(encode(seg.model_copy(update={"frames": {}})))
    rand = np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)
    out["segment_bytes_random_frames"] = len(encode(seg.model_copy(update={"frames": {"front": rand}})))
    print(f"1-second 64x64 segment ({source}): " + ", ".join(f"{k}={v}" for k, v in out.items()))
    return out


def throughput(bootstrap: str, payload: bytes, n: int, repeats: int, spool: Path) -> dict[str, list[float]]:
    """Segments/s (wall) and CPU µs per segment (this process, all threads) of alternating raw/fleet runs."""
    from kafka import KafkaProducer

    from fleet.transport import TRAJECTORIES, KafkaTransport, TransportConfig, kafka_producer_options

    config = TransportConfig(bootstrap=bootstrap, client_id="bench", spool_dir=spool, queue_size=max(10_000, n))
    keys = [f"bench-robot-{i % ROBOTS}" for i in range(n)]
    runs: dict[str, list[float]] = {"raw": [], "fleet": [], "raw_cpu": [], "fleet_cpu": []}
    raw = KafkaProducer(**kafka_producer_options(config))
    fleet = KafkaTransport(config)
    fleet.send(TRAJECTORIES, payload, key=keys[0])  # connect + metadata outside the timed runs
    assert fleet.flush(60)
    raw.send(TRAJECTORIES, payload, key=keys[0].encode())
    raw.flush()
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        for key in keys:
            raw.send(TRAJECTORIES, payload, key=key.encode()).add_callback(lambda _m: None)
        raw.flush()
        runs["raw"].append(n / (time.perf_counter() - started))
        runs["raw_cpu"].append(1e6 * (time.process_time() - cpu) / n)
        started, cpu = time.perf_counter(), time.process_time()
        for key in keys:
            fleet.send(TRAJECTORIES, payload, key=key)
        assert fleet.flush(120), "fleet producer did not flush"
        runs["fleet"].append(n / (time.perf_counter() - started))
        runs["fleet_cpu"].append(1e6 * (time.process_time() - cpu) / n)
        print(
            f"  raw {runs['raw'][-1]:8.0f} seg/s {runs['raw_cpu'][-1]:5.1f} cpu-µs/seg   "
            f"fleet {runs['fleet'][-1]:8.0f} seg/s {runs['fleet_cpu'][-1]:5.1f} cpu-µs/seg"
        )
    assert fleet.stats.dropped == 0 and fleet.stats.spooled == 0, fleet.stats
    raw.close()
    fleet.close()
    return runs


def latency(bootstrap: str, frames: np.ndarray, rate: float, duration_s: float, root: Path) -> list[float]:
    from fleet.db import make_engine, session_factory
    from fleet.db.migrate import upgrade
    from fleet.recorder import Recorder, RecorderConfig
    from fleet.recorder_db import SqlEpisodeIndex
    from fleet.transport import KafkaTransport, TransportConfig, publish

    tag = uuid.uuid4().hex[:6]
    db_url = f"sqlite:///{root / 'fleet.db'}"
    upgrade(db_url)
    index = SqlEpisodeIndex(session_factory(make_engine(db_url)))
    recorded: dict[tuple[str, str, int], float] = {}

    def on_segment(seg: TrajectorySegment) -> None:
        recorded.setdefault((seg.robot_id, seg.episode_id, seg.segment_index), time.time() - seg.created_at)

    transport = KafkaTransport(TransportConfig(bootstrap=bootstrap, client_id="bench-recorder"))
    config = RecorderConfig(store_dir=root / "store", staging_dir=root / "staging", group_id=f"bench-{tag}")
    start_at_end(bootstrap, config.group_id)
    recorder = Recorder(config, transport=transport, index=index, on_segment=on_segment)
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop.is_set,))
    thread.start()
    robots = KafkaTransport(TransportConfig(bootstrap=bootstrap, client_id="bench-robots", spool_dir=root / "spool"))
    total = int(rate * duration_s)
    started = time.monotonic()
    for n in range(total):
        robot, k = n % ROBOTS, n // ROBOTS
        episode, index_in_ep = divmod(k, 10)
        seg = segment(f"lat-{tag}-{robot}", f"ep-{episode}", index_in_ep, frames, done=index_in_ep == 9)
        publish(robots, seg)
        time.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
    robots.flush(60)
    deadline = time.monotonic() + 60
    while len(recorded) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=30)
    recorder.close()
    robots.close()
    transport.close()
    if len(recorded) < total:
        raise RuntimeError(f"recorder saw {len(recorded)}/{total} segments")
    return [1000 * v for v in recorded.values()]


def start_at_end(bootstrap: str, group_id: str) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from fleet.transport import TRAJECTORIES

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    parts = [TopicPartition(TRAJECTORIES, p) for p in sorted(consumer.partitions_for_topic(TRAJECTORIES))]
    consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in consumer.end_offsets(parts).items()})
    consumer.close(autocommit=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="Kafka bootstrap (default: FLEET_* settings)")
    parser.add_argument("--segments", type=int, default=4000, help="segments per throughput run")
    parser.add_argument("--repeats", type=int, default=9, help="alternating runs per side (median reported)")
    parser.add_argument("--rate", type=float, default=80.0, help="segments/s for the latency run (80 = 80 robots)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of the latency run")
    parser.add_argument("--sizes", action="store_true", help="only print segment sizes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.sizes:
        sizes()
        return
    from fleet.settings import get_settings
    from fleet.transport import TransportConfig, ensure_topics

    bootstrap = args.bootstrap or get_settings().bootstrap_servers
    ensure_topics(TransportConfig(bootstrap=bootstrap))
    size_info = sizes()
    frames, _ = frames_64()
    payload = encode(segment("bench-robot-0", "ep-0", 0, frames, done=False))
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        runs = throughput(bootstrap, payload, args.segments, args.repeats, Path(tmp) / "spool")
        lat = latency(bootstrap, frames, args.rate, args.duration, Path(tmp))
    raw_runs, fleet_runs = runs["raw"], runs["fleet"]
    fleet_sps, raw_sps = statistics.median(fleet_runs), statistics.median(raw_runs)
    result = {
        "fleet_segments_per_s": round(fleet_sps, 1),
        "raw_segments_per_s": round(raw_sps, 1),
        "ratio_vs_raw": round(fleet_sps / raw_sps, 3),
        "mb_per_s": round(fleet_sps * len(payload) / 1e6, 2),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 1),
        "segment_bytes": len(payload),
        "segments_per_run": args.segments,
        "repeats": args.repeats,
        "ratio_pairwise_median": round(statistics.median(f / r for f, r in zip(fleet_runs, raw_runs, strict=True)), 3),
        "fleet_cpu_us_per_segment": round(statistics.median(runs["fleet_cpu"]), 1),
        "raw_cpu_us_per_segment": round(statistics.median(runs["raw_cpu"]), 1),
        "fleet_runs": [round(x, 1) for x in fleet_runs],
        "raw_runs": [round(x, 1) for x in raw_runs],
        "latency_rate_segments_per_s": args.rate,
        "latency_samples": len(lat),
        "bootstrap": bootstrap,
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        **size_info,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
