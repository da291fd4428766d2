"""Soak: a real-time simulated fleet on the whole stack for minutes; nothing may be lost, duplicated or leak.

Starts its own stack (temporary FLEET_HOME, free ports: Kafka, MLflow, SQLite), registers a random-weight
debug-size VLA as version 1 (cheap inference), then runs as child processes the recorder (`fleet record`),
the learner (`fleet learner run --preset latency`: tiny model, a candidate every ~15 s) and the dashboard
(`fleet dashboard`), and `--robots` real-time robots (10 Hz ticks) as Ray actors driven from this process
(the Ray driver, which also serves the robots' /metrics). Every `--promote-every-s` the bench promotes the
newest candidate, as an approving operator would, so robots hot-reload during the soak.

Measured:

* **segments**: `segments_produced` = the robots' own counters; each robot also keeps the
  (robot, episode, segment_index) of every segment it published. After the robots stop, the bench waits
  until the recorder's committed offsets reach the log end (lag 0), then compares those keys with the
  recorder's DB rows: `lost` (produced, never recorded), `duplicated` (DB rows beyond one per key),
  `unexpected` (recorded, never produced). `kafka_records` = records on fleet.trajectories (more than
  produced would mean producer duplicates).
* **lag**: every ~5 s, log end − committed offset per consumer group (Kafka admin) and the services'
  `fleet_consumer_lag_records` gauges; `max_lag` is the first, `max_lag_metrics` the second (the recorder's
  committed offsets trail by the episodes it holds in memory, about one a robot; its gauge is what it has yet to read).
* **memory**: every ~10 s the RSS (/proc) of each service's process tree: recorder, learner, dashboard,
  kafka, mlflow, the Ray driver (this process), the Ray system processes and every robot actor;
  `rss_slope_mb_per_min` is a least-squares line over the robots' run after `--warmup-s`, and
  `rss_slope_last_half_mb_per_min` the same over its second half (a buffer that fills then stays flat
  vs. steady growth). RSS counts shared pages (torch) in every process: `pss_mb_end` sums to real memory.
* **logs**: ERROR / Traceback lines per service log (the robots': Ray worker logs), with samples, and
  the WARNING count. Logs stay in the temporary FLEET_HOME when a log has errors (or `--keep-home`).
* **missed ticks** of the real-time control loop (a 2-core machine shared with everything: a finding).

Writes bench/results/soak.json and bench/results/soak.png. Command that produced the committed result:

    .venv/bin/python -m bench.soak --robots 16 --minutes 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("recorder", "learner", "dashboard")  # fleet services this bench starts as child processes
GROUPS = ("recorder", "learner")  # consumer groups whose committed lag is sampled
PAGE = os.sysconf("SC_PAGE_SIZE")
ERROR_LINE = re.compile(r"\bERROR\b|Traceback \(most recent call last\)|\bCRITICAL\b")
WARNING_LINE = re.compile(r"\bWARNING\b|\bWARN\b")
Key = tuple[str, str, int]  # (robot, episode, segment_index)


class SoakRobot:
    """Mixed into `RobotActor`: remembers the key of every segment the robot publishes, tells its pid."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        from fleet.schemas import TrajectorySegment

        runtime = self.handle.runtime  # type: ignore[attr-defined]
        publish, self.keys = runtime.publish, []

        def counted(message: Any) -> Any:
            out = publish(message)
            if isinstance(message, TrajectorySegment):
                self.keys.append((message.robot_id, message.episode_id, message.segment_index))
            return out

        runtime.publish = counted

    def produced(self) -> list[Key]:
        return list(self.keys)

    def pid(self) -> int:
        return os.getpid()


def _terminate(*_: Any) -> None:
    sys.exit(143)


def start_robots(settings: Any, config: Any) -> list[Any]:
    """`actors.sim_fleet.start_fleet` with the key-keeping robot."""
    from dataclasses import asdict

    import ray

    from actors.sim_fleet import RobotActor, init_ray

    init_ray(config.address)
    signal.signal(signal.SIGTERM, _terminate)  # ray.init installs its own handler; ours runs the clean-up
    cls = ray.remote(num_cpus=config.cpus_per_robot, max_concurrency=4)(type("SoakRobot", (SoakRobot, RobotActor), {}))
    settings_dict = settings.model_dump(mode="json", exclude={"secret_key", "metrics_token"})
    level = logging.getLogger().getEffectiveLevel()  # the actors log like this driver
    actors = [
        cls.options(name=r.robot_id).remote(settings_dict, asdict(r), config.poll_interval_s, level, config.supervision)
        for r in config.robots()
    ]
    ray.get([a.status.remote() for a in actors])  # surfaces start-up errors (e.g. no production model)
    return actors


# --- sampling ------------------------------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, RSS bytes) of every process on the machine."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/statm") as f:
                rss = int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry.name)] = (ppid, rss)
    return out


def subtree(table: dict[int, tuple[int, int]], root: int | None) -> set[int]:
    if root is None or root not in table:
        return set()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, ()))
    return seen


def pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between their users: these sum to real memory)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return 0


def available_mb() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("MemAvailable:"))


def sample_memory(roots: dict[str, int | None], actor_pids: dict[str, int]) -> dict[str, Any]:
    """RSS (MB) per service (each root's process tree; `driver` = this process alone) and per robot actor,
    PSS (MB) per service and the machine's available memory."""
    table = proc_table()
    trees = {"driver": {os.getpid()}} | {name: subtree(table, pid) for name, pid in roots.items()}
    actors = {robot: subtree(table, pid) for robot, pid in actor_pids.items()}
    trees["robots"] = set().union(*actors.values())
    trees["ray_system"] = subtree(table, os.getpid()) - set().union(*trees.values())  # gcs, raylet, idle workers
    rss = lambda pids: round(sum(table[p][1] for p in pids if p in table) / 2**20, 1)  # noqa: E731
    return {
        "mb": {name: rss(pids) for name, pids in trees.items()},
        "actors": {robot: rss(pids) for robot, pids in actors.items()},
        "pss_mb": {name: round(sum(map(pss, pids)) / 2**20, 1) for name, pids in trees.items()},
        "available_mb": round(available_mb()),
    }


def fetch(url: str) -> str | None:
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 - loopback only
    except OSError:
        return None


def scrape(url: str) -> dict[str, float]:
    """`fleet_consumer_lag_records` summed per group, plus the recorder counters, from one /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    text = fetch(url)
    if text is None:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "fleet_consumer_lag_records":
                key = f"lag/{s.labels.get('group')}"
                out[key] = out.get(key, 0.0) + s.value
            elif s.name.startswith(("fleet_recorder_segments_", "fleet_dead_letters_total")) and s.name.endswith(
                "_total"
            ):
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


class KafkaLag:
    """Log end − committed offset per consumer group, read as `fleet dashboard`'s Training page reads it
    (`fleet.transport.kafka.GroupLag`, one pair of clients for the soak), and a topic's record count."""

    def __init__(self, settings: Any) -> None:
        from fleet.transport import KafkaGroupConsumer, TransportConfig
        from fleet.transport.kafka import GroupLag

        self.config = TransportConfig.from_settings(settings, client_id="soak-lag")
        self.reader = KafkaGroupConsumer(self.config, group_id=None, topics=())
        self.groups = GroupLag(self.config)

    def lag(self, group: str) -> int | None:
        """None before the group's first commit, or when the broker does not answer this time."""
        from fleet.transport import TransportError

        try:
            rows = self.groups.rows([group])
        except TransportError as err:
            logging.getLogger(__name__).warning("lag of %s not read: %s", group, err)
            return None
        return sum(int(row["lag"]) for row in rows) if rows else None  # type: ignore[call-overload]

    def records(self, topic: str) -> int:
        ends = self.reader.end_offsets([(topic, p) for p in range(self.config.partitions)])
        return int(sum(ends.values()))

    def close(self) -> None:
        self.reader.close()
        self.groups.close()


def recorded_keys(settings: Any, prefix: str) -> list[Key]:
    from sqlalchemy import select

    from fleet.db import make_engine, session_factory
    from fleet.db.models import Episode, Segment

    engine = make_engine(settings.db_url)
    try:
        with session_factory(engine)() as session:
            rows = session.execute(
                select(Segment.robot_id, Episode.episode_id, Segment.segment_index)
                .join(Episode, Segment.episode_pk == Episode.id)
                .where(Segment.robot_id.like(f"{prefix}-%"))
            )
            return [(str(r), str(e), int(i)) for r, e, i in rows]
    finally:
        engine.dispose()


def log_errors(paths: list[Path]) -> dict[str, Any]:
    """ERROR / Traceback and WARNING lines in these logs, and a few distinct errors (timestamps stripped)."""
    count, warnings, samples = 0, 0, []
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        warnings += sum(1 for line in lines if WARNING_LINE.search(line))
        for line in lines:
            if ERROR_LINE.search(line):
                count += 1
                text = re.sub(r"^\S+ \S+ |^\[[^\]]*\] ", "", line.strip())[:240]
                if len(samples) < 5 and text not in samples:
                    samples.append(text)
    return {"count": count, "warnings": warnings, "samples": samples}


def robot_logs(home: Path) -> list[Path]:
    """The Ray workers' stdout/stderr (each once: `session_latest` links to the session directory)."""
    return sorted({p.resolve() for p in (home / "ray").glob("session_*/logs/worker-*")})


def fit_slopes(samples: list[dict[str, Any]], names: list[str]) -> dict[str, float | None]:
    return {n: slope([s["t"] for s in samples], [s["mb"][n] for s in samples]) for n in names}


def slope(ts: list[float], ys: list[float]) -> float | None:
    """MB per minute of a least-squares line (None with fewer than 3 points)."""
    if len(ts) < 3:
        return None
    return round(float(np.polyfit(np.asarray(ts) / 60.0, np.asarray(ys), 1)[0]), 3)


# --- the run ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:  # noqa: PLR0915 - one soak, top to bottom
    import ray

    from actors.sim_fleet import FleetConfig
    from fleet.demo import start_service
    from fleet.observability import serve_metrics, watch_robots
    from fleet.registry import Registry, announce, publish_model
    from fleet.settings import Settings
    from fleet.stack import launcher
    from fleet.stack.process import ManagedProcess

    settings = Settings()
    actors: list[Any] = []
    kafka_lag: KafkaLag | None = None
    unwatch, metrics = (lambda: None), None
    data: dict[str, Any] = {"rss": [], "lag": [], "phases": {}}
    t0 = time.monotonic()

    def elapsed() -> float:
        return round(time.monotonic() - t0, 1)

    try:
        launcher.up(settings, log=lambda _m: None)
        import torch

        from fleet.policy.config import debug_model_config
        from fleet.policy.model import VLAModel

        torch.manual_seed(args.seed)
        registry = Registry(settings)
        v1 = publish_model(registry, VLAModel(debug_model_config()), parent_version=None, actor="bench")
        registry.promote(v1.version, actor="bench", role="admin", reason="soak: version 1")
        start_service(settings, "recorder", ["record"])
        start_service(settings, "learner", ["learner", "run", "--preset", args.learner_preset])
        start_service(settings, "dashboard", ["dashboard"])
        endpoints = {
            "recorder": f"http://{settings.host}:{settings.metrics_port_recorder}/metrics",
            "learner": f"http://{settings.host}:{settings.metrics_port_learner}/metrics",
            "dashboard": f"{settings.dashboard_url}/metrics",
        }
        deadline = time.monotonic() + 300
        while not all(fetch(url) for url in endpoints.values()):  # /metrics answers once a service is up
            if time.monotonic() > deadline:
                raise RuntimeError(f"services not up after 300 s; see {settings.log_dir}")
            time.sleep(2)
        data["phases"]["services_up_s"] = elapsed()
        roots = {name: ManagedProcess(name, [], settings.run_dir, settings.log_dir / f"{name}.log").pid()
                 for name in SERVICES}  # fmt: skip
        roots |= {s.name: s.process().pid() for s in launcher.services(settings)}  # kafka, mlflow
        print(f"[{elapsed():6.0f} s] stack and services up; starting {args.robots} robots", flush=True)

        cpus = os.cpu_count() or 2
        fleet = FleetConfig(
            n=args.robots, tasks=("pick", "push"), embodiments=("panda", "kuka"), duration_s=args.minutes * 60,
            realtime=True, seed=args.seed, cpus_per_robot=min(0.25, round(0.9 * cpus / args.robots, 3)),
        )  # fmt: skip
        data["fleet_config"] = {k: v for k, v in vars(fleet).items() if k != "address"}
        actors = start_robots(settings, fleet)
        actor_pids = dict(
            zip([r.robot_id for r in fleet.robots()], ray.get([a.pid.remote() for a in actors]), strict=True)
        )
        statuses: list[dict[str, Any]] = []
        unwatch = watch_robots(lambda: statuses)
        metrics = serve_metrics(settings.metrics_port_robots, settings.metrics_bind_host, service="robots")
        kafka_lag = KafkaLag(settings)
        data["phases"]["robots_ready_s"] = elapsed()
        runs = [a.run.remote(None, fleet.duration_s) for a in actors]
        run_start = time.monotonic()
        data["phases"]["run_start_s"] = elapsed()
        print(f"[{elapsed():6.0f} s] {args.robots} robots ready; soak for {args.minutes} min", flush=True)

        next_lag = next_rss = next_print = next_promote = 0.0
        promotions: list[str] = []
        actor_errors: dict[str, str] = {}
        phase, drained_at, pending = "run", None, list(runs)
        while True:
            now = time.monotonic()
            t = round(now - run_start, 1)
            if phase == "run":
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                if not pending:
                    last, statuses, produced = {s["robot_id"]: s for s in statuses}, [], []
                    for robot, a, ref in zip(actor_pids, actors, runs, strict=True):
                        try:
                            statuses.append(ray.get(ref))
                            produced += ray.get(a.produced.remote())
                            ray.get(a.close.remote(), timeout=120)  # flushes the robot's producer
                        except ray.exceptions.RayError as err:  # a robot that died is a finding, not a crash
                            actor_errors[robot] = f"{type(err).__name__}: {str(err)[:300]}"
                            statuses += [last[robot]] if robot in last else []
                    phase, data["phases"]["run_end_s"], run_end = "drain", elapsed(), t
                    print(f"[{elapsed():6.0f} s] robots stopped after {t:.0f} s; waiting for the recorder", flush=True)
                    next_lag = 0.0
                    continue
            if now >= next_lag:
                next_lag = now + args.lag_every_s
                if phase == "run":
                    with contextlib.suppress(ray.exceptions.RayError):  # keep the last; a dead robot shows below
                        statuses = ray.get([a.status.remote() for a in actors], timeout=30)
                admin = {g: kafka_lag.lag(g) for g in GROUPS}
                scraped = {name: scrape(url) for name, url in endpoints.items()}
                lag_m = {f"{n}/{k[4:]}": v for n, s in scraped.items() for k, v in s.items() if k.startswith("lag/")}
                rec = scraped["recorder"]
                sample = {"t": t, "phase": phase, "admin": admin, "metrics": lag_m,
                          "recorded": rec.get("fleet_recorder_segments_recorded_total"),
                          "produced": sum(s.get("segments", 0) for s in statuses)}  # fmt: skip
                data["lag"].append(sample)
                if phase == "drain":
                    drained = admin.get("recorder") == 0 and lag_m.get("recorder/recorder", 0) == 0
                    if drained or t - run_end > args.drain_timeout_s:
                        drained_at = t if drained else None
                        data["phases"]["drained_s"] = elapsed()
                        data["rss"].append({"t": t, "phase": phase, **sample_memory(roots, actor_pids)})
                        break
            if now >= next_rss:
                next_rss = now + args.rss_every_s
                data["rss"].append({"t": t, "phase": phase, **sample_memory(roots, actor_pids)})
                left = data["rss"][-1]["available_mb"]
                if phase == "run" and left < args.min_available_mb and "stopped_early" not in data:
                    data["stopped_early"] = f"only {left} MB of memory available at t={t:.0f} s"  # shared machine
                    print(f"[{elapsed():6.0f} s] {data['stopped_early']}: stopping the robots", flush=True)
                    for a in actors:
                        a.stop.remote()
            if phase == "run" and args.promote_every_s > 0 and t >= args.promote_every_s and now >= next_promote:
                next_promote = now + args.promote_every_s
                candidate, current = registry.version_for_alias("candidate"), registry.version_for_alias("production")
                if candidate is not None and current is not None and int(candidate.version) > int(current.version):
                    try:
                        registry.promote(candidate.version, actor="bench", role="admin", reason="soak: approve")
                        announce(
                            settings, candidate, event="promoted", alias="production", actor="bench", reason="soak"
                        )
                        promotions.append(candidate.version)
                    except Exception as err:  # noqa: BLE001 - a failed promote is a finding; the soak goes on
                        logging.getLogger(__name__).error("promote %s failed: %s", candidate.version, err)
            if now >= next_print and data["lag"] and data["rss"]:
                next_print = now + args.print_every_s
                now_lag, mb = data["lag"][-1], data["rss"][-1]["mb"]
                missed = sum(s.get("missed_ticks", 0) for s in statuses)
                print(
                    f"[{elapsed():6.0f} s] {phase} t={t:.0f} s: produced {now_lag['produced']}, recorded "
                    f"{now_lag['recorded']}, lag {now_lag['admin']}, RSS {sum(mb.values()) / 1024:.2f} GB "
                    f"(robots {mb['robots'] / 1024:.2f}, learner {mb['learner']:.0f} MB), missed ticks {missed}",
                    flush=True,
                )  # fmt: skip
            time.sleep(0.5)

        recorded = recorded_keys(settings, fleet.robot_prefix)
        data.update(
            statuses=statuses, produced=produced, recorded=recorded, drained_at=drained_at, promotions=promotions,
            actor_errors=actor_errors,
            kafka_records=kafka_lag.records("fleet.trajectories"), recorder_metrics=scrape(endpoints["recorder"]),
            versions=[v.version for v in registry.list_versions()],
        )  # fmt: skip
        return data
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the clean-up short
        try:
            unwatch()
            if metrics is not None:
                metrics.close()
            if kafka_lag is not None:
                kafka_lag.close()
            for a in actors:
                with contextlib.suppress(Exception):  # already dead
                    ray.kill(a)
            ray.shutdown()
        finally:
            launcher.down(settings, log=lambda _m: None)  # recorder, learner, dashboard, MLflow, Kafka
            data["phases"]["stopped_s"] = elapsed()


def summarize(data: dict[str, Any], args: argparse.Namespace, home: Path, seconds: float) -> dict[str, Any]:
    from fleet.settings import Settings

    settings = Settings()
    produced, recorded = set(map(tuple, data["produced"])), data["recorded"]
    recorded_set = set(map(tuple, recorded))
    statuses = data["statuses"]
    during = [s for s in data["rss"] if s["phase"] == "run"]
    late = [s for s in during if s["t"] >= args.warmup_s]
    fit = late if len(late) >= 3 else during  # a smoke run shorter than the warm-up fits all it has
    names = sorted({k for s in data["rss"] for k in s["mb"]})
    actor_slopes = {
        r: slope([s["t"] for s in fit if r in s["actors"]], [s["actors"][r] for s in fit if r in s["actors"]])
        for r in sorted({r for s in fit for r in s["actors"]})
    }
    finite = [v for v in actor_slopes.values() if v is not None]
    logs = {name: [settings.log_dir / f"{name}.log"] for name in (*SERVICES, "kafka", "mlflow", "driver")}
    logs["robots"] = robot_logs(home)
    errors = {name: log_errors(paths) for name, paths in logs.items()}
    lag_groups = sorted({g for s in data["lag"] for g in s["admin"]})
    lag_metrics = sorted({g for s in data["lag"] for g in s["metrics"]})
    ticks = sum(s.get("ticks", 0) for s in statuses)
    missed = sum(s.get("missed_ticks", 0) for s in statuses)
    rec = data["recorder_metrics"]
    return {
        "benchmark": "soak",
        "command": " ".join([".venv/bin/python -m bench.soak", *sys.argv[1:]]),
        "config": {"robots": args.robots, "minutes": args.minutes, "learner_preset": args.learner_preset,
                   "promote_every_s": args.promote_every_s, "warmup_s": args.warmup_s, "model": "debug_model_config",
                   "lag_every_s": args.lag_every_s, "rss_every_s": args.rss_every_s, "fleet": data["fleet_config"]},
        "segments_produced": sum(s.get("segments", 0) for s in statuses),
        "segments_produced_keys": len(produced),
        "segments_recorded": len(recorded_set),
        "segments_recorded_metric": rec.get("fleet_recorder_segments_recorded_total"),
        "segments_consumed_metric": rec.get("fleet_recorder_segments_consumed_total"),
        "kafka_records": data["kafka_records"],
        "lost": len(produced - recorded_set),
        "duplicated": len(recorded) - len(recorded_set),
        "unexpected": len(recorded_set - produced),
        "dead_letters": rec.get("fleet_dead_letters_total", 0.0),
        "drained": data["drained_at"] is not None,
        "stopped_early": data.get("stopped_early"),
        "drain_s": round(data["phases"]["drained_s"] - data["phases"]["run_end_s"], 1),
        "max_lag": {g: max((s["admin"].get(g) or 0 for s in data["lag"]), default=None) for g in lag_groups},
        "max_lag_metrics": {g: max(s["metrics"].get(g, 0) for s in data["lag"]) for g in lag_metrics},
        "rss_slope_mb_per_min": fit_slopes(fit, names),
        # fill-then-flat (a replay buffer) vs. steady growth (a leak): the slope over the run's second half
        "rss_slope_last_half_mb_per_min": fit_slopes(fit[len(fit) // 2 :], names),
        "rss_slope_per_robot_mb_per_min": {"mean": round(float(np.mean(finite)), 3) if finite else None,
                                           "max": max(finite, default=None), "per_robot": actor_slopes},
        "rss_mb_start": {n: round(fit[0]["mb"][n], 1) for n in names} if fit else {},
        "rss_mb_end": {n: round(fit[-1]["mb"][n], 1) for n in names} if fit else {},
        "pss_mb_end": fit[-1]["pss_mb"] if fit else {},  # RSS counts shared pages (torch) once per process
        "min_available_mb": min(s["available_mb"] for s in data["rss"]),
        "rss_fit_window_s": [fit[0]["t"], fit[-1]["t"]] if fit else None,
        "errors_in_logs": {n: e["count"] for n, e in errors.items()},
        "error_samples": {n: e["samples"] for n, e in errors.items() if e["samples"]},
        "warnings_in_logs": {n: e["warnings"] for n, e in errors.items()},
        "ticks": ticks,
        "missed_ticks": missed,
        "missed_ticks_fraction": round(missed / ticks, 4) if ticks else None,
        "episodes": sum(s.get("episodes", 0) for s in statuses),
        "robots_failed": data["actor_errors"],
        "promotions": data["promotions"],
        "versions_published": len(data["versions"]),
        "robot_versions_at_end": sorted({str(s.get("version")) for s in statuses}),
        "phases_s": data["phases"],
        "seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "series": {"rss": data["rss"], "lag": data["lag"]},
    }  # fmt: skip


def plot(result: dict[str, Any], path: Path) -> None:
    from bench.figures import pyplot, save_figure

    plt = pyplot()

    rss, lag = result["series"]["rss"], result["series"]["lag"]
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(16, 4.5))
    t = [s["t"] / 60 for s in rss]
    for name in sorted(rss[0]["mb"]):
        if name != "robots":
            ax.plot(t, [s["mb"].get(name, np.nan) for s in rss], label=name)
    for robot in sorted({r for s in rss for r in s["actors"]}):
        bx.plot(t, [s["actors"].get(robot, np.nan) for s in rss], color="grey", linewidth=0.6)
    total = bx.twinx()
    total.plot(t, [s["mb"]["robots"] / 1024 for s in rss], color="tab:blue", label="all robots (right, GB)")
    total.set_ylabel("RSS, all robots (GB)", color="tab:blue")
    total.legend(fontsize=7, loc="lower right")
    ax.set(xlabel="minutes since the robots started", ylabel="RSS (MB)", title="RSS per service")
    bx.set(xlabel="minutes since the robots started", ylabel="RSS per robot actor (MB)", title="robots")
    lt = [s["t"] / 60 for s in lag]
    for group in result["max_lag"]:
        cx.plot(lt, [s["admin"].get(group) for s in lag], label=f"{group} (committed)")
    for name in result["max_lag_metrics"]:
        cx.plot(lt, [s["metrics"].get(name, np.nan) for s in lag], linestyle=":", label=f"{name} (/metrics)")
    cx.set(xlabel="minutes since the robots started", ylabel="records", title="consumer lag")
    end = (result["phases_s"]["run_end_s"] - result["phases_s"]["run_start_s"]) / 60
    for a in (ax, bx, cx):
        a.axvline(end, color="black", linewidth=0.8, linestyle="--")  # robots stop; the recorder drains
        a.axvline(result["config"]["warmup_s"] / 60, color="grey", linewidth=0.8, linestyle=":")  # fit starts
    ax.legend(fontsize=7)
    cx.legend(fontsize=7)
    fig.suptitle(
        f"fleet soak: {result['config']['robots']} robots, {result['config']['minutes']} min; "
        f"produced {result['segments_produced']}, recorded {result['segments_recorded']}, lost {result['lost']}"
    )
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", type=int, default=16, help="real-time simulated robots (Ray actors)")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the robots run")
    parser.add_argument("--learner-preset", default="latency", help="`fleet learner run --preset`")
    parser.add_argument("--promote-every-s", type=float, default=60.0, help="promote the newest candidate (0: never)")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="RSS samples before this are not fitted")
    parser.add_argument("--lag-every-s", type=float, default=5.0)
    parser.add_argument("--rss-every-s", type=float, default=10.0)
    parser.add_argument("--print-every-s", type=float, default=30.0)
    parser.add_argument("--drain-timeout-s", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-available-mb", type=float, default=1500, help="stop the soak below this free memory")
    parser.add_argument(
        "--keep-home", action="store_true", help="keep the temporary FLEET_HOME (kept anyway when a log has errors)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)  # `timeout` / kill: `finally` stops the stack

    from fleet.stack.process import free_port, isolated_env

    home = Path(tempfile.mkdtemp(prefix="fleet-soak-"))
    ports = ("RECORDER", "LEARNER", "ROBOTS")
    os.environ.update(isolated_env(home) | {f"FLEET_METRICS_PORT_{p}": str(free_port()) for p in ports})
    os.environ.update(RAY_TMPDIR=str(home), FLEET_RAY_LOG_TO_DRIVER="0", RAY_USAGE_STATS_ENABLED="0")
    (home / "logs").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, filename=home / "logs" / "driver.log")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    print(f"FLEET_HOME={home}", flush=True)
    started = time.monotonic()
    data = run(args, home)
    result = summarize(data, args, home, time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k not in ("series", "config")}, indent=1))
    if args.keep_home or any(result["errors_in_logs"].values()):
        print(f"logs kept in {home}/logs (robots: {home}/ray/session_*/logs/worker-*)")
    else:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
