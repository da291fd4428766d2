"""The control loop on the real simulator: segments, corrections, rewards, swaps and commands.

Messages go to an in-memory list (the transport's own tests cover Kafka); the env is the real
PyBullet sim, the supervisor the real scripted expert.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from actors.runtime import RobotConfig, RobotRuntime
from actors.supervisor import ExpertSupervisor, make_supervisor
from actors.ticks import CollectorPauses
from fleet.schemas import Command, Correction, Heartbeat, RewardSignal, TrajectorySegment, decode, encode
from fleet.sim.registry import make_env

pytestmark = pytest.mark.timeout(120)


class ZeroPolicy:
    """Never moves: the supervisor must see it stall and take over."""

    def __init__(self, action_dim: int, horizon: int = 8) -> None:
        self.chunk = np.zeros((horizon, action_dim), dtype=np.float32)

    def infer(self, obs: dict[str, Any]) -> np.ndarray:
        return self.chunk

    def reset(self) -> None:
        pass


@dataclass
class ReadySwap:
    version: str
    sha256: str
    policy: Any
    ready_at: float = 0.0
    load_s: float = 0.0


class OneSwap:
    """A reloader whose standby slot holds one new version after `after` checks (from the canary alias)."""

    channel = "canary"

    def __init__(self, swap: ReadySwap, after: int) -> None:
        self.swap, self.after, self.calls = swap, after, 0

    def take_ready(self) -> ReadySwap | None:
        self.calls += 1
        if self.calls == self.after:
            return self.swap
        return None


def _runtime(
    messages: list, *, policy: Any, supervision: str = "takeover", reloader: Any = None, **config: Any
) -> RobotRuntime:
    """A robot on the real sim; `config` overrides RobotConfig fields (e.g. realtime, control_hz)."""
    env = make_env("pick", "panda", seed=3)
    config = RobotConfig(
        robot_id="r1", embodiment="panda", task="pick", segment_steps=10, heartbeat_interval_s=0.2, **config
    )
    return RobotRuntime(
        config,
        env=env,
        policy=policy,
        model_version="1",
        publish=lambda m: messages.append(decode(encode(m))),  # through the wire format
        reloader=reloader,
        supervisor=make_supervisor(env, supervision),
    )


def test_supervisor_takes_over_a_stalled_policy_and_every_step_is_streamed() -> None:
    messages: list = []
    results = _runtime(messages, policy=ZeroPolicy(4)).run(episodes=2)
    segments = [m for m in messages if isinstance(m, TrajectorySegment)]
    corrections = [m for m in messages if isinstance(m, Correction)]
    rewards = [m for m in messages if isinstance(m, RewardSignal)]
    assert len(rewards) == 2 and [r.success for r in rewards] == [r.success for r in results]
    assert any(m for m in messages if isinstance(m, Heartbeat))
    # each episode's span on the wall clock (bench/online.py orders episodes by their start)
    assert 0 < results[0].started_at <= results[0].finished_at <= results[1].started_at <= results[1].finished_at
    for result in results:
        mine = [s for s in segments if s.episode_id == result.episode_id]
        assert [s.segment_index for s in mine] == list(range(len(mine)))
        assert [s.step_start for s in mine] == list(np.cumsum([0] + [len(s.actions) for s in mine[:-1]]))
        assert sum(len(s.actions) for s in mine) == result.steps
        assert [s.done for s in mine] == [False] * (len(mine) - 1) + [True]
        mask = np.concatenate([s.intervention for s in mine])
        assert mask.sum() == result.interventions > 0  # a policy that never moves gets corrected
        # every intervention step is in exactly one Correction, with the human's actions
        steps = np.concatenate([s.actions for s in mine])
        covered = np.zeros_like(mask)
        for c in (c for c in corrections if c.episode_id == result.episode_id):
            span = slice(c.step_start, c.step_start + len(c.actions))
            assert not covered[span].any()
            covered[span] = True
            np.testing.assert_array_equal(steps[span], c.actions)
        np.testing.assert_array_equal(covered, mask)
    # the supervisor (scripted expert) rescues the episode
    assert all(r.success for r in results)


def test_without_teleoperation_a_stalled_episode_is_ended_as_a_failure() -> None:
    """supervision="stop": nobody drives, but an episode stuck for the stall window ends there, unsuccessful,
    with its last segment marked done (the learner closes it) and no intervention anywhere."""
    messages: list = []
    runtime = _runtime(messages, policy=ZeroPolicy(4), supervision="stop")
    results = runtime.run(episodes=2)
    limit = runtime.env.max_steps
    segments = [m for m in messages if isinstance(m, TrajectorySegment)]
    rewards = [m for m in messages if isinstance(m, RewardSignal)]
    assert [r.success for r in rewards] == [r.success for r in results] == [False, False]
    assert not [m for m in messages if isinstance(m, Correction)]
    for result in results:
        assert result.interventions == 0 and 10 <= result.steps < 20 < limit  # stall window + the step it ends on
        mine = [s for s in segments if s.episode_id == result.episode_id]
        assert mine[-1].done and not mine[-1].success and sum(len(s.actions) for s in mine) == result.steps
        assert not np.concatenate([s.intervention for s in mine]).any()
    with pytest.raises(ValueError, match="supervision"):
        make_supervisor(runtime.env, "watch")


def test_swap_happens_at_a_chunk_boundary_and_splits_segments() -> None:
    messages: list = []
    new_policy = ZeroPolicy(4)
    runtime = _runtime(messages, policy=ZeroPolicy(4), reloader=OneSwap(ReadySwap("2", "ab", new_policy), after=3))
    runtime.run(episodes=1)
    segments = [m for m in messages if isinstance(m, TrajectorySegment)]
    versions = [s.model_version for s in segments]
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions == sorted(versions)  # one switch, never back
    first_new = next(s for s in segments if s.model_version == "2")
    # The robot re-plans every 2 steps and infers each chunk 2 steps ahead (skipping its 2 actions meant for
    # the steps already gone): chunks start at steps 2, 4, 6, ... The reloader is asked at the episode start,
    # then each time a chunk is inferred (steps 0, 2, ...): the third ask, at step 2, swaps, so the chunk
    # inferred there by version 2 acts from step 4 on.
    assert first_new.step_start == 4
    assert runtime.policy is new_policy and runtime.version == "2"
    # heartbeats and corrections say which alias the robot's version came from (a rollout's are tagged)
    tagged = [m.channel for m in messages if isinstance(m, Heartbeat | Correction)]
    assert tagged and set(tagged) == {"canary"}


def test_a_refused_checkpoint_shows_in_the_heartbeat_until_a_newer_version_is_live() -> None:
    from actors.reload import ReloadStats

    reloader = SimpleNamespace(stats=ReloadStats(refused={"3": "weights hold NaN"}), take_ready=lambda: None)
    runtime = _runtime([], policy=ZeroPolicy(4), reloader=reloader)
    beat = runtime.heartbeat()
    assert beat.error is not None and "refused model v3: weights hold NaN" in beat.error and "v1" in beat.error
    runtime.version = "4"  # a later good version went live: the refusal is history
    assert runtime.heartbeat().error is None


@contextmanager
def _running(
    runtime: RobotRuntime, *, until: Callable[[], bool], wait_s: float = 30.0, join_s: float = 10.0
) -> Iterator[threading.Thread]:
    """The runtime's control loop in a thread, once `until()` holds (or `wait_s` passed); stopped and joined on exit."""
    stop = threading.Event()
    loop = threading.Thread(target=runtime.run, kwargs={"stop": stop})
    try:
        loop.start()
        deadline = time.monotonic() + wait_s
        while not until() and time.monotonic() < deadline:
            time.sleep(0.01)
        yield loop
    finally:
        stop.set()
        loop.join(timeout=join_s)


def test_pause_command_is_applied_and_acknowledged_in_the_heartbeat() -> None:
    messages: list = []
    runtime = _runtime(messages, policy=ZeroPolicy(4), supervision="off")
    command = Command(command_id="c1", robot_id="r1", action="pause", issued_by="alice", created_at=time.time())
    runtime.submit_command(command)
    assert runtime.heartbeat().pending_command_id == "c1"
    with _running(runtime, until=lambda: runtime.state == "paused", wait_s=10, join_s=30) as thread:
        beat = runtime.heartbeat()
        assert beat.state == "paused" and beat.applied_command_id == "c1" and beat.pending_command_id is None
        episodes_while_paused = runtime.episodes
        time.sleep(0.5)
        assert runtime.episodes == episodes_while_paused  # a paused robot does not act
    assert not thread.is_alive()


def _panda_envs(built: list[str]) -> Any:
    """An env factory for a panda robot that notes each task it builds an env for."""

    def factory(task: str) -> tuple[Any, Any]:
        env = make_env(task, "panda", seed=1)
        built.append(task)
        return env, ExpertSupervisor(env)

    return factory


def test_assign_task_switches_the_env_at_the_next_episode_and_refuses_unknown_tasks() -> None:
    messages: list = []
    runtime = _runtime(messages, policy=ZeroPolicy(4))
    built: list[str] = []
    runtime.env_factory = factory = _panda_envs(built)
    now = time.time()
    runtime.submit_command(
        Command(command_id="a1", robot_id="r1", action="assign_task", task_id="push", issued_by="op", created_at=now)
    )
    runtime.run(episodes=1)
    segments = [m for m in messages if isinstance(m, TrajectorySegment)]
    assert built == ["push"] and {s.task_id for s in segments} == {"push"}
    assert "block" in segments[0].instruction  # a push phrasing (pick phrasings speak of cubes)

    refusing = _runtime([], policy=ZeroPolicy(4))
    refusing.env_factory = factory
    refusing.submit_command(
        Command(command_id="a2", robot_id="r1", action="assign_task", task_id="nope", issued_by="op", created_at=now)
    )
    refusing.run(episodes=1)
    assert refusing.task == "pick" and "nope" in (refusing.error or "")  # unknown task: keeps its own
    assert refusing.heartbeat().error == refusing.error


def test_an_instruction_the_scene_cannot_satisfy_is_refused_with_the_reason_and_not_run() -> None:
    def assign(instruction: str, task: str = "pick") -> tuple[RobotRuntime, list[TrajectorySegment]]:
        """A robot told `instruction` for `task`, after one episode."""
        messages: list = []
        runtime = _runtime(messages, policy=ZeroPolicy(4), supervision="off")
        runtime.env_factory = _panda_envs([])
        runtime.submit_command(Command(command_id="c-1", robot_id="r1", action="assign_task", task_id=task,
                                       instruction=instruction, issued_by="op", created_at=time.time()))  # fmt: skip
        runtime.run(episodes=2)  # the command lands during the first; the second starts with it
        return runtime, [m for m in messages if isinstance(m, TrajectorySegment)]

    runtime, segments = assign("pick up the orange cube")  # no scene paints anything orange
    assert runtime.error is not None and "refused: nothing orange on the table" in runtime.error
    assert runtime.heartbeat().error == runtime.error
    assert all("orange" not in s.instruction for s in segments)  # the episodes ran on the scene's own instruction
    assert runtime.instruction_override is None
    runtime, _ = assign("hand me the bottle please")
    assert runtime.error is not None and "no bottle on the table" in runtime.error
    runtime, segments = assign("lift up that cube")  # names nothing it can show to be wrong: run as said
    assert runtime.error is None and "lift up that cube" in {s.instruction for s in segments}
    runtime, _ = assign("reach the goal", task="mw-reach")  # a task this embodiment cannot do
    assert runtime.error is not None and "cannot switch to task 'mw-reach'" in runtime.error and runtime.task == "pick"


def test_a_rotating_robot_works_through_its_tasks_one_episode_each_and_an_assignment_ends_it() -> None:
    messages: list = []
    runtime = _runtime(messages, policy=ZeroPolicy(4), task_rotation=("push", "pick"))
    built: list[str] = []
    runtime.env_factory = _panda_envs(built)

    def tasks(results: list) -> list[str]:  # type: ignore[type-arg]
        by_episode = {m.episode_id: m.task_id for m in messages if isinstance(m, TrajectorySegment)}
        return [by_episode[r.episode_id] for r in results]

    assert tasks([runtime.run_episode() for _ in range(4)]) == ["pick", "push", "pick", "push"]  # from its own task
    assert built == ["push"]  # the pick env was parked, not rebuilt
    runtime.submit_command(
        Command(command_id="a", robot_id="r1", action="assign_task", task_id="push", issued_by="op", created_at=0)
    )
    runtime._apply_commands()
    assert tasks([runtime.run_episode() for _ in range(2)]) == ["push", "push"] and runtime._parked == {}
    with pytest.raises(ValueError, match="not in task_rotation"):
        RobotConfig(robot_id="r", embodiment="panda", task="place", task_rotation=("pick", "push"))


def test_robots_run_the_chunk_schedule_the_gate_and_eval_measure() -> None:
    """The robots' re-planning schedule is the one `fleet eval` and the learner's gate judge a policy by."""
    from fleet.recipe.evaluate import EXECUTE_STEPS, PREFETCH_STEPS, ChunkedController

    config = RobotConfig(robot_id="r1", embodiment="panda", task="pick")
    assert (config.execute_steps, config.prefetch_steps) == (EXECUTE_STEPS, PREFETCH_STEPS)
    controller = ChunkedController(ZeroPolicy(4))
    assert (controller.execute_steps, controller.prefetch_steps) == (EXECUTE_STEPS, PREFETCH_STEPS)


class FreezeProbe(ZeroPolicy):
    """Records, at each inference, how many objects the garbage collector has been told to skip."""

    def __init__(self, action_dim: int) -> None:
        super().__init__(action_dim)
        self.frozen_at_infer: list[int] = []

    def infer(self, obs: dict[str, Any]) -> np.ndarray:
        self.frozen_at_infer.append(gc.get_freeze_count())
        return self.chunk


@pytest.mark.parametrize("realtime", [True, False])
def test_a_real_time_robot_hides_its_start_up_heap_from_full_collections(realtime: bool) -> None:
    # Full collections walking torch/sim/language-model objects stalled the loop 0.3-0.66 s around swaps.
    # (tests/conftest.py unfreezes the heap after every test.)
    policy = FreezeProbe(4)
    _runtime([], policy=policy, supervision="off", control_hz=50.0, realtime=realtime).run(episodes=1)
    assert policy.frozen_at_infer[0] == 0  # the first inference (which loads the language model) comes first
    if realtime:
        assert min(policy.frozen_at_infer[1:]) > 0  # frozen before the first control tick
    else:
        assert max(policy.frozen_at_infer) == 0  # as fast as the sim runs: no deadlines, nothing to protect


def test_collector_pauses_are_attributed_to_the_interval_they_fall_in() -> None:
    pauses = CollectorPauses(min_s=0.0)
    pauses.install()
    pauses.install()  # once per process, however many robots ask
    try:
        assert gc.callbacks.count(pauses._callback) == 1
        before = time.monotonic()
        garbage = [[i] for i in range(300_000)]  # something for a full pass to walk
        gc.collect()
        after = time.monotonic()
        del garbage
        assert 0 < pauses.within(before, after) <= after - before
        assert pauses.within(before - 10, before - 5) == 0
    finally:
        gc.callbacks.remove(pauses._callback)


def test_a_slowed_clock_ticks_at_the_control_rate_over_the_time_scale() -> None:
    runtime = _runtime([], policy=ZeroPolicy(4), supervision="off", control_hz=20.0, realtime=True, time_scale=4.0)
    with _running(runtime, until=lambda: runtime.ticks_total >= 2):
        first, started = runtime.ticks_total, time.monotonic()
        time.sleep(1.0)
        ticks, elapsed = runtime.ticks_total - first, time.monotonic() - started
    # 20 Hz on a clock 4x slower: 5 ticks a wall second (a tick never comes early; unscaled it would be 20)
    assert 1 <= ticks <= 5 * elapsed + 1, (ticks, elapsed)
    with pytest.raises(ValueError, match="time_scale"):
        RobotConfig(robot_id="r", embodiment="panda", task="pick", time_scale=0.5)


def test_each_segment_carries_the_ticks_that_overran_while_it_was_recorded() -> None:
    """The canary compares missed ticks per episode: every overrun tick lands in one segment, none twice."""
    messages: list = []
    runtime = _runtime(messages, policy=ZeroPolicy(4), supervision="off", control_hz=20.0, realtime=True)
    step = runtime.env.step
    steps = 0

    def sometimes_slow(action: Any) -> Any:
        nonlocal steps
        steps += 1
        if steps % 7 == 3:
            time.sleep(0.08)  # longer than the 50 ms tick: that tick misses its deadline
        return step(action)

    runtime.env.step = sometimes_slow  # type: ignore[method-assign]
    runtime.run(episodes=1)
    segments = [m for m in messages if isinstance(m, TrajectorySegment)]
    per_segment = [s.missed_ticks for s in segments]
    assert runtime.missed_total >= steps // 7 and sum(per_segment) == runtime.missed_total, (per_segment, steps)
    assert sum(1 for n in per_segment if n > 0) >= 2  # spread over the episode, not one lump


def test_background_work_waits_for_the_sleep_between_ticks() -> None:
    runtime = _runtime([], policy=ZeroPolicy(4), supervision="off", control_hz=10.0, realtime=True)
    with _running(runtime, until=lambda: runtime.ticks_total >= 3):
        left = []
        for i in range(10):
            time.sleep(0.013 * i)  # arrive at different phases of the tick
            runtime.wait_for_slack(need_s=0.06)
            left.append(runtime._slack_until - time.monotonic())  # time before the loop's next tick
        # Inside a sleep with (nearly) the asked-for slack left; arriving at random, half would have < 45 ms.
        assert sum(t > 0.045 for t in left) >= 9, left
    started = time.monotonic()
    runtime.wait_for_slack(timeout_s=5.0)  # stopped: nothing to wait for
    assert time.monotonic() - started < 1.0
