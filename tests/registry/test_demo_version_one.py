"""`make demo`'s version 1: the shipped checkpoint loads, knows what its provenance says, and is published signed
and promoted into an empty registry once (a second demo continues the production version instead)."""

from __future__ import annotations

import hashlib
import json

import pytest

from fleet.defaults import PRETRAIN_LANGUAGE
from fleet.demo import DemoConfig
from fleet.policy.checkpoint import load_checkpoint
from fleet.registry import PRODUCTION, Registry
from fleet.version_one import SHIPPED_VERSION_ONE, ensure_version_one


def test_the_shipped_version_one_is_what_its_provenance_says() -> None:
    made = json.loads((SHIPPED_VERSION_ONE / "provenance.json").read_text())
    model = load_checkpoint(SHIPPED_VERSION_ONE)  # verified against its own digests
    state = json.loads((SHIPPED_VERSION_ONE / "train_state.json").read_text())
    weights = hashlib.sha256((SHIPPED_VERSION_ONE / "model.safetensors").read_bytes()).hexdigest()
    assert weights == state["weights_sha256"] and state["step"] == made["steps"]
    assert set(made["embodiments"]) <= {e.name for e in model.config.embodiments}
    assert model.config.flow_steps == 4  # sampled as the robots and bench/online.py sample it
    # made as `fleet train pretrain` and a demo's own version 1 are by default
    assert model.config.colour_lexicon == PRETRAIN_LANGUAGE["colour_lexicon"]
    assert model.config.instruction_noise == PRETRAIN_LANGUAGE["instruction_noise"]
    assert f"--paraphrases {PRETRAIN_LANGUAGE['paraphrases']}" in made["made_by"]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_demo_publishes_the_shipped_version_one_signed_and_once(registry: Registry) -> None:
    demo = DemoConfig()
    plan = {"shipped": demo.version_one, "demos": demo.seed_demos(), "embodiments": demo.embodiments,
            "bc_steps": demo.bc_steps}  # fmt: skip
    assert plan["shipped"] == SHIPPED_VERSION_ONE
    version = ensure_version_one(registry.settings, **plan)
    production = registry.version_for_alias(PRODUCTION)
    assert production is not None and production.version == version
    registry.verify(production)  # signed by the key robots trust
    assert production.tags["origin"] == "behaviour cloning on scripted demos (shipped)"
    assert production.sha256 == hashlib.sha256((SHIPPED_VERSION_ONE / "model.safetensors").read_bytes()).hexdigest()
    assert ensure_version_one(registry.settings, **plan) == version  # a second demo continues it
    assert [v.version for v in registry.list_versions()] == [version]
