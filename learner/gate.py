"""The eval gate: held-out, seeded sim episodes per task × embodiment; success rates become version tags.

Seeds start at `seed_offset` (far from the seeds robots and demo collection use), so the gate
measures held-out starts and gives the same scenes to every version: versions are compared on
equal terms. Episodes are judged as the fleet judges them: chunks on the robots' schedule, and an
episode the supervisor would have taken over (no progress for ~1 s) counts as a failure.

    result = EvalGate(GateConfig(tasks=("pick",), embodiments=("panda",))).evaluate(model, embedder=emb)
    result.tags()   # {"eval/pick/panda": "0.4", "eval/mean": "0.4"}
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fleet.defaults import DEFAULT_EMBODIMENTS, DEFAULT_TASKS
from fleet.policy.base import Policy
from fleet.policy.language import InstructionEmbedder
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy
from fleet.recipe.evaluate import EXECUTE_STEPS, PREFETCH_STEPS, run_lockstep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateConfig:
    """Which held-out episodes decide a version's fate."""

    tasks: tuple[str, ...] = DEFAULT_TASKS  # sim tasks evaluated (pairs a task does not support are skipped)
    embodiments: tuple[str, ...] = DEFAULT_EMBODIMENTS  # embodiments evaluated
    scenario: str = "nominal"  # the deployment conditions the episodes run in (`fleet.sim.scenarios`)
    episodes: int = 10  # episodes per task × embodiment
    seed_offset: int = 1_000_000  # first held-out seed (robots and demos use small seeds)
    max_steps: int | None = None  # cut episodes short of the task's limit (debug presets); None = task limit
    min_success: float = 0.0  # eval/mean a version needs before it may be promoted at all
    # How much a candidate's eval/mean must exceed production's to be promoted. The gate is a small sample
    # (a 60-episode mean has a standard error of ~0.06), so "any gain" promotes lucky draws.
    min_improvement: float = 0.0
    # > 0: the margin is at most this many standard errors of the difference of two means of the gate's episodes at
    # production's success rate p, sqrt(2 p (1 - p) / n) (`margin`): the same evidence at every level, where a fixed
    # margin asks more near the top than the episodes can show (production at 0.925 on 40 episodes: more than
    # +0.05 is 40 of 40, more than 0.5 standard errors 39). 0: `min_improvement` alone.
    min_improvement_se: float = 0.0
    # A candidate that passes on the gate's episodes is run again on this many *other* episodes per pair (seeds
    # from `seed_offset + SEED_BLOCK`), and so is production (once per version); it is promoted only if it
    # beats production there too, by `confirm_improvement`. The learner scores many versions on the same episodes
    # and the best of them is mostly a lucky draw; fresh episodes do not share that luck (pooling them with the
    # gate's would keep half of it). 0 = no confirmation.
    confirm_episodes: int = 0
    # How much the candidate must beat production by on the confirmation's episodes. No version was picked on
    # them, so the score there is not inflated by selection and "better" is the test (strictly better at 0);
    # asking for the gate's margin again would refuse many candidates truly that much better.
    confirm_improvement: float = 0.0
    # An episode that stops progressing (the supervisor would take over on the fleet) fails, as on the fleet.
    stop_when_stuck: bool = True
    # Candidates are scored against production on the seed block named by production's version number (`seed_block`),
    # and production is scored there again, once: a new production version moves the gate and the confirmation to
    # episodes no version was picked on. With fixed episodes the version promoted because it drew well on them sets
    # the next bar with that luck (a winner's curse). False = the same episodes for every version.
    reseed_on_promotion: bool = True
    # Episodes of one pair run side by side, their chunks inferred in one batched forward (`run_lockstep`): the
    # model's forward is most of the gate's time on a CPU, and a batch of 10 costs far less per row than 10 single
    # ones. The rows share one noise stream, so a score is reproducible for the same lanes only (in the signature).
    lanes: int = 10

    def __post_init__(self) -> None:
        if not self.tasks or not self.embodiments or self.episodes < 1:
            raise ValueError("GateConfig needs at least one task, one embodiment and one episode")
        from fleet.sim.scenarios import get_scenario

        get_scenario(self.scenario)  # an unknown name fails here, with a hint, not in the evaluator's worker
        if self.lanes < 1:
            raise ValueError(f"GateConfig.lanes must be >= 1, got {self.lanes}")
        if self.confirm_episodes < 0:
            raise ValueError("GateConfig.confirm_episodes must be >= 0")
        if max(self.episodes, self.confirm_episodes) > SEED_BLOCK:
            raise ValueError(f"GateConfig: at most {SEED_BLOCK} episodes (and confirm_episodes) per pair")
        if not 0.0 <= self.min_success <= 1.0 or not 0.0 <= self.min_improvement < 1.0:
            raise ValueError("GateConfig.min_success must be in [0, 1] and min_improvement in [0, 1)")
        if self.min_improvement_se < 0:
            raise ValueError("GateConfig.min_improvement_se must be >= 0")
        if not 0.0 <= self.confirm_improvement < 1.0:
            raise ValueError("GateConfig.confirm_improvement must be in [0, 1)")


SEED_BLOCK = 1_000  # seeds per half block: block k's gate starts at seed_offset + 2k·SEED_BLOCK, its confirmation above


def seed_block(config: GateConfig, block: int) -> GateConfig:
    """The gate's episodes in seed block `block` (0: from `seed_offset`); `confirmation` of it is the block's other
    half, so no two blocks, and no gate and confirmation, share a seed."""
    if block < 0:
        raise ValueError(f"seed block must be >= 0, got {block}")
    return replace(config, seed_offset=config.seed_offset + 2 * block * SEED_BLOCK)


def confirmation(config: GateConfig) -> GateConfig:
    """The confirmation stage's episodes: `confirm_episodes` per pair on seeds the gate never uses."""
    return replace(config, episodes=max(1, config.confirm_episodes), seed_offset=config.seed_offset + SEED_BLOCK)


@dataclass(frozen=True)
class GateResult:
    """Success rates of one version."""

    success: dict[tuple[str, str], float] = field(default_factory=dict)  # (task, embodiment) -> success rate
    seconds: float = 0.0  # wall time of the evaluation

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.success.values()))) if self.success else 0.0

    def tags(self) -> dict[str, str]:
        out = {f"eval/{task}/{emb}": f"{rate:.4f}" for (task, emb), rate in self.success.items()}
        out["eval/mean"] = f"{self.mean:.4f}"
        return out


def margin(config: GateConfig, production_mean: float | None, episodes: int) -> float:
    """The margin a candidate scored on `episodes` episodes must beat production's `production_mean` by:
    `min_improvement`, or less where `min_improvement_se` standard errors of the difference are less."""
    if not config.min_improvement_se or production_mean is None or episodes < 1:
        return config.min_improvement
    p = min(max(production_mean, 0.0), 1.0)
    return min(config.min_improvement, config.min_improvement_se * math.sqrt(2 * p * (1 - p) / episodes))


def beats(
    candidate_mean: float, production_mean: float | None, *, min_success: float, min_improvement: float = 0.0
) -> bool:
    """Promotion rule: at least `min_success`, and better than production by more than `min_improvement`
    (strictly better when it is 0; any candidate, if there is no production version)."""
    if candidate_mean < min_success:
        return False
    return production_mean is None or candidate_mean > production_mean + min_improvement


class EvalGate:
    """Runs the held-out episodes of a `GateConfig` for a model."""

    def __init__(self, config: GateConfig) -> None:
        self.config = config

    def pairs(self) -> list[tuple[str, str]]:
        from fleet.sim import get_task

        out = []
        for task in self.config.tasks:
            spec = get_task(task)
            supported = getattr(spec, "embodiments", None)
            out += [(task, emb) for emb in self.config.embodiments if not supported or emb in supported]
        return out

    def signature(self) -> str:
        """What makes two versions' scores comparable: the episodes and how they are run and judged (a version
        tagged with another signature is evaluated again rather than compared by its old score)."""
        c = self.config
        return json.dumps(
            {"tasks": c.tasks, "embodiments": c.embodiments, "scenario": c.scenario, "episodes": c.episodes,
             "seed_offset": c.seed_offset,
             "confirm_episodes": c.confirm_episodes,
             "max_steps": c.max_steps, "stop_when_stuck": c.stop_when_stuck, "lanes": c.lanes,
             "schedule": {"execute_steps": EXECUTE_STEPS, "prefetch_steps": PREFETCH_STEPS}}, sort_keys=True,
        )  # fmt: skip

    def evaluate(self, model: VLAModel, *, embedder: InstructionEmbedder) -> GateResult:
        start = time.monotonic()
        policy = VLAPolicy(model, embedder=embedder, seed=0)
        rates: dict[tuple[str, str], float] = {}
        for task, embodiment in self.pairs():
            if embodiment not in model.config.embodiment_names:
                log.warning("gate: model has no adapter for %s; skipping %s/%s", embodiment, task, embodiment)
                continue
            rates[(task, embodiment)] = self.success_rate(policy, task, embodiment, image_size=model.config.image_size)
        return GateResult(success=rates, seconds=time.monotonic() - start)

    def success_rate(
        self, policy: Policy, task: str, embodiment: str, *, image_size: int = 64, env: Any = None
    ) -> float:
        """Autonomous success of `policy` on this gate's episodes of one task × embodiment.

        Judged as the fleet judges it (bench/online.py, the dashboard): chunks run on the robots' schedule
        (`ChunkedController`: re-planning every 2 steps, each chunk inferred 2 steps ahead), and an episode
        that stops making progress for as long as the supervisor tolerates (`ProgressWatch`) is a failure,
        ended there: on the fleet a human would have taken over. A slow recovery the time limit still allows is not a
        success the fleet would ever see. The episodes run `lanes` at a time in lockstep (`run_lockstep`), each
        lane on an env made here; a given `env` runs them one after the other on it instead.
        """
        from fleet.sim import make_env
        from fleet.sim.experts import ProgressWatch

        c = self.config
        envs = [env] if env is not None else [
            make_env(task, embodiment, seed=c.seed_offset, image_size=image_size, scenario=c.scenario)
            for _ in range(min(c.lanes, c.episodes))
        ]  # fmt: skip

        def stuck(_lane: int) -> Any:
            watch = ProgressWatch.for_task(task)
            if watch is None:  # a backend's own task has no progress measure: it runs to its time limit
                return lambda e: False
            return lambda e: watch.update(e.privileged_state())

        try:
            seeds = [c.seed_offset + i for i in range(c.episodes)]
            wins = run_lockstep(
                envs, policy, seeds, max_steps=c.max_steps or envs[0].max_steps,
                stuck=stuck if c.stop_when_stuck else None, execute_steps=EXECUTE_STEPS, prefetch_steps=PREFETCH_STEPS,
            )  # fmt: skip
            return sum(wins) / c.episodes
        finally:
            if env is None:
                for e in envs:
                    e.close()
