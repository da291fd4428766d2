"""`fleet learner run`'s options: what each changes in the preset, and a bad value named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from learner.cli import app, learner_config
from learner.config import PRESETS


def test_overrides_change_only_their_fields() -> None:
    base = PRESETS["online"]
    config = learner_config("online", lr=3e-4, demos=Path("/data/demos"), autonomous=False, paraphrases=6)
    assert config.rllib.lr == 3e-4 and base.rllib.lr != 3e-4
    assert (config.replay.paraphrases, base.replay.paraphrases) == (6, 0)
    assert config.rllib.ema_decay == base.rllib.ema_decay  # the rest of the optimizer config is the preset's
    assert (config.demos, config.load_demos, config.replay.autonomous) == (Path("/data/demos"), True, False)
    assert config.gate == base.gate and config.batch_size == base.batch_size
    assert learner_config("online") == base  # no options: the preset itself


@pytest.mark.parametrize("lr", [0.0, -1e-4])
def test_a_bad_learning_rate_is_refused_naming_the_option(lr: float) -> None:
    with pytest.raises(typer.BadParameter) as error:
        learner_config("online", lr=lr)
    assert error.value.param_hint == "--lr" and "lr" in str(error.value)


def test_a_negative_paraphrase_count_is_refused_naming_the_option() -> None:
    with pytest.raises(typer.BadParameter) as error:
        learner_config("online", paraphrases=-1)
    assert error.value.param_hint == "--paraphrases"


def test_max_demos_caps_the_demonstrations_and_zero_loads_none() -> None:
    capped = learner_config("online", demos=Path("/data/demos"), max_demos=300)
    assert (capped.load_demos, capped.max_demo_episodes) == (True, 300)
    none = learner_config("online", demos=Path("/data/demos"), max_demos=0)
    assert none.load_demos is False  # the fleet's own data alone
    with pytest.raises(typer.BadParameter) as error:
        learner_config("online", max_demos=-1)
    assert error.value.param_hint == "--max-demos"


def test_the_command_refuses_a_bad_learning_rate_before_starting_anything() -> None:
    result = CliRunner().invoke(app, ["run", "--preset", "online", "--lr", "0"])
    assert result.exit_code == 2  # usage error: no consumer, no metrics server, no training
    assert "--lr" in result.output


def test_an_unknown_preset_suggests_the_closest_name() -> None:
    result = CliRunner().invoke(app, ["run", "--preset", "onlne"])
    assert result.exit_code == 2 and "online" in result.output


def test_freeze_sets_what_the_updates_hold_fixed_and_refuses_an_unknown_part() -> None:
    config = learner_config("online", freeze="encoder", lr=3e-4)
    assert (config.rllib.freeze, config.rllib.lr) == ("encoder", 3e-4)
    with pytest.raises(typer.BadParameter) as error:
        learner_config("online", freeze="trunk")
    assert error.value.param_hint == "--freeze" and "perception" in str(error.value)


def test_precision_sets_the_updates_matmuls_and_refuses_an_unknown_one() -> None:
    assert learner_config("online").rllib.precision == "auto"  # bf16 where the hardware has it
    assert learner_config("online", precision="fp32").rllib.precision == "fp32"
    assert learner_config("online", precision="bf16").rllib.precision == "bf16"
    with pytest.raises(typer.BadParameter) as error:
        learner_config("online", precision="fp8")
    assert error.value.param_hint == "--precision" and "bf16" in str(error.value)


def test_gate_margin_se_sets_the_gates_margin_in_standard_errors_and_refuses_a_negative_one() -> None:
    config = learner_config("online", scenario="raised-bench", gate_margin_se=0.5)
    assert (config.gate.min_improvement_se, config.gate.scenario) == (0.5, "raised-bench")
    assert learner_config("online").gate.min_improvement_se == 0.0
    with pytest.raises(typer.BadParameter) as error:
        learner_config("online", gate_margin_se=-0.5)
    assert error.value.param_hint == "--gate-margin-se"


def test_canary_fraction_sends_better_versions_to_a_canary_first_and_refuses_a_share_outside_0_to_1() -> None:
    assert learner_config("online", canary_fraction=0.25).canary_fraction == 0.25
    assert PRESETS["online"].canary_fraction == 0.0
    with pytest.raises(typer.BadParameter) as error:
        learner_config("online", canary_fraction=1.5)
    assert error.value.param_hint == "--canary-fraction"


def test_data_parallel_learners_go_to_the_learner_node_only_when_there_are_remote_ones() -> None:
    config = learner_config("online", num_learners=2, learner_node=True)
    assert (config.rllib.num_learners, config.rllib.learner_node) == (2, True)
    with pytest.raises(typer.BadParameter) as error:  # an in-process learner runs where it was started
        learner_config("online", learner_node=True)
    assert error.value.param_hint == "--learner-node" and "num_learners" in str(error.value)
    with pytest.raises(typer.BadParameter) as error:
        learner_config("online", num_learners=-1)
    assert error.value.param_hint == "--num-learners"
