"""Scale: 10, 100 and 1,000 synthetic robots against the recorder and the learner's ingest (issue #34).

A synthetic robot replays one recorded segment (10 steps of two 64x64 cameras, panda) at 10 Hz: one segment a
second, its ids, step offsets and timestamps rewritten per send, no simulator and no model, so 1,000 of them fit on
this machine. `--producers` processes each drive a share of the robots through one fleet `KafkaTransport` (spooling,
acks=all) in time order, each robot a phase of its own in the second; a producer that falls behind its schedule
says so (`producer_lag_p99_s`). They stand in for robots on computers of their own, so they run at niceness
`--producer-nice` (10): the services measured get this machine's cores first, and what the robots' stand-ins then
cannot get shows as their lag, not as the services' latency.

Downstream, as in production: `--recorders` processes of the product's `Recorder` in one consumer group (episode
store and DB index; PostgreSQL when there is more than one, else SQLite), each timing produce -> recorded
(`created_at` to the end of the batch that took the segment in: held with its episode, indexed in the DB, and for
a last segment its episode stored), and one process of the learner's ingest (`learner.ingest.Ingest` into a
`ReplayBuffer` of the default model, its own consumer group) counting the episodes it assembled. Every second the
bench reads both groups' committed lag from Kafka; the recorders' own lag is what they have yet to read, from
their consumers (their commits trail by the episodes they hold, about one a robot). The producers time each
segment to the brokers' acknowledgement (`produce_to_ack_*`), the stand-in robots' own part of the latency.

Each size runs `--seconds` (1,000 robots: 300, the issue's five minutes) after a warm-up. Reported per size:
`segments_per_s` (recorded, over the measured window), `produce_to_record_p50_ms` / `p99_ms`, `max_lag_records`
(recorder and learner groups), `learner_episodes_per_s`, the CPU share of each kind of process (brokers too),
`machine_busy` (the share of all cores in use), the p99 in each 10 s of the run, and `first_bottleneck`: the first
of the producers (behind schedule), the recorders (lag growing) or the learner's ingest (lag growing) that did not
keep up, else "none". Writes bench/results/scale.json.

Faults, after the sizes, on the same cluster: `--kafka-brokers 3 --kill-broker-at S` runs the largest size once more
for `--fault-seconds` (120) and SIGKILLs the third broker S seconds in (replication 3, `min.insync.replicas` 2:
writes go on with two). That run (`broker_kill`) reports `segments_lost` (acknowledged by the brokers, never
recorded, and not in the recorders' backlog either: `segments_backlog` is what they had not read when the drain gave
up), the top level `broker_killed_lost`, and its own latencies: the sizes' are those of a fleet without faults, the
failover's (a broker is fenced after 4 s, and producers wait for it) are `produce_to_record_p99_ms_broker_killed`.
`--ray-node-loss N` then runs N simulated robots (the product's `run_fleet`, a tiny random model as production) on a
two-node Ray test cluster and removes the node under some of them once every robot has finished an episode:
`ray_node_lost_robots_recovered` is how many of those were started again on the node left and finished, out of how
many were lost.

    FLEET_DATABASE_URL=$(bash scripts/postgres.sh) .venv/bin/python -m bench.scale --robots 10,100,1000 \
        --seconds 60,60,300 --producers 2 --recorders 2 --partitions 8 --kafka-brokers 3 --kill-broker-at 30 \
        --ray-node-loss 4

(bench/results/scale.json's command; `--producer-nice` 10 by default.)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "scale.json"
HZ, STEPS = 10, 10  # a segment a second
EPISODE_SEGMENTS = 10  # 10-second episodes


def _template() -> dict[str, Any]:
    """The recorded segment's wire body (msgpack map), frames already compressed: rewritten per send."""
    import msgpack

    from bench.ingest import frames_64, segment
    from fleet.schemas import encode

    frames, _ = frames_64(STEPS)
    seg = segment("scale-0", "ep-0", 0, frames, done=False)
    seg = seg.model_copy(update={"frames": {"front": frames, "wrist": frames[:, ::-1].copy()}})
    return dict(msgpack.unpackb(encode(seg), raw=False))


def robot_worker(bootstrap: str, robots: list[str], start_at: float, seconds: float, out: str, nice: int) -> None:
    """Send one segment per robot per second from `start_at` for `seconds`, in time order (one producer), at
    niceness `nice`."""
    import msgpack

    os.nice(nice)

    from fleet.schemas import encode_array
    from fleet.transport import TRAJECTORIES, KafkaTransport, TransportConfig

    body = _template()
    spool = Path(out).with_suffix(".spool")
    transport = KafkaTransport(TransportConfig(bootstrap=bootstrap, client_id=Path(out).stem, spool_dir=spool))
    n, lags, sent = len(robots), [], 0
    acked: list[tuple[float, float]] = []  # (created, seconds to the brokers' acknowledgement), from its thread
    total = int(seconds) * n
    for k in range(total):
        s, j = divmod(k, n)  # second s, robot j (phase j / n of the second)
        due = start_at + s + j / n
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        now = time.time()
        lags.append(now - due)
        episode, index = divmod(s, EPISODE_SEGMENTS)
        done = index == EPISODE_SEGMENTS - 1
        body.update(robot_id=robots[j], episode_id=f"ep-{episode}", segment_index=index, step_start=index * STEPS,
                    created_at=now, done=done, success=done,
                    timestamps=encode_array(now - (STEPS - 1 - np.arange(STEPS)) / HZ))  # fmt: skip
        sent += transport.send(TRAJECTORIES, msgpack.packb(body, use_bin_type=True), key=robots[j],
                               on_delivery=lambda d, t=now: acked.append((t, time.time() - t)))  # fmt: skip
    transport.flush(120)
    stats = transport.stats
    transport.close()
    shutil.rmtree(spool, ignore_errors=True)
    Path(out).write_text(json.dumps({"sent": sent, "lag_p99_s": float(np.percentile(lags, 99)) if lags else 0.0,
                                     "dropped": stats.dropped, "spooled": stats.spooled, "acked": acked}))  # fmt: skip


def recorder_worker(
    bootstrap: str, group: str, db_url: str, home: str, stop: Any, out: str, profile: str | None = None
) -> None:
    """The product's recorder in this process; records per segment (staged time, produce -> staged latency, the
    part of it from the poll that returned the segment to its staging). `profile`: run its loop under cProfile (CPU
    time of the loop's thread) and write the functions that take the most there."""
    from fleet.db import make_engine, session_factory
    from fleet.recorder import Recorder, RecorderConfig
    from fleet.recorder_db import SqlEpisodeIndex
    from fleet.transport import KafkaTransport, TransportConfig

    seen: list[tuple[float, float, float]] = []
    polled = [time.time()]  # when the batch being handled came back from poll: the loop handles one at a time
    behind: list[tuple[float, int]] = []  # (time, records on its partitions it has yet to read) at each poll

    def on_segment(seg: Any) -> None:
        now = time.time()
        seen.append((now, now - seg.created_at, now - polled[0]))

    transport = KafkaTransport(TransportConfig(bootstrap=bootstrap, client_id=Path(out).stem))
    config = RecorderConfig(store_dir=Path(home) / "episodes", staging_dir=Path(out).with_suffix(".staging"),
                            group_id=group)  # fmt: skip
    index = SqlEpisodeIndex(session_factory(make_engine(db_url)))
    recorder = Recorder(config, transport=transport, index=index, on_segment=on_segment)
    poll = recorder.loop.poll

    def timed_poll() -> Any:
        records = poll()
        polled[0] = time.time()
        behind.append((polled[0], sum(recorder.loop.lag.values())))
        return records

    recorder.loop.poll = timed_poll  # type: ignore[method-assign]
    profiler = cProfile.Profile(time.thread_time) if profile else None
    if profiler is not None:
        profiler.enable()
    recorder.run(stop.is_set)
    if profiler is not None:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(40)
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        Path(profile).write_text(text.getvalue())
    recorder.close()
    transport.close()
    Path(out).write_text(json.dumps({"seen": seen, "behind": behind}))


def _behind_by_second(recorders: list[dict[str, Any]], start: float, end: float) -> list[int]:
    """The recorders' lag summed, each second from `start` to `end`: each one's last poll in that second (its
    partitions' records it has yet to read; the committed offsets trail by the episodes it holds in memory)."""
    seconds = int(end - start)
    total = [0] * seconds
    for rec in recorders:
        last: list[int | None] = [None] * seconds
        for t, lag in rec["behind"]:
            if 0 <= (k := int(t - start)) < seconds:
                last[k] = lag
        value = 0
        for k in range(seconds):
            value = last[k] if last[k] is not None else value
            total[k] += value
    return total


def ingest_worker(bootstrap: str, group: str, stop: Any, out: str, nice: int = 0) -> None:
    """The learner's ingest: its consumer group on the trajectories, episodes assembled into a default replay."""
    os.nice(nice)
    from fleet.policy.config import VLAConfig
    from fleet.policy.language import default_embedder
    from fleet.schemas import SchemaError, decode
    from fleet.transport import TRAJECTORIES, KafkaTransport, TransportConfig
    from learner.ingest import Ingest
    from learner.replay import ReplayBuffer, ReplayConfig

    # 20,000 steps per buffer (~0.5 GB of frames): the oldest leave first, as in a long-running learner
    replay = ReplayBuffer(ReplayConfig(capacity=20_000), VLAConfig(), embedder=default_embedder())
    ingest = Ingest(replay)
    consumer = KafkaTransport(TransportConfig(bootstrap=bootstrap, client_id="scale-ingest")).consumer(
        group_id=group, topics=[TRAJECTORIES]
    )
    added: list[float] = []
    while not stop.is_set():
        records = consumer.poll(timeout_s=0.5, max_records=500)
        for record in records:
            before = ingest.episodes_added
            try:
                ingest.handle(decode(record.value))
            except SchemaError:
                continue
            if ingest.episodes_added > before:
                added.append(time.time())
        if records:
            consumer.commit(records)
    consumer.close()
    Path(out).write_text(json.dumps(added))


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of a process (all its threads): user + system, and the system's alone (the kernel's work on its
    behalf: fsyncs, file opens, sockets); zeros once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    user, system = (int(fields[i]) / os.sysconf("SC_CLK_TCK") for i in (11, 12))
    return user + system, system


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot (/proc/stat; idle and iowait count as not busy)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    return round((after[0] - before[0]) / max(1, after[1] - before[1]), 3)


def _p99_by(seen: list[tuple[float, ...]], start_at: float, seconds: float, step: float) -> list[float | None]:
    """p99 latency (ms) of the segments recorded in each `step` seconds from `start_at` (None: none recorded)."""
    buckets: list[list[float]] = [[] for _ in range(int(np.ceil(seconds / step)))]
    for t, lat, *_ in seen:
        if 0 <= (k := int((t - start_at) // step)) < len(buckets):
            buckets[k].append(lat)
    return [round(1000 * float(np.percentile(b, 99)), 1) if b else None for b in buckets]


def _lag_rows(monitor: Any, groups: dict[str, str]) -> list[dict[str, object]]:
    """The groups' lag rows; none this second when the admin client reached no broker (one was just killed)."""
    from fleet.transport import TransportError

    try:
        return monitor.rows(list(groups.values()))
    except TransportError:
        return []


def run_size(
    args: argparse.Namespace, settings: Any, robots: int, seconds: float, work: Path, *, kill_at: float | None = None
) -> dict[str, Any]:
    from bench.ingest import start_at_end
    from fleet.db.migrate import upgrade
    from fleet.stack.kafka import KafkaService
    from fleet.transport import TransportConfig
    from fleet.transport.kafka import GroupLag

    bootstrap = settings.bootstrap_servers
    tag = uuid.uuid4().hex[:6]
    db_url = args.database_url or f"sqlite:///{work / f'{tag}.db'}"
    upgrade(db_url)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    groups = {"recorder": f"recorder-{tag}", "learner": f"learner-{tag}"}
    for group in groups.values():
        start_at_end(bootstrap, group)  # an earlier size's segments are not this run's
    consumers = [
        ctx.Process(
            target=recorder_worker,
            args=(
                bootstrap,
                groups["recorder"],
                db_url,
                str(work / tag),
                stop,
                str(work / f"rec-{tag}-{i}.json"),
                str(args.profile_recorders / f"recorder-{tag}-{i}.txt") if args.profile_recorders else None,
            ),
        )  # fmt: skip
        for i in range(args.recorders)
    ] + [
        ctx.Process(
            target=ingest_worker,
            args=(bootstrap, groups["learner"], stop, str(work / f"ing-{tag}.json"), args.learner_nice),
        )
    ]
    for p in consumers:
        p.start()
    time.sleep(args.warmup)  # the consumers join their groups
    start_at = time.time() + 5.0
    ids = [f"scale-{tag}-{i:04d}" for i in range(robots)]
    shares = [(ids[k :: args.producers], str(work / f"prod-{tag}-{k}.json")) for k in range(args.producers)]
    producers = [
        ctx.Process(target=robot_worker, args=(bootstrap, share, start_at, seconds, out, args.producer_nice))
        for share, out in shares
    ]
    for p in producers:
        p.start()
    victim = None if kill_at is None else KafkaService(settings, node=args.kafka_brokers - 1)  # the last
    killed_at: float | None = None
    monitor = GroupLag(TransportConfig(bootstrap=bootstrap))  # one pair of clients for the run's reads
    lags: dict[str, list[int]] = {name: [] for name in groups}
    brokers = [pid for n in range(settings.kafka_brokers) if (pid := KafkaService(settings, node=n).process().pid())]
    times0 = {pid: _cpu_seconds(pid) for pid in [p.pid for p in producers + consumers if p.pid] + brokers}
    cpu0 = {pid: total for pid, (total, _) in times0.items()}
    recorder_pids = [p.pid for p in consumers[:-1] if p.pid]
    system0 = {pid: times0[pid][1] for pid in recorder_pids}
    system_last = dict(system0)
    machine0 = _machine_ticks()
    cpu_last = dict(cpu0)  # a process's CPU time, read while it lives
    t0 = time.time()
    while any(p.is_alive() for p in producers):
        time.sleep(1.0)
        if victim is not None and kill_at is not None and killed_at is None and time.time() - start_at >= kill_at:
            pid = victim.process().pid()  # SIGKILL, for good: the rest of the run goes on with the brokers left
            if pid is None:
                raise RuntimeError(f"broker {victim.node + 1} is not running to be killed: {_kafka_log(settings)}")
            os.killpg(pid, signal.SIGKILL)
            killed_at = time.time() - start_at
        times = {pid: _cpu_seconds(pid) for pid in cpu_last}  # one read of each process a second
        cpu_last.update({pid: total for pid, (total, _) in times.items() if total > 0})
        system_last.update({pid: times[pid][1] for pid in system_last if times[pid][0] > 0})
        for row in _lag_rows(monitor, groups):
            name = "recorder" if row["group"] == groups["recorder"] else "learner"
            lags[name].append(int(row["lag"]))  # type: ignore[call-overload]
        print(f"\r{robots} robots: {time.time() - start_at:5.0f}/{seconds:.0f} s  committed lag recorder "
              f"{lags['recorder'][-1] if lags['recorder'] else '-'}  learner "
              f"{lags['learner'][-1] if lags['learner'] else '-'}   ", end="", flush=True)  # fmt: skip
    wall = time.time() - t0
    cpu = {pid: cpu_last[pid] - c for pid, c in cpu0.items()}
    recorders_cpu = sum(cpu[pid] for pid in recorder_pids)
    recorders_system = sum(system_last[pid] - s for pid, s in system0.items())
    busy = _busy(machine0, _machine_ticks())
    running = {name: list(v) for name, v in lags.items()}  # the lag while the fleet sent, before the drain
    drain_until = time.time() + args.drain
    while time.time() < drain_until and any((v[-1] if v else 1) > 0 for v in lags.values()):
        time.sleep(1.0)
        for row in _lag_rows(monitor, groups):
            lags["recorder" if row["group"] == groups["recorder"] else "learner"].append(int(row["lag"]))  # type: ignore[call-overload]
    backlog = lags["recorder"][-1] if lags["recorder"] else 0
    drained = time.time()
    monitor.close()
    stop.set()
    for p in producers + consumers:
        p.join(timeout=120)
    print()
    produced = [json.loads((work / f"prod-{tag}-{k}.json").read_text()) for k in range(args.producers)]
    recs = [json.loads((work / f"rec-{tag}-{i}.json").read_text()) for i in range(args.recorders)]
    seen = [tuple(x) for rec in recs for x in rec["seen"]]
    # The recorders' lag is what they have yet to read (their committed offsets trail by the episodes they hold)
    running["recorder"] = _behind_by_second(recs, start_at, start_at + seconds)
    lags["recorder"] = _behind_by_second(recs, start_at, drained)
    acked = [lat for p in produced for t, lat in p["acked"] if start_at + args.settle <= t < start_at + seconds]
    episodes = json.loads((work / f"ing-{tag}.json").read_text())
    window = (start_at + args.settle, start_at + seconds)  # the measured window: after the fleet settled in
    in_window = [lat for t, lat, _ in seen if window[0] <= t < window[1]]
    in_recorder = [own for t, _, own in seen if window[0] <= t < window[1]]  # from its poll to recorded
    span = window[1] - window[0]
    kinds = {"producers": producers, "recorders": consumers[:-1], "learner_ingest": consumers[-1:]}
    share = {kind: round(sum(cpu[p.pid] for p in ps if p.pid) / wall, 2) for kind, ps in kinds.items()}
    share["brokers"] = round(sum(cpu[pid] for pid in brokers) / wall, 2)  # until the kill, for the one killed
    producer_lag = max(p["lag_p99_s"] for p in produced)
    # Judged on the lag while the fleet sent: after it stops, the drain empties a backlog that was still growing.
    rising = {name: len(v) > 4 and v[-1] > 2 * robots and v[-1] > v[len(v) // 2] for name, v in running.items()}
    bottleneck = ("producers" if producer_lag > 1.0 else "recorders" if rising["recorder"]
                  else "learner_ingest" if rising["learner"] else "none")  # fmt: skip
    sent = sum(p["sent"] for p in produced)
    return {
        "robots": robots,
        "seconds": seconds,
        "segments_sent": sent,
        "segments_recorded": len(seen),
        "segments_per_s": round(len(in_window) / span, 1),
        "offered_segments_per_s": robots,
        "produce_to_record_p50_ms": round(1000 * float(np.percentile(in_window, 50)), 1) if in_window else None,
        "produce_to_record_p99_ms": round(1000 * float(np.percentile(in_window, 99)), 1) if in_window else None,
        # of it, from the poll that returned a segment to its staging (the rest: producer, brokers, fetch, waiting
        # in the recorder's previous batches)
        "poll_to_record_p50_ms": round(1000 * float(np.percentile(in_recorder, 50)), 1) if in_recorder else None,
        "poll_to_record_p99_ms": round(1000 * float(np.percentile(in_recorder, 99)), 1) if in_recorder else None,
        # of it, from the robots' send to the brokers' acknowledgement (acks=all): the robots' stand-ins' own part
        "produce_to_ack_p50_ms": round(1000 * float(np.percentile(acked, 50)), 1) if acked else None,
        "produce_to_ack_p99_ms": round(1000 * float(np.percentile(acked, 99)), 1) if acked else None,
        "max_lag_records": {name: max(v, default=0) for name, v in lags.items()},
        "learner_episodes_per_s": round(sum(window[0] <= t < window[1] for t in episodes) / span, 2),
        "producer_lag_p99_s": round(producer_lag, 3),
        "dropped": sum(p["dropped"] for p in produced),
        "cpu_cores": share,
        # of the recorders' CPU, the kernel's share (fsyncs, opens and unlinks of staging logs, sockets)
        "recorders_system_share": round(recorders_system / recorders_cpu, 2) if recorders_cpu else None,
        "machine_busy": busy,  # the share of all cores busy while the fleet sent (1.0: none to spare)
        # p99 produce -> recorded of the segments recorded in each 10 s of the run: where a backlog came and went
        "produce_to_record_p99_ms_by_10s": _p99_by(seen, start_at, seconds, 10.0),
        "first_bottleneck": bottleneck,
        "broker_killed_at_s": None if killed_at is None else round(killed_at, 1),
        # Still in Kafka when the drain gave up: the recorders' group had not read them yet (not lost, late).
        "segments_backlog": backlog,
        # acknowledged by the brokers, never recorded and no longer in the recorders' backlog (each recorded at most
        # once); a batch recorded but not yet committed counts in both, so this is floored at 0
        "segments_lost": max(0, sent - sum(p["dropped"] for p in produced) - len(seen) - backlog),
    }


def _kafka_log(settings: Any) -> str:
    """The brokers' log's last lines (the bench's home is deleted when it ends)."""
    path = settings.log_dir / "kafka.log"
    lines = path.read_text(errors="replace").splitlines()[-40:] if path.exists() else ["(no log)"]
    return f"{path}, last lines:\n" + "\n".join(lines)


def ray_node_loss(settings: Any, robots: int, episodes: int) -> dict[str, Any]:
    """`robots` simulated robots (the product's `run_fleet`, a tiny random model as production) on a two-node Ray test
    cluster; once every robot has finished an episode the node under some of them goes away. How many of those were
    started again on the node left and finished their episodes."""
    import ray
    import torch
    from ray.cluster_utils import Cluster

    from actors.sim_fleet import FleetConfig, run_fleet
    from fleet.policy.config import debug_model_config
    from fleet.policy.model import VLAModel
    from fleet.registry import Registry, publish_model

    registry = Registry(settings)
    torch.manual_seed(0)
    v1 = publish_model(registry, VLAModel(debug_model_config()), parent_version=None)
    registry.promote(v1.version, actor="bench", role="admin", reason="scale bench")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    config = FleetConfig(n=robots, tasks=("pick",), episodes=episodes, duration_s=None, poll_interval_s=600,
                         robot_prefix="scale", address=cluster.address)  # fmt: skip
    lost: list[str] = []

    def progress(reports: list[dict]) -> None:
        if lost or not all(r.get("episodes", 0) >= 1 for r in reports):
            return
        nodes = {r["robot_id"]: ray.get(ray.get_actor(r["robot_id"]).node.remote()) for r in reports}
        lost.extend(sorted(rid for rid, node in nodes.items() if node == worker.node_id))
        cluster.remove_node(worker)
        print(f"ray: node removed under {len(lost)} of {robots} robots", flush=True)

    try:
        results = run_fleet(settings, config, on_progress=progress)
    finally:
        ray.shutdown()
        with contextlib.suppress(Exception):
            cluster.shutdown()
    by_robot = {r["robot_id"]: r for r in results}
    recovered = [r for r in lost if by_robot[r]["restarts"] >= 1 and by_robot[r]["episodes"] == episodes]
    return {"robots": robots, "episodes": episodes, "on_lost_node": len(lost), "recovered": len(recovered),
            "others_finished": sum(by_robot[r]["episodes"] == episodes for r in by_robot if r not in lost)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", default="10,100,1000")
    parser.add_argument("--seconds", default="60,60,300", help="per size (the measured part of each run)")
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--recorders", type=int, default=2)
    parser.add_argument("--profile-recorders", type=Path, help="a folder: each recorder's cProfile (not for results)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--kafka-brokers", type=int, default=1)
    parser.add_argument("--database-url", default=os.environ.get("FLEET_DATABASE_URL"))
    parser.add_argument(
        "--producer-nice",
        type=int,
        default=10,
        help="niceness of the synthetic robots' processes: they stand in for robots on their own computers, so they "
        "yield this machine's cores to the services measured (a producer behind schedule is still reported)",
    )
    parser.add_argument(
        "--learner-nice",
        type=int,
        default=0,
        help="niceness of the learner's ingest: in production it runs on the learner's (GPU) machine, not beside the "
        "recorders (its lag is still reported)",
    )
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds for the consumers to join")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds of each run left out of its figures")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the groups to catch up")
    parser.add_argument(
        "--kill-broker-at",
        type=float,
        default=None,
        help="then run the largest size once more and SIGKILL the last broker this many seconds in (needs "
        "--kafka-brokers 3)",
    )
    parser.add_argument("--fault-seconds", type=float, default=120.0, help="the broker-kill run's measured part")
    parser.add_argument(
        "--ray-node-loss",
        type=int,
        default=0,
        help="then this many simulated robots on a two-node Ray cluster, one node removed under them",
    )
    parser.add_argument("--ray-episodes", type=int, default=5, help="episodes per robot of the Ray phase")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.profile_recorders:
        args.profile_recorders.mkdir(parents=True, exist_ok=True)
    if args.kill_broker_at is not None and args.kafka_brokers < 3:
        parser.error("--kill-broker-at needs --kafka-brokers 3 (replication 3, min.insync.replicas 2)")
    sizes = [int(x) for x in args.robots.split(",")]
    seconds = [float(x) for x in args.seconds.split(",")]
    if len(sizes) != len(seconds):
        parser.error("--robots and --seconds need as many values")
    if args.recorders > 1 and not (args.database_url or "").startswith("postgresql"):
        parser.error("more than one recorder needs PostgreSQL: FLEET_DATABASE_URL=$(bash scripts/postgres.sh)")

    from fleet.settings import Settings
    from fleet.stack import launcher
    from fleet.stack.launcher import kafka_only
    from fleet.stack.process import free_port, port_block
    from fleet.transport import TransportConfig, ensure_topics

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fleet-scale-") as tmp:
        work = Path(tmp)
        base = port_block(2 * args.kafka_brokers)  # node i listens on base + 2i, its controller on base + 2i + 1
        settings = Settings(home=work / "home", kafka_port=base, kafka_controller_port=base + 1,
                            kafka_brokers=args.kafka_brokers, kafka_partitions=args.partitions)  # fmt: skip
        with kafka_only(settings):
            ensure_topics(TransportConfig.from_settings(settings))
            rows = [run_size(args, settings, n, s, work) for n, s in zip(sizes, seconds, strict=True)]
            fault = None
            if args.kill_broker_at is not None:
                fault = run_size(args, settings, sizes[-1], args.fault_seconds, work, kill_at=args.kill_broker_at)
        ray_phase = None
        if args.ray_node_loss:  # its own single-broker stack with MLflow: the robots fetch production from it
            ray_settings = Settings(home=work / "ray", kafka_port=free_port(), kafka_controller_port=free_port(),
                                    mlflow_port=free_port())  # fmt: skip
            launcher.up(ray_settings, timeout_s=180, log=lambda _m: None)
            try:
                ray_phase = ray_node_loss(ray_settings, args.ray_node_loss, args.ray_episodes)
            finally:
                launcher.down(ray_settings, log=lambda _m: None)
    result = {
        "benchmark": "scale",
        "command": "bench/scale.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "database_url")
        ),  # fmt: skip
        "database": "postgresql" if (args.database_url or "").startswith("postgresql") else "sqlite",
        "robots": sizes,
        "segments_per_s": {str(r["robots"]): r["segments_per_s"] for r in rows},
        "produce_to_record_p99_ms": {str(r["robots"]): r["produce_to_record_p99_ms"] for r in rows},
        "max_lag_records": max(max(r["max_lag_records"].values()) for r in rows),
        "runs": rows,
        "seconds": round(time.time() - started, 1),
        "cpu_count": os.cpu_count(),
        "median_cpu_cores": {k: statistics.median(r["cpu_cores"][k] for r in rows) for k in rows[0]["cpu_cores"]},
    }
    if fault is not None:  # one of three brokers SIGKILLed mid-run: segments acknowledged and never recorded
        result["broker_killed_lost"] = fault["segments_lost"]
        result["produce_to_record_p99_ms_broker_killed"] = fault["produce_to_record_p99_ms"]
        result["broker_kill"] = fault
    if ray_phase is not None:  # robots on the lost Ray node, started again elsewhere and finished / all of them
        result["ray_node_lost_robots_recovered"] = f"{ray_phase['recovered']}/{ray_phase['on_lost_node']}"
        result["ray_node_loss"] = ray_phase
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
