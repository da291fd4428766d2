"""Scripted demonstrations for the recipe: the expert on every task x embodiment, into one episode store.

    collect_demos_grid(EpisodeStore(".fleet/demos"), ["pick", "push"], ["panda", "kuka"], episodes=50, seed=0)

Episode ids are `<task>-<embodiment>-seed<k>` (`fleet.sim.rollout.collect_demos`), so collecting again
with the same seed replaces episodes instead of duplicating them. Each cell gets `episodes`
*successful* demonstrations: seeds where the expert fails (< 5%) are skipped and later seeds fill in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.defaults import DEFAULT_EMBODIMENTS, DEFAULT_TASKS
from fleet.episodes import Episode, EpisodeMeta, EpisodeStore

MAX_TOP_UPS = 5  # rounds of extra seeds per cell when the expert failed some


@dataclass(frozen=True)
class DemoConfig:
    """One `fleet demos collect` run."""

    out: Path  # episode store root the demonstrations are written to
    tasks: tuple[str, ...] = DEFAULT_TASKS  # task ids (fleet.sim.TASKS)
    embodiments: tuple[str, ...] = DEFAULT_EMBODIMENTS  # embodiment ids; each must run every task
    episodes: int = 50  # successful demonstrations per task x embodiment
    seed: int = 0  # first env seed of every cell (seeds seed, seed+1, ...)
    image_size: int = 64  # camera side in pixels (must match the model's image_size)
    noise_std: float = 0.0  # expert action noise, for more varied demonstrations
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self) -> None:
        if not self.tasks or not self.embodiments:
            raise ValueError("DemoConfig: give at least one task and one embodiment")
        if self.episodes <= 0 or self.image_size <= 0:
            raise ValueError("DemoConfig: episodes and image_size must be positive")
        if self.seed < 0 or self.noise_std < 0:
            raise ValueError("DemoConfig: seed and noise_std must be >= 0")


def collect_demos_grid(
    store: EpisodeStore,
    tasks: Sequence[str],
    embodiments: Sequence[str],
    episodes: int,
    seed: int = 0,
    *,
    image_size: int = 64,
    noise_std: float = 0.0,
    on_episode: Callable[[Episode], None] | None = None,
) -> int:
    """Write `episodes` successful expert demonstrations per task x embodiment to `store`; return how many.

    Unknown tasks/embodiments fail up front (with a did-you-mean hint), before any simulation runs.
    """
    from fleet.sim.registry import get_task
    from fleet.sim.rollout import collect_demos

    for task in tasks:
        spec = get_task(task)
        missing = [e for e in embodiments if e not in spec.embodiments]
        if missing:
            raise ValueError(f"task {task!r} runs on {list(spec.embodiments)}, not {missing}")
    written = 0
    for task in tasks:
        for embodiment in embodiments:
            got, start, want = 0, seed, episodes
            for _ in range(1 + MAX_TOP_UPS):
                paths = collect_demos(
                    store, task=task, embodiment=embodiment, episodes=want, seed=start,
                    image_size=image_size, noise_std=noise_std, on_episode=on_episode,
                )  # fmt: skip
                got += len(paths)
                start, want = start + want, episodes - got
                if want <= 0:
                    break
            if got < episodes:
                raise RuntimeError(
                    f"the expert solved only {got}/{episodes} episodes of {task} on {embodiment};"
                    " check fleet.sim.experts"
                )
            written += got
    return written


def main(config: DemoConfig) -> int:
    """Collect the grid with a progress bar (one tick per simulated episode); return the number written."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    total = len(config.tasks) * len(config.embodiments) * config.episodes
    with tqdm(total=total, desc="demos", unit="ep", disable=not config.progress) as bar:

        def tick(episode: Episode) -> None:
            bar.set_postfix_str(f"{episode.meta.task}/{episode.meta.embodiment}")
            if episode.meta.success:
                bar.update(1)

        return collect_demos_grid(
            EpisodeStore(config.out), config.tasks, config.embodiments, config.episodes, config.seed,
            image_size=config.image_size, noise_std=config.noise_std, on_episode=tick,
        )  # fmt: skip


def select_demos(
    store: EpisodeStore,
    *,
    tasks: Sequence[str] | None = None,
    embodiments: Sequence[str] | None = None,
    per_task: int | None = None,
) -> list[EpisodeMeta]:
    """Successful demonstrations in `store` (optionally of some tasks/embodiments), sorted by id.

    With `per_task`, keeps that many per task, spread evenly across its embodiments (round-robin in id
    order), which is how post-training picks "N demos of a task across embodiments".
    """
    metas = [store.read_meta(robot, episode) for robot, episode in store.list()]
    metas = [
        m for m in metas
        if m.success and m.source == "demo"
        and (tasks is None or m.task in tasks) and (embodiments is None or m.embodiment in embodiments)
    ]  # fmt: skip
    metas.sort(key=lambda m: (m.task, m.embodiment, _seed_order(m.episode_id), m.episode_id))
    if per_task is None:
        return metas
    chosen: list[EpisodeMeta] = []
    for task in sorted({m.task for m in metas}):
        bodies = sorted({m.embodiment for m in metas if m.task == task})
        queues = [[m for m in metas if m.task == task and m.embodiment == e] for e in bodies]
        picked: list[EpisodeMeta] = []
        while len(picked) < per_task and any(queues):
            for queue in queues:
                if queue and len(picked) < per_task:
                    picked.append(queue.pop(0))
        if len(picked) < per_task:
            raise ValueError(
                f"only {len(picked)} successful demos of {task!r} in {store.root}, need {per_task};"
                f" run `fleet demos collect --tasks {task} --episodes {per_task}`"
            )
        chosen.extend(picked)
    return chosen


def _seed_order(episode_id: str) -> int:
    tail = episode_id.rsplit("seed", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def load_episodes(store: EpisodeStore, metas: Sequence[EpisodeMeta]) -> list[Episode]:
    """Full episodes (frames included) for the given metadata."""
    return [store.read(m.robot_id, m.episode_id) for m in metas]
