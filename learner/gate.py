"""The eval gate: held-out, seeded sim episodes per task × embodiment; success rates become version tags.

Seeds start at `seed_offset` (far from the seeds robots and demo collection use), so the gate
measures held-out starts and gives the same scenes to every version: versions are compared on
equal terms. Chunks are executed open-loop, as on the robots.

    result = EvalGate(GateConfig(tasks=("pick",), embodiments=("panda",))).evaluate(model, embedder=emb)
    result.tags()   # {"eval/pick/panda": "0.4", "eval/mean": "0.4"}
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from fleet.policy.language import InstructionEmbedder
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateConfig:
    """Which held-out episodes decide a version's fate."""

    tasks: tuple[str, ...] = (
        "pick",
        "push",
        "place",
    )  # sim tasks evaluated (pairs a task does not support are skipped)
    embodiments: tuple[str, ...] = ("panda", "kuka")  # embodiments evaluated
    episodes: int = 10  # episodes per task × embodiment
    seed_offset: int = 1_000_000  # first held-out seed (robots and demos use small seeds)
    max_steps: int | None = None  # cut episodes short of the task's limit (debug presets); None = task limit
    min_success: float = 0.0  # eval/mean a version needs before it may be promoted at all
    # How much a candidate's eval/mean must exceed production's to be promoted. The gate is a small sample
    # (a 60-episode mean has a standard error of ~0.06), so "any gain" promotes lucky draws: a noisy gate
    # with no margin put a worse version in production in bench/online.py (fleet success 0.65 -> 0.4).
    min_improvement: float = 0.0

    def __post_init__(self) -> None:
        if not self.tasks or not self.embodiments or self.episodes < 1:
            raise ValueError("GateConfig needs at least one task, one embodiment and one episode")
        if not 0.0 <= self.min_success <= 1.0 or not 0.0 <= self.min_improvement < 1.0:
            raise ValueError("GateConfig.min_success must be in [0, 1] and min_improvement in [0, 1)")


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

    def evaluate(self, model: VLAModel, *, embedder: InstructionEmbedder) -> GateResult:
        from fleet.sim import make_env, rollout

        start = time.monotonic()
        policy = VLAPolicy(model, embedder=embedder, seed=0)
        rates: dict[tuple[str, str], float] = {}
        for task, embodiment in self.pairs():
            if embodiment not in model.config.embodiment_names:
                log.warning("gate: model has no adapter for %s; skipping %s/%s", embodiment, task, embodiment)
                continue
            env = make_env(task, embodiment, seed=self.config.seed_offset, image_size=model.config.image_size)
            try:
                wins = 0
                for i in range(self.config.episodes):
                    policy.reset()
                    episode = rollout(
                        env,
                        _ChunkExecutor(policy),
                        seed=self.config.seed_offset + i,
                        robot_id="eval-gate",
                        source="eval",
                        max_steps=self.config.max_steps,
                    )
                    wins += int(episode.meta.success)
                rates[(task, embodiment)] = wins / self.config.episodes
            finally:
                env.close()
        return GateResult(success=rates, seconds=time.monotonic() - start)


class _ChunkExecutor:
    """obs -> one action: infers a chunk, then plays it open-loop before inferring again."""

    def __init__(self, policy: VLAPolicy) -> None:
        self.policy = policy
        self._queue: list[np.ndarray] = []

    def __call__(self, obs: dict) -> np.ndarray:  # type: ignore[type-arg]
        if not self._queue:
            self._queue = list(self.policy.infer(obs))
        return self._queue.pop(0)
