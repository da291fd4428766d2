"""The robot runtime: the control loop that executes action chunks and streams what happened.

Robot-agnostic: it drives anything with the `Env` shape (`reset`, `step`; the simulator is one, a
real robot's driver another) through a `Policy` (`infer(obs) -> (H, A) chunk`, `reset()`).

Per tick: take the next action of the current chunk (or the supervisor's, when a human drives),
step the env, record the step. Inference of the next chunk runs in a worker thread and starts
`prefetch_steps` before the current chunk ends, so no tick waits for the network or the model
(a tick that overruns its deadline is counted as missed); the new chunk's first actions, meant for
the steps executed while it was inferred, are skipped. At each chunk boundary — and only there —
the runtime applies a pending hot-reload swap and pending operator commands. Everything leaves
through a non-blocking transport: segments every `segment_steps`, a `Correction` per takeover, a
`RewardSignal` per episode, a `Heartbeat` every `heartbeat_interval_s` from its own thread.

Over 400 lines because the control loop and what happens at its chunk boundaries (hot-reload swap, operator
commands, supervisor hand-over, segment flush) share one tick's state; apart, that state would cross modules every
tick.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from actors.priority import check_niceness
from actors.reload import HotReloader
from actors.supervisor import Supervisor
from actors.ticks import GC_PAUSES, freeze_heap, thread_usage, usage_delta
from fleet.chunks import EXECUTE_STEPS, PREFETCH_STEPS, ChunkSchedule
from fleet.client.episode import EpisodeStream
from fleet.naming import version_number
from fleet.policy.base import Observation, Policy
from fleet.schemas import Command, Heartbeat, LoopStats, Message

log = logging.getLogger(__name__)

Publish = Callable[[Message], Any]


class RobotEnv(Protocol):
    """What the control loop needs of a robot's environment: a simulator (`fleet.sim.base.Env`) or a real robot's
    driver (docs/real-robot.md). One that holds resources may also have `close()`, called when it is put away."""

    @property
    def instruction(self) -> str: ...  # what the current episode asks, in words

    def reset(self, *, seed: int | None = None) -> tuple[Any, dict[str, Any]]: ...

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]: ...


@dataclass(frozen=True)
class RobotConfig:
    """One robot's control loop."""

    robot_id: str  # stable id: Kafka key, DB key, dashboard row
    embodiment: str  # key of fleet.embodiments.EMBODIMENTS
    task: str  # task id this robot works on (operators may reassign)
    # Tasks the robot works through, one episode each in turn, starting at `task` (a cell given several jobs;
    # needs an env factory). Empty: `task` only. An operator's assign_task ends the rotation.
    task_rotation: tuple[str, ...] = ()
    scenario: str = "nominal"  # deployment conditions of a simulated robot's scenes (fleet.sim.scenarios)
    control_hz: float = 10.0  # tick rate
    realtime: bool = False  # sleep to the tick deadline (real robots, demos); off = as fast as the sim runs
    # Wall-clock seconds per second of a simulated robot's clock (real time only; 1 for a real robot). A simulated
    # fleet that shares its machine with the learner takes the CPU that robots with their own computers would leave
    # the learner: four real-time robots took 1.6 of this machine's 2 cores and left the learner a tenth of one
    # (docs/research.md). At 2 the ticks come at half the wall rate; the robot's episodes, steps and chunk schedule
    # are unchanged, and fleet time is wall time / time_scale.
    time_scale: float = 1.0
    segment_steps: int = 10  # steps per TrajectorySegment (1 s at 10 Hz)
    # The chunk schedule (fleet.chunks, where it is measured; every evaluation uses the same).
    execute_steps: int | None = EXECUTE_STEPS  # actions executed per chunk before re-planning (None = whole chunk)
    prefetch_steps: int = PREFETCH_STEPS  # start inferring the next chunk this many steps before the current one ends
    heartbeat_interval_s: float = 1.0  # heartbeat period
    seed: int = 0  # episode seeds are seed * 100_000 + episode index
    reload_delay_s: float = 0.0  # wait after a new-version event before fetching it (ReloadConfig.event_delay_s)
    # Niceness of the process that hosts a real-time robot (actors.priority; the sim fleet's Ray actors): below 0
    # its ticks go ahead of the learner, the broker and other work on a shared machine. Needs CAP_SYS_NICE or an
    # RLIMIT_NICE allowance, else the robot warns and keeps its priority. Not applied when `realtime` is off: a
    # robot running as fast as the sim goes is batch work itself.
    niceness: int = -5

    def __post_init__(self) -> None:
        if self.control_hz <= 0 or self.segment_steps <= 0 or self.prefetch_steps < 0:
            raise ValueError("control_hz and segment_steps must be positive, prefetch_steps >= 0")
        if self.reload_delay_s < 0:
            raise ValueError("reload_delay_s must be >= 0")
        if self.time_scale < 1.0:
            raise ValueError(f"time_scale must be >= 1 (wall seconds per robot second), got {self.time_scale}")
        if self.task_rotation and self.task not in self.task_rotation:
            raise ValueError(f"task {self.task!r} is not in task_rotation {self.task_rotation}")
        check_niceness(self.niceness)


def _new_window() -> dict[str, Any]:
    return {"ticks": 0, "missed": 0, "ms": []}


@dataclass
class EpisodeResult:
    episode_id: str
    steps: int
    success: bool
    interventions: int
    model_version: str | None
    finished_at: float = 0.0  # wall clock when the episode ended
    started_at: float = 0.0  # wall clock when it began (after the env reset)
    task: str = ""  # the task it ran


class RobotRuntime:
    """Runs episodes on one robot; see the module docstring."""

    def __init__(
        self,
        config: RobotConfig,
        *,
        env: RobotEnv,
        policy: Policy,
        model_version: str | None,
        publish: Publish,
        reloader: HotReloader | None = None,
        supervisor: Supervisor | None = None,
        spooled: Callable[[], int] = lambda: 0,
        env_factory: Callable[[str], tuple[RobotEnv, Supervisor | None]] | None = None,
    ) -> None:
        self.config = config
        # Builds (env, supervisor) for another task when an operator reassigns the robot (None: fixed task).
        self.env_factory = env_factory
        self._env_task = config.task
        self.error: str | None = None
        self.env = env
        self.policy = policy
        self.version = model_version
        self.publish = publish
        self.reloader = reloader
        self.supervisor = supervisor
        self.spooled = spooled
        self.state = "starting"
        self.task = config.task
        rotation = list(config.task_rotation)
        start = rotation.index(config.task) if rotation else 0
        self._rotation = rotation[start:] + rotation[:start]  # the next episode's task is _rotation[episodes % n]
        self._parked: dict[str, tuple[RobotEnv, Supervisor | None]] = {}  # rotation: envs of the other tasks, kept
        self.instruction_override: str | None = None
        self.episode_id: str | None = None
        self.episodes = 0
        self.swaps: list[tuple[str, float]] = []  # (version, time) of each applied swap
        self.intervening = False  # the supervisor drove the latest step
        self.last_obs: Observation | None = None  # latest observation (warms up a standby policy)
        self.ticks_total = 0  # control ticks run since start
        self.missed_total = 0  # ticks that overran their deadline since start (real-time mode)
        # The latest missed ticks: {"at": wall-clock time, "late_ms": how late the tick started, "work_ms": its
        # own run time, "waited_ms": of that, waiting for its next chunk, "gc_ms": garbage-collector pauses in it,
        # "reload_ms": {reloader step: ms it ran beside the tick}, and the control thread's own counters over the
        # tick (_usage_delta: CPU time of the thread and of the process, times the thread blocked and was
        # preempted, major page faults): work_ms >> cpu_ms means the thread waited rather than worked}
        self.missed_log: deque[dict[str, Any]] = deque(maxlen=1000)
        self._waited_ms = 0.0  # ms the current tick waited for an inference to finish
        self._tick_usage = thread_usage()  # the control thread's counters when the current tick started
        self.segments_total = 0  # trajectory segments published since start
        self.recent: deque[EpisodeResult] = deque(maxlen=1000)  # latest finished episodes
        self.successes_total = 0  # successful episodes since start
        self.interventions_total = 0  # supervisor-driven steps since start
        self._commands: list[Command] = []
        self._commands_lock = threading.Lock()
        self.pending_command: str | None = None
        self.applied_command: str | None = None
        self._window: dict[str, Any] = _new_window()
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{config.robot_id}")
        self._hb_thread: threading.Thread | None = None
        self._heap_frozen = False  # freeze_heap() done (real time: once, before the first control tick)
        # Real time: monotonic end of the sleep the control loop is in (0 outside one), for `wait_for_slack`.
        self._slack = threading.Condition()
        self._slack_until = 0.0

    # ---- commands and heartbeats ------------------------------------------------------------------
    def submit_command(self, command: Command) -> None:
        """Queue an operator command (from the commands consumer); applied at the next chunk boundary."""
        with self._commands_lock:
            self._commands.append(command)
            self.pending_command = command.command_id

    def _apply_commands(self) -> None:
        with self._commands_lock:
            commands, self._commands = self._commands, []
        for command in commands:
            if command.action == "pause":
                self.state = "paused"
            elif command.action == "resume":
                self.state = "running"
            elif command.action == "stop":
                self.state = "stopped"
                self._stop.set()
            elif command.action == "out_of_rotation":
                self.state = "out_of_rotation"
            elif command.action == "assign_task":
                task = command.task_id or self.task
                if task != self._env_task and self.env_factory is None:
                    self.error = f"cannot switch to task {task!r}: this robot has no env factory"
                    log.error("assign_task refused", extra={"robot": self.config.robot_id, "task": task})
                else:
                    self.task = task  # the env follows at the next episode start
                    self.instruction_override = command.instruction  # checked against the scene there
                    self.error = None  # a new assignment supersedes an earlier refusal
                    self._end_rotation()
            self.applied_command = command.command_id
            log.info(
                "command applied",
                extra={"robot": self.config.robot_id, "episode": self.episode_id, "command": command.action},
            )
        with self._commands_lock:
            if not self._commands:
                self.pending_command = None

    def _check_instruction(self) -> None:
        """An operator's instruction the scene cannot satisfy (a colour nothing on the table has, an object it does
        not hold) is refused, with the reason in the heartbeat, instead of run: the policy would act on anything."""
        check = getattr(self.env, "check_instruction", None)  # a real robot's driver may have its own, or none
        if not self.instruction_override or check is None:
            return
        reason = check(self.instruction_override)
        if reason is None:
            return
        self.error = f"instruction {self.instruction_override!r} refused: {reason}"
        log.error(
            "instruction refused",
            extra={"robot": self.config.robot_id, "episode": self.episode_id, "reason": reason},
        )
        self.instruction_override = None

    def metrics(self) -> dict[str, Any]:
        """The runtime's own counters, as `fleet.observability.watch_robots` exports them (and the actor status)."""
        stats = getattr(self.reloader, "stats", None)
        return {
            "robot_id": self.config.robot_id,
            "version": self.version,
            "episodes": self.episodes,
            "ticks": self.ticks_total,
            "missed_ticks": self.missed_total,
            "segments": self.segments_total,
            "spooled": self.spooled(),
            "reload_seconds": list(getattr(stats, "load_seconds", ())),
            "reloads_refused": len(getattr(stats, "refused", ())),
        }

    def heartbeat(self) -> Heartbeat:
        w, self._window = self._window, _new_window()
        ms = np.asarray(w["ms"][-10_000:] or [0.0])
        return Heartbeat(
            robot_id=self.config.robot_id,
            embodiment=self.config.embodiment,
            state=self.state,  # type: ignore[arg-type]
            model_version=self.version,
            channel=getattr(self.reloader, "channel", None),
            task_id=self.task,
            episode_id=self.episode_id,
            sent_at=time.time(),
            loop=LoopStats(
                control_hz=self.config.control_hz,
                ticks=int(w["ticks"]),
                missed_ticks=int(w["missed"]),
                tick_ms_p50=float(np.percentile(ms, 50)),
                tick_ms_p99=float(np.percentile(ms, 99)),
                tick_ms_max=float(ms.max()),
            ),
            pending_command_id=self.pending_command,
            applied_command_id=self.applied_command,
            spooled_messages=self.spooled(),
            intervening=self.intervening,
            error=self.error or self._refused_model(),
        )

    def _refused_model(self) -> str | None:
        """The newest version the reloader refused, while the robot has not moved past it (shown in the dashboard)."""
        refused = getattr(getattr(self.reloader, "stats", None), "refused", None)
        if not refused:
            return None
        version, reason = next(reversed(refused.items()))
        if _rank(version) <= _rank(self.version):
            return None
        return f"refused model v{version}: {reason}; still acting on v{self.version}"[:500]

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.config.heartbeat_interval_s):
            self.publish(self.heartbeat())
        self.publish(self.heartbeat())

    # ---- the loop ---------------------------------------------------------------------------------
    def run(self, *, episodes: int | None = None, stop: threading.Event | None = None) -> list[EpisodeResult]:
        """Run episodes until `episodes` are done, `stop` is set, or a stop command arrives."""
        self.state = "running"
        self._hb_thread = threading.Thread(target=self._heartbeats, name=f"hb-{self.config.robot_id}", daemon=True)
        self._hb_thread.start()
        results: list[EpisodeResult] = []
        try:
            while not self._stop.is_set() and (episodes is None or len(results) < episodes):
                if stop is not None and stop.is_set():
                    break
                self._apply_commands()
                if self.state in ("paused", "out_of_rotation"):
                    self._maybe_swap()
                    time.sleep(0.05)
                    continue
                result = self.run_episode()
                results.append(result)
                self.recent.append(result)
                self.successes_total += result.success
                self.interventions_total += result.interventions
        finally:
            self.state = "stopped"
            self._stop.set()
            self._hb_thread.join(timeout=5)
            self._executor.shutdown(wait=False)
        return results

    def _maybe_swap(self) -> None:
        if self.reloader is None:
            return
        swap = self.reloader.take_ready()
        if swap is not None:
            self.policy, self.version = swap.policy, swap.version
            self.swaps.append((swap.version, time.time()))
            log.info(
                "swapped", extra={"robot": self.config.robot_id, "episode": self.episode_id, "version": swap.version}
            )

    def _infer(self, obs: Observation) -> Future[np.ndarray]:
        policy, version = self.policy, self.version
        return self._executor.submit(lambda: (np.asarray(policy.infer(obs), dtype=np.float32), version))  # type: ignore[arg-type,return-value]

    def run_episode(self) -> EpisodeResult:
        """One episode: the control loop, one action a tick, a new chunk inferred ahead of need."""
        cfg = self.config
        obs, stream = self._begin_episode()
        started_at = time.time()
        step = 0
        success = done = False
        period = cfg.time_scale / cfg.control_hz  # wall seconds per tick
        self._maybe_swap()
        chunk, chunk_version = self._infer(obs).result()
        if cfg.realtime and not self._heap_frozen:  # after the first inference: the language model is loaded by then
            freeze_heap()
            GC_PAUSES.install()
            self._heap_frozen = True
        schedule = ChunkSchedule(cfg.execute_steps, cfg.prefetch_steps)  # the evaluations' schedule too
        schedule.start(chunk)
        pending = None  # the next chunk's inference, running in the worker thread
        next_tick = time.monotonic()
        while not done:
            tick_start = time.monotonic()
            if cfg.realtime:  # only a real-time tick can miss its deadline and report these counters
                self._tick_usage = thread_usage()
            if schedule.exhausted:
                if pending is None:
                    pending = self._infer(obs)
                    schedule.requested()
                waiting = time.monotonic()
                chunk, chunk_version = pending.result()
                self._waited_ms = (time.monotonic() - waiting) * 1000
                pending = None
                schedule.start(chunk)
            if pending is None and schedule.due:
                self._apply_commands()
                self._maybe_swap()  # chunk boundary for inference: the next chunk comes from the new version
                pending = self._infer(obs)
                schedule.requested()
            action = schedule.take()
            human = self.supervisor.step(obs, action) if self.supervisor is not None else None
            self.intervening = human is not None
            stream.act(
                obs["images"], obs["proprio"], action if human is None else human, version=chunk_version,
                human=human is not None, reason=getattr(self.supervisor, "reason", ""), missed_ticks=self.missed_total,
            )  # fmt: skip
            next_obs, reward, terminated, truncated, info = self.env.step(action if human is None else human)
            step += 1
            done = bool(terminated or truncated)
            success = bool(info.get("success", False))
            if self.supervisor is not None and self.supervisor.stopped:  # StallStop: stuck, ended as a failure
                done, success = True, False
            obs = self._observe(next_obs)
            next_tick = self._tick(tick_start, period, next_tick)  # first: a segment holds its last step's tick
            stream.result(float(reward), done=done, success=success, missed_ticks=self.missed_total)
            if self._stop.is_set():
                break
        if pending is not None:
            pending.cancel()
        if self.supervisor is not None and done:
            self.supervisor.finish(success)  # what "struggling" judges the robot's next episodes of this task by
        stream.finish(chunk_version, success=success)
        self.segments_total += stream.segments
        log.info(
            "episode finished",
            extra={"robot": cfg.robot_id, "episode": self.episode_id, "version": chunk_version, "steps": step,
                   "success": success, "interventions": stream.interventions},
        )  # fmt: skip
        return EpisodeResult(stream.episode_id, step, success, stream.interventions, chunk_version, time.time(),
                             started_at, self.task or "")  # fmt: skip

    def _begin_episode(self) -> tuple[Observation, EpisodeStream]:
        """Next task (rotation), reset env, policy and supervisor; the first observation and the episode's stream."""
        cfg = self.config
        seed = cfg.seed * 100_000 + self.episodes
        self.episodes += 1
        self.episode_id = f"{cfg.robot_id}-{uuid.uuid4().hex[:10]}"
        if self._rotation:
            self.task = self._rotation[(self.episodes - 1) % len(self._rotation)]
        if self.task != self._env_task and self.env_factory is not None:
            self._switch_env(self.task)
        obs, _ = self.env.reset(seed=seed)
        self._check_instruction()
        self.policy.reset()
        if self.supervisor is not None:
            self.supervisor.reset()
        stream = EpisodeStream(
            self.publish, robot_id=cfg.robot_id, embodiment=cfg.embodiment, task=self.task,
            instruction=self.instruction_override or self.env.instruction, episode_id=self.episode_id,
            segment_steps=cfg.segment_steps, operator=getattr(self.supervisor, "name", "supervisor"),
            channel=lambda: getattr(self.reloader, "channel", None), missed_ticks=self.missed_total,
        )  # fmt: skip
        return self._observe(obs), stream

    def _switch_env(self, task: str) -> None:
        assert self.env_factory is not None
        try:
            parked = self._parked.pop(task, None)
            env, supervisor = parked if parked is not None else self.env_factory(task)
        except (KeyError, ValueError) as err:  # unknown task, or not one this embodiment can do
            self.error = f"cannot switch to task {task!r}: {err}"
            log.error("task switch refused", extra={"robot": self.config.robot_id, "task": task, "error": str(err)})
            self.task, self.instruction_override = self._env_task, None
            self._end_rotation()
            return
        old = (self.env, self.supervisor)
        if self._rotation:  # the robot comes back to this task: keep its env
            self._parked[self._env_task] = old
        elif hasattr(old[0], "close"):
            old[0].close()
        self.env, self.supervisor, self._env_task = env, supervisor, task
        self.error = None

    def _end_rotation(self) -> None:
        self._rotation = []
        for env, _ in self._parked.values():
            if hasattr(env, "close"):
                env.close()
        self._parked.clear()

    def _observe(self, obs: Observation) -> Observation:
        if self.instruction_override:
            obs = {**obs, "instruction": self.instruction_override}
        self.last_obs = obs
        return obs

    def wait_for_slack(self, need_s: float = 0.05, timeout_s: float = 1.0) -> None:
        """Block the calling (background) thread until the control loop sleeps with `need_s` left before its next tick.

        The reloader calls this before each of its steps (registry lookup, download, verify and load, warm-up), so
        their Python work runs while the loop sleeps between ticks instead of competing with a tick for the
        interpreter lock and the CPU: the missed ticks left around swaps (bench/latency.py) were ticks whose own
        work stretched from ~10 ms to ~100 ms while the robot loaded a version. Returns at once when the loop keeps
        no real-time deadlines, and after `timeout_s` in any case (between episodes the loop does not sleep).
        """
        if not self.config.realtime or self.state != "running":
            return
        with self._slack:
            self._slack.wait_for(lambda: self._slack_until - time.monotonic() >= need_s, timeout=timeout_s)

    def warm_up(self, policy: Policy) -> None:
        """One throw-away inference on the latest observation (called by the reloader's thread)."""
        if self.last_obs is not None:
            policy.infer(self.last_obs)

    def _tick(self, start: float, period: float, deadline: float) -> float:
        """Account for one tick (and in real time, sleep to its end); returns the next tick's start."""
        now = time.monotonic()
        elapsed_ms = (now - start) * 1000
        waited_ms, self._waited_ms = self._waited_ms, 0.0
        w = self._window
        w["ticks"] += 1
        self.ticks_total += 1
        w["ms"].append(elapsed_ms)
        end = deadline + period
        if not self.config.realtime:
            return now
        if now > end:
            w["missed"] += 1
            self.missed_total += 1
            self.missed_log.append(
                {"at": time.time(), "late_ms": round((start - deadline) * 1000, 1), "work_ms": round(elapsed_ms, 1),
                 "waited_ms": round(waited_ms, 1), "gc_ms": round(GC_PAUSES.within(deadline, now) * 1000, 1),
                 "reload_ms": self._reload_busy(deadline, now),
                 **usage_delta(self._tick_usage, thread_usage())}
            )  # fmt: skip
            return now  # resynchronise: one overrun is one missed tick, not a cascade
        with self._slack:
            self._slack_until = end
            self._slack.notify_all()
        time.sleep(end - now)
        self._slack_until = 0.0
        return end

    def _reload_busy(self, start: float, end: float) -> dict[str, float]:
        """Milliseconds of [start, end] each of the reloader's slow steps ran (HotReloader.busy_within), by step."""
        busy = getattr(self.reloader, "busy_within", None)
        return {name: round(s * 1000, 1) for name, s in busy(start, end).items()} if busy is not None else {}


def _rank(version: str | None) -> int:
    """Registry versions in order; anything else first."""
    number = version_number(version)
    return -1 if number is None else number
