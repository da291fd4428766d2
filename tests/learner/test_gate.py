"""The promotion rule: a candidate must beat production by the configured margin, never by a lucky tie."""

from __future__ import annotations

import numpy as np
import pytest

from learner.config import get_preset
from learner.gate import SEED_BLOCK, EvalGate, GateConfig, beats, confirmation, margin, seed_block


def test_without_a_margin_any_strict_gain_promotes() -> None:
    assert beats(0.55, 0.50, min_success=0.0)
    assert not beats(0.50, 0.50, min_success=0.0)  # a tie keeps production
    assert beats(0.10, None, min_success=0.0)  # no production yet: the first version goes in


def test_a_margin_refuses_gains_within_the_gate_noise() -> None:
    assert not beats(0.54, 0.50, min_success=0.0, min_improvement=0.05)
    assert not beats(0.55, 0.50, min_success=0.0, min_improvement=0.05)  # exactly the margin is not enough
    assert beats(0.56, 0.50, min_success=0.0, min_improvement=0.05)
    assert not beats(0.30, None, min_success=0.4, min_improvement=0.05)  # the floor still applies


def test_a_margin_in_standard_errors_shrinks_only_near_the_top() -> None:
    fixed = GateConfig(min_improvement=0.05)
    scaled = GateConfig(min_improvement=0.05, min_improvement_se=0.5)
    assert margin(fixed, 0.925, 40) == 0.05 and margin(scaled, None, 40) == 0.05  # off, or no production yet
    assert margin(scaled, 0.5, 40) == 0.05  # mid-range: 0.5 standard errors (0.056) is more than the fixed margin
    assert margin(scaled, 0.925, 40) == pytest.approx(0.5 * np.sqrt(2 * 0.925 * 0.075 / 40))  # 0.029
    # production at 37 of 40: the fixed margin needs 40 of 40, the scaled one 39
    assert not beats(39 / 40, 0.925, min_success=0.0, min_improvement=margin(fixed, 0.925, 40))
    assert beats(39 / 40, 0.925, min_success=0.0, min_improvement=margin(scaled, 0.925, 40))
    assert not beats(38 / 40, 0.925, min_success=0.0, min_improvement=margin(scaled, 0.925, 40))
    assert margin(scaled, 1.0, 40) == 0.0 and not beats(1.0, 1.0, min_success=0.0)  # nothing beats a perfect score
    with pytest.raises(ValueError, match="min_improvement_se"):
        GateConfig(min_improvement_se=-1.0)


def test_online_preset_gates_on_60_episodes_with_a_margin() -> None:
    gate = get_preset("online").gate
    assert gate.episodes * len(gate.tasks) * len(gate.embodiments) == 60 and gate.min_improvement == 0.05


def test_confirmation_runs_the_gate_on_other_episodes() -> None:
    gate = get_preset("online").gate
    confirm = confirmation(gate)
    assert confirm.episodes == gate.confirm_episodes == 10
    gate_seeds = set(range(gate.seed_offset, gate.seed_offset + gate.episodes))
    assert gate_seeds.isdisjoint(range(confirm.seed_offset, confirm.seed_offset + confirm.episodes))
    assert (confirm.tasks, confirm.embodiments, confirm.stop_when_stuck) == (gate.tasks, gate.embodiments, True)
    assert EvalGate(gate).signature() != EvalGate(GateConfig(**{**gate.__dict__, "confirm_episodes": 0})).signature()
    with pytest.raises(ValueError, match="confirm_episodes"):
        GateConfig(confirm_episodes=-1)
    with pytest.raises(ValueError, match="confirm_improvement"):
        GateConfig(confirm_improvement=1.0)


def test_each_seed_block_has_its_own_gate_and_confirmation_episodes() -> None:
    gate = get_preset("online").gate
    assert gate.reseed_on_promotion and seed_block(gate, 0) == gate
    seen: set[int] = set()
    for block in range(4):
        for config in (seed_block(gate, block), confirmation(seed_block(gate, block))):
            seeds = set(range(config.seed_offset, config.seed_offset + config.episodes))
            assert seeds.isdisjoint(seen)
            seen |= seeds
    assert EvalGate(seed_block(gate, 1)).signature() != EvalGate(gate).signature()  # not compared across blocks
    with pytest.raises(ValueError, match="episodes"):
        GateConfig(episodes=SEED_BLOCK + 1)
    with pytest.raises(ValueError, match="seed block"):
        seed_block(gate, -1)


def test_config_rejects_a_margin_outside_0_1() -> None:
    with pytest.raises(ValueError, match="min_improvement"):
        GateConfig(min_improvement=1.0)
    with pytest.raises(ValueError, match="min_improvement"):
        GateConfig(min_improvement=-0.1)


class _Hesitant:
    """Stands still for `wait` steps, then follows the scripted expert: a chunk of one action per inference."""

    def __init__(self, env, wait: int) -> None:  # noqa: ANN001
        from fleet.sim.experts import make_expert

        self.expert, self.wait, self.calls = make_expert(env), wait, 0

    def reset(self) -> None:
        self.calls = 0

    def infer(self, obs):  # noqa: ANN001, ANN201
        self.calls += 1
        action = self.expert(obs) if self.calls > self.wait else np.zeros(5, dtype=np.float32)
        return np.asarray(action, dtype=np.float32)[None]


@pytest.mark.timeout(120)
def test_the_gate_fails_an_episode_the_supervisor_would_have_taken_over() -> None:
    """A policy that stalls 2 s before solving the task succeeds within the time limit, but on the fleet
    the supervisor steps in after 1 s: the gate counts it as the fleet does (and stops the episode there)."""
    from fleet.sim.registry import make_env

    env = make_env("pick", "kuka", seed=1_000_000)
    try:
        lenient = EvalGate(GateConfig(tasks=("pick",), embodiments=("kuka",), episodes=2, stop_when_stuck=False))
        fleet_like = EvalGate(GateConfig(tasks=("pick",), embodiments=("kuka",), episodes=2))
        assert lenient.success_rate(_Hesitant(env, wait=0), "pick", "kuka", env=env) == 1.0
        assert fleet_like.success_rate(_Hesitant(env, wait=0), "pick", "kuka", env=env) == 1.0
        assert lenient.success_rate(_Hesitant(env, wait=20), "pick", "kuka", env=env) == 1.0
        hesitant = _Hesitant(env, wait=20)
        assert fleet_like.success_rate(hesitant, "pick", "kuka", env=env) == 0.0
        assert hesitant.calls <= 12  # ended when it stalled, not at the 60-step limit
    finally:
        env.close()


def test_scores_are_comparable_only_under_the_same_episodes_schedule_and_judging() -> None:
    import json

    from fleet.recipe.evaluate import EXECUTE_STEPS, PREFETCH_STEPS

    gate = EvalGate(GateConfig())
    signature = json.loads(gate.signature())
    # A version gated before the robots' chunk schedule changed is re-evaluated, not compared by its old score.
    assert signature["schedule"] == {"execute_steps": EXECUTE_STEPS, "prefetch_steps": PREFETCH_STEPS}
    assert gate.signature() == EvalGate(GateConfig()).signature()
    assert gate.signature() != EvalGate(GateConfig(stop_when_stuck=False)).signature()
    assert gate.signature() != EvalGate(GateConfig(episodes=11)).signature()
