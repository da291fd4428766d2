"""The canary's cohort and its live A/B (`fleet.canary`): who runs the canary, and when the numbers decide."""

from __future__ import annotations

import dataclasses
import random

import pytest

from fleet.canary import (
    COHORT_TAG,
    CanaryPolicy,
    Cohort,
    Comparison,
    EpisodeOutcome,
    compare,
    decide,
)

ROBOTS = [f"robot-{i}" for i in range(8)]


def test_a_fraction_of_the_known_fleet_is_exactly_that_many_robots_and_each_rollout_draws_its_own() -> None:
    drawn = []
    for version in ("2", "3", "4", "5", "6"):
        cohort = Cohort.for_fleet(version, fraction=0.25, known=ROBOTS)
        members = {r for r in ROBOTS if cohort.includes(r)}
        assert len(members) == 2
        drawn.append(frozenset(members))
    assert len(set(drawn)) > 1  # the version salts the draw: not the same two robots every time
    assert sum(Cohort.for_fleet("2", fraction=0.01, known=ROBOTS).includes(r) for r in ROBOTS) == 1  # at least one
    assert all(Cohort.for_fleet("2", fraction=1.0, known=ROBOTS).includes(r) for r in [*ROBOTS, "newcomer"])


def test_named_robots_are_in_whatever_the_fraction_and_the_cohort_survives_the_registry_tag() -> None:
    cohort = Cohort.for_fleet("7", robots=["robot-3", "robot-3", "robot-5"], known=ROBOTS)
    assert cohort.robots == ("robot-3", "robot-5")
    assert [r for r in ROBOTS if cohort.includes(r)] == ["robot-3", "robot-5"]
    assert Cohort.from_tags(cohort.to_tags()) == cohort
    mixed = Cohort.for_fleet("7", fraction=0.25, robots=["robot-3"], known=ROBOTS)
    assert sum(mixed.includes(r) for r in ROBOTS) == 1 + 2  # the named one plus a quarter of the other seven, rounded


def test_a_cohort_that_tests_nothing_or_cannot_be_stored_is_refused_and_an_unreadable_tag_joins_no_robot() -> None:
    with pytest.raises(ValueError, match="empty canary"):
        Cohort.for_fleet("2", known=ROBOTS)
    with pytest.raises(ValueError, match="fraction"):
        Cohort.for_fleet("2", fraction=1.5, known=ROBOTS)
    with pytest.raises(ValueError, match="registry tag"):
        Cohort.for_fleet("2", robots=[f"robot-{i:05d}" for i in range(1000)])
    assert Cohort.from_tags({}) is None
    assert Cohort.from_tags({COHORT_TAG: "{not json"}) is None
    assert Cohort.from_tags({COHORT_TAG: '{"salt": "2", "threshold": 7}'}) is None


def _episodes(rng: random.Random, version: str, n: int, p_success: float, interventions: float) -> list[EpisodeOutcome]:
    out = []
    for _ in range(n):
        success = rng.random() < p_success
        steps = 0 if success else max(0, round(rng.gauss(interventions / (1 - p_success), 2.0)))
        out.append(EpisodeOutcome(version, success=success, interventions=steps, length=rng.randint(20, 60)))
    return out


def _first_decision(rng: random.Random, p_canary: float, p_production: float, *, looks: int = 20, per_look: int = 20):
    """Interleave episodes as a 25% canary fleet makes them (1 canary : 3 production) and look every `per_look`
    canary episodes, as the controller does after each batch of finished episodes."""
    policy = CanaryPolicy(max_episodes=10_000)
    episodes: list[EpisodeOutcome] = []
    for look in range(1, looks + 1):
        episodes += _episodes(rng, "2", per_look, p_canary, 2.0 * (1 - p_canary))
        episodes += _episodes(rng, "1", 3 * per_look, p_production, 2.0 * (1 - p_production))
        decision = decide(compare(episodes, canary_version="2", production_version="1"), policy)
        if decision.action != "continue":
            return decision.action, look * per_look
    return "continue", looks * per_look


def test_equal_versions_are_rarely_told_apart_however_often_the_controller_looks() -> None:
    rng = random.Random(0)
    actions = [_first_decision(rng, 0.6, 0.6)[0] for _ in range(100)]
    wrong = sum(a != "continue" for a in actions)
    # 20 looks per run: a fixed-sample 95% test looked at 20 times would be wrong in ~25% of runs
    assert wrong <= 8, actions


def test_a_version_20_points_worse_is_rolled_back_and_15_points_better_is_promoted() -> None:
    rng = random.Random(1)
    worse = [_first_decision(rng, 0.5, 0.7) for _ in range(20)]
    better = [_first_decision(rng, 0.85, 0.7) for _ in range(20)]
    assert sum(a == "rollback" for a, _ in worse) >= 18
    assert sum(a == "promote" for a, _ in better) >= 16
    assert not any(a == "promote" for a, _ in worse) and not any(a == "rollback" for a, _ in better)


def _comparison(metric: str, verdict: str, n: int = 50) -> Comparison:
    return Comparison(metric, 0.5, 0.5, n, 3 * n, 0.0, -0.1, 0.1, verdict)  # type: ignore[arg-type]


def test_a_safety_signal_wins_and_a_regression_on_any_metric_is_not_bought_by_a_gain_on_another() -> None:
    policy = CanaryPolicy(min_episodes=20)
    gain = [_comparison("autonomous_success", "better"), _comparison("interventions", "unclear")]
    assert decide(gain, policy).action == "promote"
    assert decide(gain, policy, errors=1).action == "rollback"
    assert "safety" in decide(gain, policy, errors=1).reason
    mixed = [_comparison("autonomous_success", "better"), _comparison("interventions", "worse")]
    assert decide(mixed, policy).action == "rollback"
    assert "interventions" in decide(mixed, policy).reason
    early = [_comparison("autonomous_success", "better", n=5), _comparison("interventions", "unclear", n=5)]
    assert decide(early, policy).action == "continue"
    length_only = [_comparison("autonomous_success", "unclear"), _comparison("length", "worse")]
    assert decide(length_only, policy).action == "continue"  # episode length is reported, not decisive


def test_a_canary_that_misses_more_control_ticks_is_rolled_back_and_one_that_misses_fewer_is_not_promoted() -> None:
    policy = CanaryPolicy(min_episodes=20)
    unclear = [_comparison("autonomous_success", "unclear"), _comparison("interventions", "unclear")]
    slower = decide([*unclear, _comparison("missed_ticks", "worse")], policy)
    assert slower.action == "rollback" and slower.reason == "safety: canary worse on missed_ticks"
    assert decide([*unclear, _comparison("missed_ticks", "better")], policy).action == "continue"
    # from episodes: a canary whose robots overrun a few ticks an episode, at the same success
    rng = random.Random(4)
    episodes = [
        EpisodeOutcome(v, success=rng.random() < 0.7, interventions=0, length=40, missed_ticks=missed)
        for v, n, missed_of in (("2", 60, lambda: rng.randint(2, 6)), ("1", 180, lambda: rng.randint(0, 1)))
        for _ in range(n)
        for missed in [missed_of()]
    ]
    comparisons = compare(episodes, canary_version="2", production_version="1")
    ticks = next(c for c in comparisons if c.metric == "missed_ticks")
    assert ticks.verdict == "worse" and ticks.lo > 0
    assert decide(comparisons, policy).action == "rollback"


def test_an_undecided_rollout_ends_by_the_policy_at_its_episode_budget() -> None:
    unclear = [
        Comparison("autonomous_success", 0.6, 0.6, 400, 1200, 0.0, -0.03, 0.03, "unclear"),
        Comparison("interventions", 1.0, 1.0, 400, 1200, 0.0, -0.2, 0.2, "unclear"),
    ]
    assert decide(unclear, CanaryPolicy(max_episodes=400)).action == "promote"  # nothing worse: the gate's word stands
    assert decide(unclear, CanaryPolicy(max_episodes=400)).at_budget
    assert not decide(unclear, CanaryPolicy(max_episodes=500)).at_budget
    assert decide(unclear, CanaryPolicy(max_episodes=400, margin=0.01)).action == "promote"
    non_inferior = CanaryPolicy(max_episodes=400, on_inconclusive="non_inferior")
    assert decide(unclear, non_inferior).action == "promote"  # success's interval above -0.05
    assert decide(unclear, dataclasses.replace(non_inferior, margin=0.01)).action == "rollback"
    assert decide(unclear, CanaryPolicy(max_episodes=400, on_inconclusive="rollback")).action == "rollback"
    assert decide(unclear, CanaryPolicy(max_episodes=400, on_inconclusive="wait")).action == "continue"
    assert decide(unclear, CanaryPolicy(max_episodes=500)).action == "continue"


def test_the_ab_compares_within_task_and_embodiment_so_a_canary_on_the_easier_arm_is_not_a_better_version() -> None:
    rng = random.Random(3)
    # Same version on both sides; kuka succeeds 90%, panda 40%. The canary's robots are mostly kuka, production's
    # mostly panda: pooled, the canary looks 30+ points better.
    episodes = []
    for version, kuka_share in (("2", 0.9), ("1", 0.3)):
        for _ in range(300 if version == "2" else 900):
            arm = "kuka" if rng.random() < kuka_share else "panda"
            ok = rng.random() < (0.9 if arm == "kuka" else 0.4)
            episodes.append(EpisodeOutcome(version, ok, 0 if ok else 6, 40, f"pick/{arm}"))
    stratified = compare(episodes, canary_version="2", production_version="1")[0]
    assert stratified.verdict == "unclear" and abs(stratified.diff) < 0.05, stratified
    pooled = compare([dataclasses.replace(e, stratum="") for e in episodes], canary_version="2", production_version="1")
    assert pooled[0].verdict == "better"  # what an unstratified A/B would have promoted
    one_sided = [e for e in episodes if not (e.version == "1" and e.stratum == "pick/kuka")]
    only_panda = compare(one_sided, canary_version="2", production_version="1")[0]
    assert only_panda.canary_n < 100  # a stratum production never ran is left out
