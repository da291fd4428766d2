"""`collect_demos_grid` / `select_demos`: N successful demos per cell, and post-training's pick across embodiments."""

from __future__ import annotations

import pytest

from fleet.episodes import EpisodeStore
from fleet.recipe.demos import collect_demos_grid, select_demos
from tests.recipe.conftest import DEMO_EMBODIMENTS, DEMOS_PER_CELL


def test_collect_writes_n_successful_episodes_per_cell(demo_store: tuple[EpisodeStore, int]) -> None:
    store, written = demo_store
    metas = [store.read_meta(robot, episode) for robot, episode in store.list()]
    assert written == len(metas) == DEMOS_PER_CELL * len(DEMO_EMBODIMENTS)
    assert all(m.success and m.source == "demo" and m.task == "pick" for m in metas)
    assert sorted({m.embodiment for m in metas}) == sorted(DEMO_EMBODIMENTS)


def test_select_spreads_demos_of_a_task_across_embodiments(demo_store: tuple[EpisodeStore, int]) -> None:
    store, _ = demo_store
    picked = select_demos(store, tasks=["pick"], per_task=2)
    assert sorted(m.embodiment for m in picked) == ["kuka", "panda"]
    with pytest.raises(ValueError, match="fleet demos collect"):
        select_demos(store, tasks=["pick"], per_task=99)


def test_unknown_task_or_unsupported_embodiment_fails_before_simulating(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(KeyError, match="Did you mean 'pick'"):
        collect_demos_grid(EpisodeStore(tmp_path), ["pik"], ["panda"], 1)
    with pytest.raises(ValueError, match="runs on"):
        collect_demos_grid(EpisodeStore(tmp_path), ["pick"], ["sawyer"], 1)
    assert EpisodeStore(tmp_path).list() == []
