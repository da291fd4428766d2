"""Recipe stage 3's yardstick: success rate per task x embodiment of a policy in simulation.

    rates = evaluate("runs/pick/checkpoints/step_00000300", ["pick"], ["panda", "kuka"], episodes=20, seed=100_000)
    print(format_table(rates))

Episode k of every cell resets its env with seed `seed + k` and the policy's noise with `policy.reset()`,
so a checkpoint's rates are a deterministic function of (checkpoint, seed, episodes). Actions are
executed as the robot runtime (`actors/runtime.py`) does: the policy predicts a chunk of H actions,
the first `execute_steps` of them are executed, and the next chunk is inferred `prefetch_steps`
before the current one runs out, from the observation of that step; its first `prefetch_steps`
actions belong to steps already executed by then and are skipped (as the runtime does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleet import chunks
from fleet.defaults import DEFAULT_EMBODIMENTS, DEFAULT_TASKS

if TYPE_CHECKING:
    from fleet.episodes import Episode
    from fleet.policy.base import Policy
    from fleet.policy.language import InstructionEmbedder
    from fleet.sim.base import Env
    from fleet.sim.language import InstructionSet

Rates = dict[str, dict[str, float]]  # task -> embodiment -> success rate in [0, 1]

# The chunk schedule robots and evaluations share (measured and explained in fleet.chunks).
EXECUTE_STEPS, PREFETCH_STEPS = chunks.EXECUTE_STEPS, chunks.PREFETCH_STEPS


@dataclass(frozen=True)
class EvalConfig:
    """One `fleet eval` run."""

    checkpoint: Path | None = None  # checkpoint directory to evaluate (or give `version`)
    version: str | None = None  # registry version to download and evaluate (sha256-verified)
    tasks: tuple[str, ...] = DEFAULT_TASKS  # task ids
    embodiments: tuple[str, ...] = DEFAULT_EMBODIMENTS  # embodiment ids
    scenario: str = "nominal"  # deployment conditions the episodes run in (`fleet.sim.scenarios`)
    episodes: int = 20  # episodes per task x embodiment
    seed: int = 100_000  # env seed of episode 0 (kept away from the demo seeds 0, 1, ...)
    execute_steps: int | None = EXECUTE_STEPS  # actions executed per chunk before re-planning (None = whole chunk)
    prefetch_steps: int = PREFETCH_STEPS  # infer the next chunk this many steps before the current one ends
    out: Path | None = None  # write {"success": rates, ...} here as JSON
    gif_dir: Path | None = None  # save the first episode of every cell as <task>-<embodiment>.gif here
    image_size: int = 64  # camera side in pixels (must match the policy)
    progress: bool = True  # show a tqdm progress bar
    # Say each instruction another way: a named set ("held-out", "held-out-colours") or a JSON file
    # (fleet.sim.language); None = the tasks' own training phrasings.
    instructions: str | None = None

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.version is None):
            raise ValueError("give exactly one of --checkpoint DIR or --version V")
        if self.episodes <= 0 or not self.tasks or not self.embodiments:
            raise ValueError("EvalConfig: episodes must be positive, tasks and embodiments non-empty")
        if self.execute_steps is not None and self.execute_steps <= 0:
            raise ValueError(f"EvalConfig.execute_steps must be positive, got {self.execute_steps}")
        if self.prefetch_steps < 0:
            raise ValueError(f"EvalConfig.prefetch_steps must be >= 0, got {self.prefetch_steps}")


class ChunkedController:
    """Turns a chunking `Policy` into a per-step controller with the robots' chunk schedule (`fleet.chunks`),
    inferring each chunk at once where a robot would start it in a worker thread."""

    def __init__(
        self, policy: Policy, *, execute_steps: int | None = EXECUTE_STEPS, prefetch_steps: int = PREFETCH_STEPS
    ) -> None:
        self.policy = policy
        self.schedule = chunks.ChunkSchedule(execute_steps, prefetch_steps)
        self.execute_steps, self.prefetch_steps = execute_steps, prefetch_steps
        self.inferences = 0
        self.reset()

    def reset(self) -> None:
        self.policy.reset()
        self.schedule.reset()
        self._pending: np.ndarray | None = None

    def _infer(self, obs: Any) -> np.ndarray:
        # Nothing of this controller's state changes before `infer` returns: a policy may raise from it
        # (`run_lockstep`'s deferred slot) and the same call be made again once the chunk is ready.
        chunk = np.asarray(self.policy.infer(obs), dtype=np.float32)
        self.inferences += 1
        return chunk

    def __call__(self, obs: Any) -> np.ndarray:
        schedule = self.schedule
        if schedule.chunk is None:
            first = self._infer(obs)
            schedule.requested()
            schedule.start(first)
        if schedule.exhausted:
            if self._pending is None:
                self._pending = self._infer(obs)
                schedule.requested()
            schedule.start(self._pending)
            self._pending = None
        if self._pending is None and schedule.due:
            self._pending = self._infer(obs)  # the runtime starts this in a worker thread, from this observation
            schedule.requested()
        return np.asarray(schedule.take())


class _ChunkNeeded(Exception):
    """Raised by a `_Deferred` slot: its controller needs a chunk the lockstep runner has not computed yet."""


class _Deferred:
    """One lane's stand-in policy in `run_lockstep`: hands over the chunk the runner computed for it, or records the
    observation its controller asked about and raises `_ChunkNeeded`."""

    def __init__(self) -> None:
        self.obs: Any = None
        self.ready: np.ndarray | None = None

    def reset(self) -> None:
        self.obs = self.ready = None

    def infer(self, obs: Any) -> np.ndarray:
        if self.ready is None:
            self.obs = obs
            raise _ChunkNeeded
        chunk, self.ready = self.ready, None
        return chunk


def run_lockstep(
    envs: Sequence[Env],
    policy: Policy,
    seeds: Sequence[int],
    *,
    max_steps: int,
    stuck: Callable[[int], Callable[[Env], bool]] | None = None,
    execute_steps: int | None = EXECUTE_STEPS,
    prefetch_steps: int = PREFETCH_STEPS,
) -> list[bool]:
    """Success of one episode per seed, run on the robots' chunk schedule with `len(envs)` episodes at a time.

    The lanes step together, and every chunk the lanes ask for in the same step comes from one batched forward
    (`policy.infer_many`, else one `infer` per lane): the model's forward is most of an episode's cost on a CPU,
    and a batch of 10 costs ~4x less per row than one at a time. A lane takes the next seed when its episode ends.
    `stuck(lane)` (optional) gives a fresh per-episode predicate; an episode it calls stuck fails there.
    Returns successes in the order of `seeds`.
    """
    if not envs:
        raise ValueError("run_lockstep needs at least one env")
    infer_many = getattr(policy, "infer_many", None)
    slots = [_Deferred() for _ in envs]
    controllers = [
        ChunkedController(slot, execute_steps=execute_steps, prefetch_steps=prefetch_steps) for slot in slots
    ]
    results: list[bool] = [False] * len(seeds)
    lanes: dict[int, dict[str, Any]] = {}  # lane -> {"index", "obs", "steps", "stuck"}
    queue = iter(range(len(seeds)))

    def start(lane: int) -> None:
        index = next(queue, None)
        if index is None:
            lanes.pop(lane, None)
            return
        policy.reset()
        controllers[lane].reset()
        obs, _ = envs[lane].reset(seed=int(seeds[index]))
        lanes[lane] = {"index": index, "obs": obs, "steps": 0, "stuck": stuck(lane) if stuck else None}

    for lane in range(min(len(envs), len(seeds))):
        start(lane)
    while lanes:
        for lane in list(lanes):  # an episode the supervisor would have taken over fails there (results: False)
            while lane in lanes and lanes[lane]["stuck"] is not None and lanes[lane]["stuck"](envs[lane]):
                start(lane)
        actions: dict[int, np.ndarray] = {}
        asking = list(lanes)
        while asking:
            waiting = []
            for lane in asking:
                try:
                    actions[lane] = np.asarray(controllers[lane](lanes[lane]["obs"]), dtype=np.float32)
                except _ChunkNeeded:
                    waiting.append(lane)
            if waiting:
                observations = [slots[lane].obs for lane in waiting]
                chunks = infer_many(observations) if infer_many else [policy.infer(o) for o in observations]
                for lane, chunk in zip(waiting, chunks, strict=True):
                    slots[lane].ready = np.asarray(chunk, dtype=np.float32)
            asking = waiting
        for lane, action in actions.items():
            state, env = lanes[lane], envs[lane]
            state["obs"], _, terminated, truncated, info = env.step(action)
            state["steps"] += 1
            if terminated or truncated or state["steps"] >= max_steps:
                results[state["index"]] = bool(info.get("success", False))
                start(lane)
    return results


def policy_rollout(
    env: Env,
    policy: Policy,
    *,
    seed: int,
    execute_steps: int | None = EXECUTE_STEPS,
    prefetch_steps: int = PREFETCH_STEPS,
    options: dict[str, Any] | None = None,
) -> Episode:
    """One episode of `policy` in `env` (reset with `seed` and `options`) under the runtime's chunk schedule."""
    from fleet.sim.rollout import rollout

    controller = ChunkedController(policy, execute_steps=execute_steps, prefetch_steps=prefetch_steps)
    return rollout(
        env, controller, seed=seed, robot_id="eval", episode_id=f"eval-seed{seed}", source="eval", options=options
    )


def load_policy(
    checkpoint: Path | str | None = None, *, version: str | None = None, embedder: InstructionEmbedder | None = None
) -> Any:
    """A `VLAPolicy` from a checkpoint directory, or from a registry version (downloaded, signature-checked)."""
    from fleet.policy.policy import VLAPolicy

    if version is None:
        if checkpoint is None:
            raise ValueError("give a checkpoint directory or a registry version")
        return VLAPolicy.from_checkpoint(checkpoint, embedder=embedder)
    import tempfile

    from fleet.registry import Registry
    from fleet.settings import Settings

    registry = Registry(Settings())
    info = registry.get_version(version)
    signed = registry.verify(info)  # SignatureError: no trusted key signed it
    with tempfile.TemporaryDirectory(prefix="fleet-eval-") as scratch:  # weights are in memory once loaded
        local = registry.download(info.version, Path(scratch))
        return VLAPolicy.from_checkpoint(
            local,
            expected_sha256=signed.weights_sha256,
            expected_config_sha256=signed.config_sha256,
            embedder=embedder,
        )


def evaluate(
    policy_or_checkpoint: Policy | Path | str,
    tasks: Sequence[str],
    embodiments: Sequence[str],
    episodes: int,
    seed: int = 100_000,
    *,
    execute_steps: int | None = EXECUTE_STEPS,
    prefetch_steps: int = PREFETCH_STEPS,
    gif_dir: Path | str | None = None,
    image_size: int = 64,
    embedder: InstructionEmbedder | None = None,
    on_episode: Callable[[Episode], None] | None = None,
    scenario: str = "nominal",
    instructions: InstructionSet | None = None,
) -> Rates:
    """Success rate of the policy on `episodes` seeded episodes per task x embodiment, in `scenario`'s conditions;
    `instructions` says each episode's instruction its way (the same scenes: the seeds decide them)."""
    from fleet.sim.registry import make_env
    from fleet.sim.rollout import save_gif
    from fleet.sim.tasks import TASKS

    policy = policy_or_checkpoint
    if isinstance(policy, (str, Path)):
        policy = load_policy(policy, embedder=embedder)
    rates: Rates = {}
    for task in tasks:
        rates[task] = {}
        for embodiment in embodiments:
            env = make_env(task, embodiment, seed=seed, image_size=image_size, scenario=scenario)
            try:
                wins = 0
                for k in range(episodes):
                    options = instructions.options(task, k, TASKS[task].phrasings) if instructions else None
                    episode = policy_rollout(
                        env, policy, seed=seed + k, execute_steps=execute_steps, prefetch_steps=prefetch_steps,
                        options=options,
                    )  # fmt: skip
                    wins += int(episode.meta.success)
                    if k == 0 and gif_dir is not None:
                        save_gif(episode, Path(gif_dir) / f"{task}-{embodiment}.gif", scale=1)
                    if on_episode is not None:
                        on_episode(episode)
            finally:
                env.close()
            rates[task][embodiment] = wins / episodes
    return rates


def format_table(rates: Rates) -> str:
    """Success rates as a fixed-width table, one row per task, one column per embodiment, plus means."""
    embodiments = sorted({e for row in rates.values() for e in row})
    lines = [f"{'task':<10}" + "".join(f"{e:>9}" for e in embodiments) + f"{'mean':>9}"]
    for task, row in rates.items():
        cells = "".join(f"{row[e]:>9.2f}" if e in row else f"{'-':>9}" for e in embodiments)
        lines.append(f"{task:<10}{cells}{float(np.mean(list(row.values()))):>9.2f}")
    return "\n".join(lines)


def mean_rate(rates: Rates) -> float:
    return float(np.mean([r for row in rates.values() for r in row.values()]))


def main(config: EvalConfig, *, embedder: InstructionEmbedder | None = None) -> Rates:
    """Evaluate with a progress bar, print the table, write the JSON (if `config.out`); return the rates."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    from fleet.sim.language import load_instruction_set

    instructions = load_instruction_set(config.instructions) if config.instructions else None
    policy = load_policy(config.checkpoint, version=config.version, embedder=embedder)
    total = len(config.tasks) * len(config.embodiments) * config.episodes
    with tqdm(total=total, desc="eval", unit="ep", disable=not config.progress) as bar:

        def tick(episode: Episode) -> None:
            bar.set_postfix_str(f"{episode.meta.task}/{episode.meta.embodiment}")
            bar.update(1)

        rates = evaluate(
            policy, config.tasks, config.embodiments, config.episodes, config.seed,
            execute_steps=config.execute_steps, prefetch_steps=config.prefetch_steps, gif_dir=config.gif_dir,
            image_size=config.image_size, on_episode=tick, scenario=config.scenario, instructions=instructions,
        )  # fmt: skip
    print(format_table(rates))
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
        config.out.write_text(json.dumps({"success": rates, "mean": mean_rate(rates), "config": settings}, indent=1))
    return rates
