"""Version 1 of a fleet that has none: the one fleet ships, or one pre-trained here on scripted demonstrations.

`make demo` starts from the shipped one (fleet/assets/version-one; provenance.json says how it was made): the weights
bench/language.py and the colour series of bench/online.py (research/online-raised-bench-colour) measured, so a new
fleet starts where they started instead of after an hour of pre-training. A demo of tasks or arms it never learnt
pre-trains its own (the recipe's pre-training stage on demos collected here, with the same language options).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fleet.settings import Settings

log = logging.getLogger(__name__)

SHIPPED_VERSION_ONE = Path(__file__).parent / "assets" / "version-one"


def shipped_provenance() -> dict[str, Any]:
    """How the shipped version 1 was made: its tasks, embodiments, demonstrations per pair and steps."""
    return dict(json.loads((SHIPPED_VERSION_ONE / "provenance.json").read_text()))


def ensure_version_one(
    settings: Settings, *, shipped: Path | None, demos: dict[str, int], embodiments: tuple[str, ...], bc_steps: int
) -> str:
    """The production version, creating version 1 if none: the `shipped` checkpoint, or (None) `demos` scripted
    demonstrations per task (x each of `embodiments`) behaviour-cloned for `bc_steps` steps.

    A production version no trusted key signed (a home from before versions were signed) counts as none: robots
    would refuse it, so a signed one is published and promoted in its place.
    """
    from fleet.registry import Registry, publish_model
    from fleet.signing import SignatureError

    registry = Registry(settings)
    current = registry.version_for_alias("production")
    if current is not None:
        try:
            registry.verify(current)
        except SignatureError as err:
            print(f"production v{current.version} cannot run on robots ({err}); publishing a signed one in its place")
        else:
            log.info("production model exists: v%s", current.version)
            return current.version

    from fleet.policy.checkpoint import load_checkpoint

    if shipped is not None:
        made = shipped_provenance()
        print(f"version 1: the shipped one ({made['demos_per_pair']} scripted demos per task x arm, "
              f"{made['steps']} behaviour-cloning steps)")  # fmt: skip
        model = load_checkpoint(shipped)
        tags = {"origin": "behaviour cloning on scripted demos (shipped)", "demos": str(made["demos_per_pair"])}
    else:
        model, tags = _pretrain_version_one(settings, demos, embodiments, bc_steps)
    info = publish_model(registry, model, parent_version=None, actor="demo", tags=tags)
    registry.promote(info.version, actor="demo", role="admin", reason="version 1 from demonstrations")
    return info.version


def _pretrain_version_one(
    settings: Settings, wanted: dict[str, int], embodiments: tuple[str, ...], bc_steps: int
) -> tuple[Any, dict[str, str]]:
    """Version 1 trained here: scripted demos of each task (collected once), behaviour-cloned."""
    from fleet.defaults import PRETRAIN_LANGUAGE
    from fleet.episodes import EpisodeStore
    from fleet.policy.checkpoint import load_checkpoint
    from fleet.recipe.train import StageConfig, run_stage
    from fleet.sim.rollout import collect_demos

    store = EpisodeStore(settings.home / "demos")
    for task, count in wanted.items():
        for embodiment in embodiments:
            have = sum(1 for _, e in store.list() if e.startswith(f"{task}-{embodiment}-"))
            if have < count:
                print(f"collecting {count} scripted demos: {task} × {embodiment}")
                collect_demos(store, task=task, embodiment=embodiment, episodes=count, seed=0)
    print(f"pre-training version 1 on {len(store.list())} demos ({bc_steps} steps)")
    stage = StageConfig(
        stage="pretrain", demos=store.root, run_dir=settings.home / "train" / "v1-pretrain", steps=bc_steps,
        tasks=tuple(wanted), embodiments=embodiments, tracking_uri=settings.tracking_uri, **PRETRAIN_LANGUAGE,
    )  # fmt: skip
    model = load_checkpoint(run_stage(stage).checkpoint)
    return model, {"origin": "behaviour cloning on scripted demos", "demos": str(len(store.list()))}
