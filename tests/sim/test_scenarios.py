"""Deployment scenarios: one registry, accepted by the env, the gate, the fleet, the learner and the demo."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import typer

from actors.sim_fleet import FleetConfig
from fleet.demo import DemoConfig
from fleet.sim import make_env
from fleet.sim.rollout import expert_rollout
from fleet.sim.scenarios import SCENARIOS, get_scenario
from learner.cli import learner_config
from learner.gate import EvalGate, GateConfig


def test_an_unknown_scenario_is_refused_everywhere_with_a_hint() -> None:
    with pytest.raises(KeyError, match="Did you mean 'far-reach'"):
        get_scenario("far-rech")
    with pytest.raises(KeyError, match="far-reach"):
        make_env("pick", "panda", scenario="far-rech")
    for build in (
        lambda: GateConfig(scenario="far-rech"),
        lambda: FleetConfig(scenario="far-rech"),
        lambda: DemoConfig(scenario="far-rech"),
    ):
        with pytest.raises(KeyError, match="Did you mean 'far-reach'"):
            build()
    with pytest.raises(typer.BadParameter) as error:
        learner_config("demo", scenario="far-rech")
    assert error.value.param_hint == "--scenario"


@pytest.mark.parametrize("task", ["pick", "push", "place"])
def test_far_reach_moves_objects_and_start_poses_outside_the_demonstrations_range(task: str) -> None:
    far, nominal = SCENARIOS["far-reach"], SCENARIOS["nominal"]
    positions: dict[str, list[np.ndarray]] = {"far-reach": [], "nominal": []}
    tools: dict[str, list[np.ndarray]] = {"far-reach": [], "nominal": []}
    for scenario in positions:
        env = make_env(task, "panda", seed=0, scenario=scenario)
        try:
            for seed in range(8):
                env.reset(seed=seed)
                state = env.privileged_state()
                positions[scenario] += [o.position for o in state.objects.values()]
                tools[scenario].append(state.ee_position)
        finally:
            env.close()
    far_x = np.array([p[0] for p in positions["far-reach"]])
    near_x = np.array([p[0] for p in positions["nominal"]])
    assert far_x.min() >= far.layout.x_range[0] - 0.1 and far_x.max() > nominal.layout.x_range[1]
    assert near_x.max() <= nominal.layout.x_range[1] + 0.1  # the tray's centre stays in range too
    assert far_x.mean() > near_x.mean() + 0.05
    assert np.mean([t[2] for t in tools["far-reach"]]) > np.mean([t[2] for t in tools["nominal"]]) + 0.03


def _start_states(task: str, embodiment: str, scenarios: tuple[str, ...], episodes: int) -> dict[str, list]:
    """Each scenario's first state of episodes (seeds 0..episodes-1), for comparing scenarios episode by episode."""
    states = {}
    for scenario in scenarios:
        env = make_env(task, embodiment, seed=0, scenario=scenario)
        try:
            states[scenario] = [(env.reset(seed=s), env.privileged_state())[1] for s in range(episodes)]
        finally:
            env.close()
    return states


def test_high_start_moves_only_the_tools_start_above_and_behind_the_demonstrations() -> None:
    states = _start_states("pick", "kuka", ("high-start", "nominal"), 8)
    high, nominal = states["high-start"], states["nominal"]
    # the same objects in the same places, episode for episode ...
    for h, n in zip(high, nominal, strict=True):
        assert {k: o.position.round(4).tolist() for k, o in h.objects.items()} == {
            k: o.position.round(4).tolist() for k, o in n.objects.items()
        }
    # ... the tool starting higher and nearer the base than any demonstration's start (0.52 +- 0.04, 0.22 +- 0.04)
    assert np.mean([s.ee_position[2] for s in high]) > np.mean([s.ee_position[2] for s in nominal]) + 0.05
    assert np.mean([s.ee_position[0] for s in high]) < np.mean([s.ee_position[0] for s in nominal]) - 0.05


def test_raised_bench_stands_the_same_scene_higher_and_judges_it_from_the_bench() -> None:
    bench = SCENARIOS["raised-bench"].layout.table_z
    assert bench > 0.03
    states = _start_states("place", "panda", ("raised-bench", "nominal"), 4)
    for raised, nominal in zip(states["raised-bench"], states["nominal"], strict=True):
        assert raised.table_z == bench and nominal.table_z == 0.0
        for name, obj in raised.objects.items():  # the same place on the table, the bench's height higher
            np.testing.assert_allclose(obj.position, nominal.objects[name].position + [0, 0, bench], atol=2e-3)
        np.testing.assert_allclose(raised.goal["tray"], nominal.goal["tray"] + [0, 0, bench], atol=1e-9)
        assert not raised.success and not nominal.success
    assert SCENARIOS["raised-bench"].tasks == ("pick", "place")


def test_the_nominal_scenario_is_the_default_env_bit_for_bit() -> None:
    plain, nominal = make_env("push", "kuka", seed=3), make_env("push", "kuka", seed=3, scenario="nominal")
    try:
        a, b = plain.reset(seed=5)[0], nominal.reset(seed=5)[0]
        assert all(np.array_equal(a["images"][c], b["images"][c]) for c in a["images"])
    finally:
        plain.close()
        nominal.close()


@pytest.mark.parametrize(
    ("scenario", "task"),
    [
        ("high-start", "push"),
        ("far-reach", "pick"),
        ("far-reach", "place"),
        ("new-task", "stack"),
        ("raised-bench", "pick"),
        ("raised-bench", "place"),
        ("raised-bench", "push"),
    ],
)
@pytest.mark.parametrize("embodiment", ["panda", "kuka"])
def test_the_scripted_supervisor_solves_every_scenario(scenario: str, task: str, embodiment: str) -> None:
    env = make_env(task, embodiment, seed=0, scenario=scenario)
    try:
        wins = [expert_rollout(env, seed=700 + k, robot_id="t", episode_id=f"e{k}").meta.success for k in range(3)]
    finally:
        env.close()
    assert all(wins), wins


def test_the_gate_fleet_learner_and_demo_take_the_scenario() -> None:
    gate = GateConfig(scenario="far-reach")
    assert EvalGate(gate).signature() != EvalGate(GateConfig()).signature()  # scores are compared per scenario
    robots = FleetConfig(n=3, scenario="far-reach").robots()
    assert {r.scenario for r in robots} == {"far-reach"}
    bench = learner_config("demo", scenario="raised-bench")
    assert bench.gate.scenario == "raised-bench" and bench.gate.tasks == ("pick", "place")  # the preset's it has
    new = learner_config("demo", scenario="new-task")
    assert new.gate.tasks == ("stack",)  # a new task: the scenario's own
    demo = DemoConfig(scenario="new-task")
    assert demo.fleet_tasks == ("stack",) and demo.seed_demos() == {"pick": 100, "push": 100, "place": 100, "stack": 20}
    assert demo.version_one is None  # the shipped version 1 never saw stacking: the demo trains one
    assert DemoConfig().fleet_tasks == ("pick", "place") and DemoConfig().version_one is not None
    assert DemoConfig(pretrain=True).version_one is None
    assert DemoConfig(embodiments=("panda", "sawyer")).version_one is None
    assert dataclasses.replace(DemoConfig(), tasks=("pick", "push")).seed_demos() == {"pick": 100, "push": 100}
    with pytest.raises(ValueError, match="PyBullet arms only"):
        make_env("mw-reach", "sawyer", scenario="far-reach")


def test_the_demo_s_robots_run_its_scenario_with_its_operator_on_options_fleet_robots_run_has() -> None:
    from typer.main import get_command

    from actors.cli import app
    from fleet.demo import _robots_service
    from fleet.settings import Settings

    argv = _robots_service(Settings(), DemoConfig()).argv
    given = argv[argv.index("run") + 1 :]
    assert given[given.index("--scenario") + 1] == "raised-bench"
    assert given[given.index("--takeover-rules") + 1] == "stall,struggling"
    assert float(given[given.index("--drive-below") + 1]) == DemoConfig().drive_below < 1.0
    command = get_command(app)
    run = command.commands["run"] if hasattr(command, "commands") else command  # one command: typer flattens the app
    known = {opt for param in run.params for opt in param.opts}
    assert {a for a in given if a.startswith("--")} <= known
    with pytest.raises(ValueError, match="drive_below"):
        DemoConfig(drive_below=0.0)
