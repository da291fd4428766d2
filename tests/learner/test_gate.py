"""The promotion rule: a candidate must beat production by the configured margin, never by a lucky tie."""

from __future__ import annotations

import pytest

from learner.config import get_preset
from learner.gate import GateConfig, beats


def test_without_a_margin_any_strict_gain_promotes() -> None:
    assert beats(0.55, 0.50, min_success=0.0)
    assert not beats(0.50, 0.50, min_success=0.0)  # a tie keeps production
    assert beats(0.10, None, min_success=0.0)  # no production yet: the first version goes in


def test_a_margin_refuses_gains_within_the_gate_noise() -> None:
    assert not beats(0.54, 0.50, min_success=0.0, min_improvement=0.05)
    assert not beats(0.55, 0.50, min_success=0.0, min_improvement=0.05)  # exactly the margin is not enough
    assert beats(0.56, 0.50, min_success=0.0, min_improvement=0.05)
    assert not beats(0.30, None, min_success=0.4, min_improvement=0.05)  # the floor still applies


def test_online_preset_gates_on_60_episodes_with_a_margin() -> None:
    gate = get_preset("online").gate
    assert gate.episodes * len(gate.tasks) * len(gate.embodiments) == 60 and gate.min_improvement == 0.05


def test_config_rejects_a_margin_outside_0_1() -> None:
    with pytest.raises(ValueError, match="min_improvement"):
        GateConfig(min_improvement=1.0)
    with pytest.raises(ValueError, match="min_improvement"):
        GateConfig(min_improvement=-0.1)
