"""The simulated fleet on Ray: one Ray actor per robot, each a full robot runtime on the real services.

`run_fleet` starts (or joins, with `address`) a Ray cluster, places `n` robots over the task ×
embodiment grid (a small fleet covers as many tasks and embodiments as it can), runs them until
`episodes` each or `duration_s`, and returns per-robot summaries. On a multi-node Ray cluster the
same call spreads robots over the nodes unchanged.

Over 400 lines because the fleet's config, its Ray actor, placement over nodes and the restart of lost robots are
one Ray program.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from actors.priority import set_niceness
from actors.runtime import RobotConfig
from actors.supervisor import SupervisorConfig, check_supervision
from fleet.defaults import DEFAULT_EMBODIMENTS, DEFAULT_TASKS
from fleet.placement import ROBOT_NODES
from fleet.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetConfig:
    """A simulated fleet."""

    n: int = 4  # robots
    tasks: tuple[str, ...] = DEFAULT_TASKS  # spread over the robots (_interleave)
    embodiments: tuple[str, ...] = DEFAULT_EMBODIMENTS  # spread over the robots (_interleave)
    scenario: str = "nominal"  # deployment conditions every robot's scenes follow (fleet.sim.scenarios)
    episodes: int | None = None  # episodes per robot (None: run for duration_s)
    duration_s: float | None = 60.0  # wall-clock budget (None: run for `episodes`)
    seed: int = 0  # robot i uses seed + i
    realtime: bool = False  # tick at the control rate instead of as fast as the simulator goes
    time_scale: float = 1.0  # wall seconds per second of the robots' clock (RobotConfig.time_scale; real time only)
    poll_interval_s: float = 10.0  # registry alias fallback poll
    cpus_per_robot: float = 0.25  # Ray CPU reservation per robot (sim + small VLA on CPU)
    address: str | None = None  # Ray cluster to join ("auto" or host:port); None = start a local one
    robot_prefix: str = "sim"  # robot ids are <prefix>-<i>
    # Who watches the robots (actors.supervisor.SUPERVISION): "takeover", a simulated human (the scripted expert)
    # takes over when a robot goes wrong; "stop", a stalled episode is ended as a failure; "off", nobody.
    supervision: str = "takeover"
    # What makes the simulated human take over (actors.supervisor.RULES): "stall" (no progress for 1 s), "regress"
    # (heading away from the goal); several fire on whichever comes first. The reason goes with each correction.
    takeover_rules: tuple[str, ...] = ("stall",)
    correct_in_place: bool = False  # the human lines a misaligned approach up from where it is (SupervisorConfig)
    drive_below: float = 1.0  # "struggling" drives no whole episode once a robot's own success reaches this
    # Each robot keeps its embodiment and works through every task it can do, one episode each (starting at its
    # grid task), so a fleet smaller than the task x embodiment grid still brings data from all of it.
    rotate_tasks: bool = False
    # Robot i of n fetches a new version i/n of this many seconds after its event, so the fleet's downloads,
    # loads and warm-ups (and the MLflow server's work) are spread out instead of all landing on the same
    # moment's CPU; what it costs is at most this much extra time to converge.
    reload_stagger_s: float = 0.4

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("a fleet needs at least one robot")
        if self.episodes is None and self.duration_s is None:
            raise ValueError("give episodes or duration_s")
        if self.reload_stagger_s < 0:
            raise ValueError("reload_stagger_s must be >= 0")
        check_supervision(self.supervision)  # before any robot starts
        self.supervisor_config()  # unknown rules fail here, before any robot starts
        from fleet.sim.scenarios import get_scenario

        get_scenario(self.scenario)  # an unknown name fails here, with a hint, before any robot starts

    def supervisor_config(self) -> SupervisorConfig:
        return SupervisorConfig(
            rules=self.takeover_rules, correct_in_place=self.correct_in_place, drive_below=self.drive_below
        )

    def robots(self) -> list[RobotConfig]:
        from fleet.sim.registry import TASKS

        pairs = [(t, e) for t, e in itertools.product(self.tasks, self.embodiments) if e in TASKS[t].embodiments]
        if not pairs:
            raise ValueError(f"no task in {self.tasks} runs on any of {self.embodiments}")
        pairs = _interleave(pairs)
        placed = [pairs[i % len(pairs)] for i in range(self.n)]
        return [
            RobotConfig(
                robot_id=f"{self.robot_prefix}-{i}",
                task=task,
                embodiment=embodiment,
                task_rotation=tuple(t for t, e in pairs if e == embodiment) if self.rotate_tasks else (),
                scenario=self.scenario,
                seed=self.seed + i,
                realtime=self.realtime,
                time_scale=self.time_scale,
                reload_delay_s=round(self.reload_stagger_s * i / self.n, 3),
            )
            for i, (task, embodiment) in enumerate(placed)
        ]


def _interleave(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Order (task, embodiment) pairs so every prefix covers as many tasks and embodiments as it can.

    Each next pair is the one whose task and embodiment are used least so far (ties: the given order), so
    4 robots over 3 tasks x 2 embodiments run all 3 tasks on both embodiments.
    """
    used: collections.Counter[str] = collections.Counter()
    left, ordered = list(pairs), []
    while left:
        pair = min(left, key=lambda p: (used["t:" + p[0]] + used["e:" + p[1]], used["t:" + p[0]]))
        left.remove(pair)
        ordered.append(pair)
        used.update(("t:" + pair[0], "e:" + pair[1]))
    return ordered


class RobotActor:
    """A robot as a Ray actor (threaded: `run` in one thread, `status`/`stop` answered meanwhile)."""

    def __init__(
        self,
        settings: dict[str, Any],
        config: dict[str, Any],
        poll_interval_s: float,
        log_level: int = logging.WARNING,
        supervision: str = "takeover",
        supervisor: dict[str, Any] | None = None,
    ) -> None:
        import torch

        from actors.robot import build_robot
        from fleet.observability import configure_logging

        torch.set_num_threads(1)
        robot_settings = Settings(**settings)
        robot = RobotConfig(**config)
        # The actor's own process logs like the driver that started it (same level, FLEET_LOG_FORMAT).
        configure_logging("robots", log_level, json=robot_settings.log_format == "json")
        self.niceness = os.getpriority(os.PRIO_PROCESS, 0)
        if robot.realtime:  # before the robot starts its threads (they inherit it); see RobotConfig.niceness
            self.niceness, refused = set_niceness(robot.niceness)
            if refused:
                log.warning("robot %s keeps niceness %d: %s", robot.robot_id, self.niceness, refused)
        self.handle = build_robot(
            robot_settings, robot, poll_interval_s=poll_interval_s, supervision=supervision,
            supervisor_config=SupervisorConfig.from_dict(supervisor or {}),
        )  # fmt: skip
        self.stop_event = threading.Event()

    def run(self, episodes: int | None, duration_s: float | None) -> dict[str, Any]:
        if duration_s is not None:
            threading.Timer(duration_s, self.stop_event.set).start()
        self.handle.runtime.run(episodes=episodes, stop=self.stop_event)
        return self.status()

    def status(self) -> dict[str, Any]:
        runtime = self.handle.runtime
        recent = list(runtime.recent)[-200:]
        return {
            **runtime.metrics(),  # counters the driver exports on /metrics (fleet.observability.watch_robots)
            "spool_bytes": self.handle.transport.producer.spooled_bytes,
            "robot_id": runtime.config.robot_id,
            "niceness": self.niceness,  # the process's CPU priority (RobotConfig.niceness when it was allowed)
            "task": runtime.task,
            "embodiment": runtime.config.embodiment,
            "version": runtime.version,
            "state": runtime.state,
            "episodes": runtime.episodes,
            "successes": runtime.successes_total,
            "interventions": runtime.interventions_total,
            "refused": dict(self.handle.reloader.stats.refused),
            "swaps": list(runtime.swaps),
            "ticks": runtime.ticks_total,
            "missed_ticks": runtime.missed_total,
            "missed_log": list(runtime.missed_log),
            # (version, success, intervention steps, steps, finished at, started at, task) of the latest episodes
            "recent": [
                (r.model_version, r.success, r.interventions, r.steps, r.finished_at, r.started_at, r.task)
                for r in recent
            ],
        }

    def swapped(self, version: str, after: float) -> float | None:
        """Wall-clock time of this robot's latest swap to `version` at or after `after` (None: not yet).

        A cheap question for a driver waiting on a rollout: `status()` builds the whole report, and polling it
        many times a second is work in the robot's own process while it swaps.
        """
        times = [t for v, t in list(self.handle.runtime.swaps) if v == version and t >= after]
        return max(times) if times else None

    def pid(self) -> int:
        """The robot's process (for an operator's py-spy, or a fault test's kill)."""
        return os.getpid()

    def node(self) -> str:
        """The Ray node this robot runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.handle.close()


def wait_swapped(actors: list[Any], version: str, *, after: float, timeout_s: float) -> list[float | None]:
    """Each robot's wall-clock swap to `version` at or after `after`, once all have swapped or `timeout_s` passed
    (None where a robot had not).

    Asks each robot only for that time (`RobotActor.swapped`), ten times a second: the robots timestamp their own
    swaps, so the poll rate does not change the figure, and a full `status()` report many times a second would be
    the caller's own work in the robots' processes in the middle of the swaps it measures.
    """
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        times = ray.get([a.swapped.remote(version, after) for a in actors])
        if all(t is not None for t in times) or time.monotonic() >= deadline:
            return times
        time.sleep(0.1)


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    # Actor output (progress bars, warnings) is forwarded to this process unless FLEET_RAY_LOG_TO_DRIVER=0
    # (the test suite turns it off so pytest's summary stays the last thing printed).
    to_driver = os.environ.get("FLEET_RAY_LOG_TO_DRIVER", "1") != "0"
    address = address or os.environ.get("RAY_ADDRESS")  # Ray's own variable for the cluster to join
    if address:
        ray.init(address=address, log_to_driver=to_driver)
        return
    for attempt in range(3):  # a local node can fail to come up on a loaded 2-core machine; try again
        try:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 2, include_dashboard=False, log_to_driver=to_driver)
            return
        except Exception as err:  # noqa: BLE001 - Ray raises bare Exception for node start-up timeouts
            log.warning("local Ray start failed (attempt %d): %s", attempt + 1, err)
            ray.shutdown()
            time.sleep(2.0)
    raise RuntimeError("could not start a local Ray node; see /tmp/ray/session_latest/logs")


# Robots spread over the cluster's nodes but the learner's (fleet.placement): one node lost takes as few robots as it
# can with it (run_fleet replaces them on the nodes left); on one machine, the same as the default.
ROBOT_PLACEMENT: dict[str, Any] = {"scheduling_strategy": "SPREAD", "label_selector": ROBOT_NODES}


def _actor_class(config: FleetConfig) -> Any:
    import ray

    # Ray's typed overloads of `remote` omit actor options such as max_concurrency; the call is Ray's documented one.
    return ray.remote(num_cpus=config.cpus_per_robot, max_concurrency=4)(RobotActor)  # type: ignore[call-overload]


def _start_robot(settings: Settings, config: FleetConfig, robot: RobotConfig, name: str) -> Any:
    settings_dict = settings.model_dump(mode="json", exclude={"secret_key", "metrics_token"})  # robots need no secrets
    return (
        _actor_class(config)
        .options(name=name, get_if_exists=False, **ROBOT_PLACEMENT)
        .remote(
            settings_dict,
            asdict(robot),
            config.poll_interval_s,
            logging.getLogger().getEffectiveLevel(),
            config.supervision,
            asdict(config.supervisor_config()),
        )
    )


def start_fleet(settings: Settings, config: FleetConfig) -> list[Any]:
    """Create one Ray actor per robot (each fetches the production model before returning)."""
    import ray

    init_ray(config.address)
    actors = [_start_robot(settings, config, robot, robot.robot_id) for robot in config.robots()]
    ray.get([a.status.remote() for a in actors])  # surfaces start-up errors (e.g. no production model)
    return actors


# Robot processes that die (a crashed simulator, an OOM kill, a lost Ray node) are replaced this many times each per
# run; a robot that keeps dying is given up on, and the rest of the fleet goes on either way.
MAX_RESTARTS = 3
# A replacement draws its episodes from seed + restarts * RESEED_STRIDE: fresh episodes, not the dead one's again.
RESEED_STRIDE = 100_003
COUNTERS = ("episodes", "successes", "interventions", "ticks", "missed_ticks")  # summed over a robot's incarnations


@dataclass
class _Slot:
    """One robot of the fleet as the driver keeps it: its current actor and what its dead incarnations did."""

    robot: RobotConfig
    actor: Any
    run: Any  # the actor's `run` call (an ObjectRef)
    status: dict[str, Any] | None = None  # the current actor's latest report
    earlier: list[dict[str, Any]] = field(default_factory=list)  # each dead incarnation's last report
    done: dict[str, Any] | None = None  # the final report, once run returned (or the robot was given up on)

    def report(self) -> dict[str, Any]:
        """The robot's report over all its incarnations (counters summed, recent episodes and swaps joined)."""
        latest = self.done or self.status or (self.earlier[-1] if self.earlier else {"robot_id": self.robot.robot_id})
        if not self.earlier:
            return {**latest, "restarts": 0}
        merged = dict(latest)
        parts = [*self.earlier, *([] if latest is self.earlier[-1] else [latest])]
        for key in COUNTERS:
            merged[key] = sum(p.get(key, 0) for p in parts)
        for key in ("recent", "swaps", "missed_log"):
            merged[key] = [item for p in parts for item in p.get(key, [])]
        merged["restarts"] = len(self.earlier)
        return merged


def run_fleet(settings: Settings, config: FleetConfig, *, on_progress: Any = None) -> list[dict[str, Any]]:
    """Run the fleet to completion; `on_progress(reports)` is called about once a second.

    A robot whose process dies is replaced (`MAX_RESTARTS` times at most) for the rest of the run's episodes or
    time, while the others keep acting; each report counts all of a robot's incarnations and says how often it
    was restarted (`restarts`), and a robot given up on ends with state "lost".
    """
    import ray

    from fleet.observability import watch_robots

    actors = start_fleet(settings, config)
    deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
    slots = [
        _Slot(robot, actor, actor.run.remote(config.episodes, config.duration_s))
        for robot, actor in zip(config.robots(), actors, strict=True)
    ]
    reports: list[dict[str, Any]] = []
    unwatch = watch_robots(lambda: reports)  # this process's /metrics carries every actor's counters
    try:
        while any(s.done is None for s in slots):
            live = [s for s in slots if s.done is None]
            ray.wait([s.run for s in live], num_returns=len(live), timeout=1.0)
            asked = {id(s): s.actor.status.remote() for s in live}
            ray.wait(list(asked.values()), num_returns=len(asked), timeout=2.0)  # one slow robot delays no report
            for slot in live:
                _check(settings, config, slot, asked[id(slot)], deadline)
            reports = [s.report() for s in slots]
            if on_progress is not None:
                on_progress(reports)
        return [s.report() for s in slots]
    finally:
        unwatch()
        _close([s.actor for s in slots])


def _check(settings: Settings, config: FleetConfig, slot: _Slot, asked: Any, deadline: float | None) -> None:
    """Take the robot's report and, when its run is over, its final one; replace it if its process died."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        slot.status = ray.get(asked, timeout=0)
        finished, _ = ray.wait([slot.run], timeout=0)
        if finished:
            slot.done = ray.get(slot.run)
    except GetTimeoutError:
        return  # busy starting (a replacement fetching its model) or loaded: the last report stands
    except RayActorError as err:
        _replace(settings, config, slot, deadline, err)


def _replace(settings: Settings, config: FleetConfig, slot: _Slot, deadline: float | None, err: Exception) -> None:
    import ray

    robot = slot.robot
    slot.earlier.append(slot.status or {"robot_id": robot.robot_id, "task": robot.task,
                                        "embodiment": robot.embodiment})  # fmt: skip
    slot.status = None
    with contextlib.suppress(Exception):
        ray.kill(slot.actor, no_restart=True)
    restarts = len(slot.earlier)
    left_s = None if deadline is None else deadline - time.monotonic()
    left_episodes = (
        None if config.episodes is None else config.episodes - sum(e.get("episodes", 0) for e in slot.earlier)
    )
    over = (left_s is not None and left_s <= 0) or (left_episodes is not None and left_episodes <= 0)
    if restarts > MAX_RESTARTS or over:
        if not over:
            log.error("robot %s died %d times; giving it up, the fleet goes on: %s", robot.robot_id, restarts, err,
                      extra={"robot": robot.robot_id})  # fmt: skip
        last = slot.earlier[-1]
        slot.done = {"robot_id": robot.robot_id, "task": last.get("task", robot.task), "embodiment": robot.embodiment,
                     "version": last.get("version"), "state": "stopped" if over else "lost"}  # fmt: skip
        return
    log.error("robot %s died; replacing it (restart %d of %d): %s", robot.robot_id, restarts, MAX_RESTARTS, err,
              extra={"robot": robot.robot_id})  # fmt: skip
    slot.robot = dataclasses.replace(robot, seed=robot.seed + RESEED_STRIDE)
    slot.actor = _start_robot(settings, config, slot.robot, f"{robot.robot_id}-r{restarts}")
    slot.run = slot.actor.run.remote(left_episodes, left_s)


def _close(actors: list[Any]) -> None:
    """Stop and close every robot that is still there (a dead one has nothing to close), then end the actors."""
    import ray

    for a in actors:
        a.stop.remote()
    for ref in [a.close.remote() for a in actors]:
        with contextlib.suppress(ray.exceptions.RayActorError):
            ray.get(ref)
    for a in actors:
        ray.kill(a)
    time.sleep(0.1)
