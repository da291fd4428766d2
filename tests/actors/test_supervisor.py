"""The simulated supervisor steps in when the task stops progressing, and leaves a working policy alone.

Real PyBullet sim and the real scripted expert; the "policies" are the expert itself (never wrong),
a policy that does nothing, and one that works on the wrong cube.
"""

from __future__ import annotations

import numpy as np
import pytest

from actors.supervisor import ExpertSupervisor, SupervisorConfig
from fleet.sim.experts import REMAINING, make_expert
from fleet.sim.registry import make_env

pytestmark = pytest.mark.timeout(120)
PAIRS = [(task, body) for task in ("pick", "push", "place") for body in ("panda", "kuka")]


def _run(env, supervisor: ExpertSupervisor, policy, seed: int) -> tuple[list[int], bool]:
    """One episode of `policy` under `supervisor`: the steps it drove, and whether the task succeeded."""
    obs, _ = env.reset(seed=seed)
    supervisor.reset()
    driven, done, info, t = [], False, {}, 0
    while not done:
        action = np.asarray(policy(obs), dtype=np.float32)
        human = supervisor.step(obs, action)
        if human is not None:
            driven.append(t)
            action = human
        obs, _, terminated, truncated, info = env.step(action)
        done, t = terminated or truncated, t + 1
    return driven, bool(info["success"])


@pytest.mark.parametrize(("task", "embodiment"), PAIRS)
def test_a_policy_that_gets_on_with_the_task_is_never_taken_over(task: str, embodiment: str) -> None:
    env = make_env(task, embodiment)
    try:
        supervisor, expert = ExpertSupervisor(env), make_expert(env, noise_std=0.1, seed=0)
        for seed in (0, 1):
            driven, success = _run(env, supervisor, expert, seed)
            assert success and driven == [], f"{task}/{embodiment} seed {seed}: took over at steps {driven}"
    finally:
        env.close()


@pytest.mark.parametrize("task", ["pick", "push", "place"])
def test_a_stuck_policy_is_taken_over_and_rescued(task: str) -> None:
    env = make_env(task, "panda")
    config = SupervisorConfig(stall_steps=10, takeover_steps=10)
    try:
        supervisor = ExpertSupervisor(env, config)
        still = np.zeros(env.embodiment.action_dim, dtype=np.float32)
        driven, _ = _run(env, supervisor, lambda obs: still, seed=3)
        assert driven[:10] == list(range(10, 20))  # the first stall window passes, then the human drives
    finally:
        env.close()


def test_working_on_the_wrong_cube_is_taken_over() -> None:
    """A policy that picks up the other cube makes no progress on the named one: the human steps in."""
    env = make_env("pick", "kuka")
    try:
        supervisor = ExpertSupervisor(env)
        wrong = make_expert(env)
        obs, _ = env.reset(seed=5)
        other = next(name for name in env.privileged_state().objects if name != env.privileged_state().target)
        env_state = env.privileged_state

        def wrong_policy(obs):  # the expert's plan, aimed at the other cube
            from dataclasses import replace

            return wrong.act_on_state(replace(env_state(), target=other))

        driven, success = _run(env, supervisor, wrong_policy, seed=5)
        assert driven and driven[0] <= 40 and success  # stepped in, and the rescue reached the named cube
    finally:
        env.close()


def test_remaining_distance_falls_along_an_expert_episode() -> None:
    for task in ("pick", "push", "place", "stack"):
        env = make_env(task, "panda")
        try:
            expert = make_expert(env)
            obs, _ = env.reset(seed=0)
            start = env.privileged_state()
            first, done, info = REMAINING[task](start, start), False, {}
            while not done:
                obs, _, terminated, truncated, info = env.step(expert(obs))
                done = terminated or truncated
            last = REMAINING[task](env.privileged_state(), start)
            assert info["success"] and first > 0.05 and last < 0.02, (task, first, last)
        finally:
            env.close()


def test_supervisor_and_gate_share_one_notion_of_stuck() -> None:
    from fleet.sim.experts import PROGRESS, STALL_STEPS

    config = SupervisorConfig()
    assert (config.stall_steps, config.progress) == (STALL_STEPS, PROGRESS)


def test_the_watch_counts_the_steps_since_the_task_last_progressed() -> None:
    from fleet.sim.experts import STALL_STEPS, ProgressWatch

    env = make_env("pick", "panda")
    try:
        env.reset(seed=0)
        still = env.privileged_state()  # the same state every step: no progress after the first
        watch = ProgressWatch("pick")
        assert not watch.update(still) and watch.idle == 0
        stuck = [watch.update(still) for _ in range(STALL_STEPS)]
        assert watch.idle == STALL_STEPS and stuck[-1] and not any(stuck[:-1])
        watch.restart()
        assert watch.idle == 0
    finally:
        env.close()


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="stall_steps"):
        SupervisorConfig(stall_steps=0)


def _wrong_cube(env):
    """A policy that works on the other cube (the expert's plan aimed at it)."""
    from dataclasses import replace

    expert = make_expert(env)
    state = env.privileged_state

    def policy(obs):
        other = next(name for name in state().objects if name != state().target)
        return expert.act_on_state(replace(state(), target=other))

    return policy


def test_the_regress_rule_steps_in_before_the_stall_and_says_why() -> None:
    env = make_env("pick", "kuka")
    try:
        stall = ExpertSupervisor(env)
        late, _ = _run(env, stall, _wrong_cube(env), seed=5)
        assert stall.reason.startswith("stall: no progress for 10 steps")
        early = ExpertSupervisor(env, SupervisorConfig(rules=("stall", "regress"), regress=0.02))
        driven, success = _run(env, early, _wrong_cube(env), seed=5)
        assert driven[0] < late[0] and success, (driven[0], late[0])
        assert early.reason.startswith("regress: ") and "cm farther from the goal" in early.reason
    finally:
        env.close()


def test_the_deviate_rule_steps_in_while_the_robot_heads_for_the_wrong_place_and_leaves_the_expert_alone() -> None:
    env = make_env("pick", "kuka")
    try:
        regress = ExpertSupervisor(env, SupervisorConfig(rules=("stall", "regress")))
        late, _ = _run(env, regress, _wrong_cube(env), seed=5)
        deviate = ExpertSupervisor(env, SupervisorConfig(rules=("stall", "deviate")))
        driven, success = _run(env, deviate, _wrong_cube(env), seed=5)
        assert driven[0] < late[0] and success, (driven[0], late[0])
        assert deviate.reason.startswith("deviate: 3 steps")
        watching = ExpertSupervisor(env, SupervisorConfig(rules=("stall", "deviate")))
        expert = make_expert(env)
        driven, success = _run(env, watching, lambda obs: expert.act_on_state(env.privileged_state()), seed=5)
        assert driven == [] and success  # moving as the operator would: never taken over
    finally:
        env.close()
    with pytest.raises(ValueError, match="deviation must be > 0"):
        SupervisorConfig(deviation=0.0)


def _beside_cube(env, offset: float = 0.06):
    """A policy that lines up and comes down `offset` metres beside the cube (the expert's plan for a moved cube)."""
    from dataclasses import replace

    expert = make_expert(env)

    def policy(obs):
        state = env.privileged_state()
        cube = state.objects[state.target]
        moved = replace(cube, position=cube.position + np.array([offset, 0.0, 0.0]))
        return expert.act_on_state(replace(state, objects={**state.objects, state.target: moved}))

    return policy


def test_the_misaligned_rule_steps_in_as_the_tool_comes_down_beside_the_cube() -> None:
    env = make_env("pick", "panda")
    try:
        stall = ExpertSupervisor(env, SupervisorConfig(rules=("stall",)))
        late, _ = _run(env, stall, _beside_cube(env), seed=2)
        misaligned = ExpertSupervisor(env, SupervisorConfig(rules=("stall", "misaligned")))
        driven, success = _run(env, misaligned, _beside_cube(env), seed=2)
        assert success and driven and (not late or driven[0] < late[0]), (driven, late)
        assert misaligned.reason.startswith("misaligned: 3 steps")
    finally:
        env.close()


@pytest.mark.parametrize(("task", "embodiment"), PAIRS)
def test_the_misaligned_rule_leaves_a_policy_that_lines_up_first_alone(task: str, embodiment: str) -> None:
    env = make_env(task, embodiment)
    try:
        supervisor = ExpertSupervisor(env, SupervisorConfig(rules=("stall", "misaligned")))
        expert = make_expert(env, noise_std=0.1, seed=0)
        for seed in (0, 1):
            driven, success = _run(env, supervisor, expert, seed)
            assert success and driven == [], f"{task}/{embodiment} seed {seed}: took over at steps {driven}"
    finally:
        env.close()


def _episodes(env, supervisor: ExpertSupervisor, policy, n: int) -> list[tuple[list[int], bool, str]]:
    """`n` episodes in a row, the supervisor told each outcome (as the robot runtime tells it), with its reason."""
    results = []
    for seed in range(n):
        driven, success = _run(env, supervisor, policy, seed)
        supervisor.finish(success)
        results.append((driven, success, supervisor.reason))
    return results


def test_the_struggling_rule_drives_whole_episodes_of_a_failing_robot_and_none_of_a_good_one() -> None:
    env = make_env("pick", "panda")
    still = np.zeros(env.embodiment.action_dim, dtype=np.float32)
    config = SupervisorConfig(rules=("struggling",), window=3)
    try:
        failing = ExpertSupervisor(env, config)
        results = _episodes(env, failing, lambda obs: still, 12)
        whole = [bool(driven) and driven[0] == 0 and success for driven, success, _ in results]
        assert 6 <= sum(whole) <= 11, whole  # up to max_drive (3 in 4) once it has failed
        assert failing.own_success == 0.0
        last = len(whole) - 1 - whole[::-1].index(True)
        assert results[last][2].startswith("struggling: 0% of its last episodes"), results[last]
        good = ExpertSupervisor(env, config)
        expert = make_expert(env)
        results = _episodes(env, good, lambda obs: expert.act_on_state(env.privileged_state()), 8)
        first_own = next(k for k, (driven, _, _) in enumerate(results) if driven == [])
        assert all(driven == [] and success for driven, success, _ in results[first_own:]), results
    finally:
        env.close()
    with pytest.raises(ValueError, match="prior must be in"):
        SupervisorConfig(prior=1.5)
    with pytest.raises(ValueError, match="max_drive in"):
        SupervisorConfig(max_drive=1.0)


def test_the_struggling_rule_stops_driving_once_the_robot_succeeds_often_enough() -> None:
    """drive_below: a robot at 2 of 3 on its own is driven about a third of its episodes by default and in none once
    the threshold is at or below its success; the other rules are unaffected (the episode stays the robot's)."""
    env = make_env("pick", "panda")
    try:
        driven = {}
        for drive_below in (1.0, 0.6):
            config = SupervisorConfig(rules=("stall", "struggling"), window=3, prior=1.0, drive_below=drive_below)
            supervisor = ExpertSupervisor(env, config)  # prior 1.0: its first episode is its own
            for success in (True, False, True):
                supervisor.finish(success)
            assert supervisor.own_success == pytest.approx(2 / 3)
            draws = []
            for _ in range(300):
                supervisor.reset()
                draws.append(supervisor.reason.startswith("struggling: 67%"))
            driven[drive_below] = sum(draws)
        assert 60 <= driven[1.0] <= 140, driven  # 1 - 2/3 of 300
        assert driven[0.6] == 0, driven
    finally:
        env.close()
    with pytest.raises(ValueError, match="drive_below in"):
        SupervisorConfig(drive_below=0.0)


def test_the_human_hands_back_once_the_robot_is_on_track() -> None:
    env = make_env("pick", "panda")
    still = np.zeros(env.embodiment.action_dim, dtype=np.float32)
    try:
        fixed, _ = _run(env, ExpertSupervisor(env, SupervisorConfig(takeover_steps=10)), lambda obs: still, seed=3)
        config = SupervisorConfig(takeover_steps=10, handback_progress=0.03)
        early, _ = _run(env, ExpertSupervisor(env, config), lambda obs: still, seed=3)
        assert fixed[:10] == list(range(10, 20))
        first = [t for t in early if t < 20]
        assert first[0] == 10 and len(first) < 10, early  # handed back after ~3 cm of progress, not 10 steps
    finally:
        env.close()


def test_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="rules must name some of"):
        SupervisorConfig(rules=("panic",))
    with pytest.raises(ValueError, match="regress and deviation must be > 0"):
        SupervisorConfig(regress=0.0)


def test_a_fleet_hands_its_supervision_settings_to_every_robot() -> None:
    from dataclasses import asdict

    from actors.sim_fleet import FleetConfig

    fleet = FleetConfig(takeover_rules=("stall", "regress"), correct_in_place=True)
    config = SupervisorConfig.from_dict(asdict(fleet.supervisor_config()) | {"rules": ["stall", "regress"]})
    assert config == SupervisorConfig(rules=("stall", "regress"), correct_in_place=True)
    env = make_env("pick", "panda")
    try:
        assert ExpertSupervisor(env, config).expert is not None
    finally:
        env.close()
    with pytest.raises(ValueError, match="rules must name"):
        FleetConfig(takeover_rules=("panic",))
