"""`fleet export lerobot`: recorded episodes as a LeRobotDataset v3.0, read back here with pyarrow and PyAV the way
lerobot 0.6.1's reader does (research/lerobot_v3_format.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fleet.episodes import Episode
from fleet.export.lerobot import export, select
from tests.policy.fakes import make_episode


def _smooth(episode: Episode, shift: int) -> Episode:
    """Frames H.264 keeps nearly exactly: gradients that move with the step."""
    n = episode.meta.length
    y, x = np.mgrid[0:64, 0:64]
    frames = np.stack(
        [np.stack([x * 2 + t * 3 + shift, y * 3 + shift, np.full_like(x, 40 + t * 4)], axis=-1) for t in range(n)]
    ).astype(np.uint8)  # fmt: skip  (no value passes 255: no hard edge)
    intervention = np.zeros(n, dtype=bool)
    intervention[2:4] = True
    meta = dataclasses.replace(episode.meta, model_version="7", interventions=2)
    return dataclasses.replace(episode, meta=meta, frames={"front": frames}, intervention=intervention)


def _episodes() -> list[Episode]:
    a = _smooth(make_episode("panda", length=12, seed=1, episode_id="a", instruction="pick up the red cube"), 0)
    b = _smooth(make_episode("panda", length=7, seed=2, episode_id="b", instruction="lift the blue cube"), 60)
    b = dataclasses.replace(b, timestamps=b.timestamps + 100.0)
    return [a, b]


def test_an_export_holds_every_value_where_lerobot_reads_it(tmp_path: Path) -> None:
    import av
    import pandas as pd
    import pyarrow.parquet as pq

    kind, episodes = select(_episodes(), embodiment=None, task=None, since=None)
    summary = export(episodes, tmp_path / "ds", embodiment=kind)
    root = summary.root
    info = json.loads((root / "meta" / "info.json").read_text())
    assert (info["codebase_version"], info["fps"], info["total_episodes"], info["total_frames"]) == ("v3.0", 10, 2, 19)
    data = pq.read_table(root / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    declared = {k for k, f in info["features"].items() if f["dtype"] != "video"}
    assert set(data) == declared  # exactly the declared non-video features: lerobot refuses extra columns
    np.testing.assert_allclose(np.array(data["observation.state"]), np.concatenate([e.proprio for e in episodes]))
    np.testing.assert_allclose(np.array(data["action"]), np.concatenate([e.actions for e in episodes]))
    assert data["index"] == list(range(19)) and data["episode_index"] == [0] * 12 + [1] * 7
    assert data["frame_index"][12:] == list(range(7)) and data["timestamp"][13] == pytest.approx(0.1)
    assert data["is_intervention"][2:4] == [True, True] and sum(data["is_intervention"]) == 4
    assert data["next.done"].count(True) == 2 and data["next.done"][11] and data["model_version"][0] == "7"
    tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
    assert list(tasks.index) == ["pick up the red cube", "lift the blue cube"] and tasks.index.name == "task"
    assert [tasks.index[i] for i in (data["task_index"][0], data["task_index"][-1])] == list(tasks.index)
    meta = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    assert meta["dataset_from_index"] == [0, 12] and meta["dataset_to_index"] == [12, 19]
    assert meta["videos/observation.images.front/from_timestamp"] == [0.0, 1.2]
    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [19] and "q99" in stats["observation.state"]

    # the video: frame k at pts k / fps, each within H.264's error of the recorded one (lerobot checks 1e-4 s)
    recorded = np.concatenate([e.frames["front"] for e in episodes])
    with av.open(str(root / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4")) as container:
        decoded = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert [round(t * 10) for t, _ in decoded] == list(range(19))
    assert all(abs(t - k / 10) < 1e-4 for k, (t, _) in enumerate(decoded))
    error = np.abs(np.stack([f for _, f in decoded]).astype(int) - recorded.astype(int))
    assert error.mean() < 2.0, error.mean()


def test_what_cannot_be_one_dataset_is_refused_with_the_reason() -> None:
    mixed = [*_episodes(), make_episode("kuka", length=5, seed=3, episode_id="c")]
    with pytest.raises(ValueError, match="several embodiments"):
        select(mixed, embodiment=None, task=None, since=None)
    assert len(select(mixed, embodiment="kuka", task=None, since=None)[1]) == 1
    assert len(select(mixed, embodiment="panda", task=None, since=50.0)[1]) == 1  # started at 100 s
    with pytest.raises(ValueError, match="no recorded episode"):
        select(mixed, embodiment=None, task="push", since=None)


# Both read LeRobotDataset v3.0: the last release for Python 3.11 and the current one (0.5+ need Python 3.12, which
# these machines carry beside 3.11; a machine without it fails here, it does not skip).
LEROBOTS = [("lerobot==0.4.4", None), ("lerobot[dataset]==0.6.1", "3.12")]  # 0.6 reads datasets with its extra


@pytest.mark.integration
@pytest.mark.timeout(1500)  # the first run installs lerobot and its torch into a cached environment
@pytest.mark.parametrize(("lerobot", "interpreter"), LEROBOTS, ids=["0.4.4-py3.11", "0.6.1-py3.12"])
def test_lerobot_itself_loads_the_export_and_every_value_is_what_was_recorded(
    tmp_path: Path, lerobot: str, interpreter: str | None
) -> None:
    import os
    import subprocess

    from tests.envs import cached_env

    python = cached_env("lerobot", (lerobot,), interpreter=interpreter)
    kind, episodes = select(_episodes(), embodiment=None, task=None, since=None)
    root = export(episodes, tmp_path / "ds", embodiment=kind).root
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets")}  # fmt: skip
    driver = Path(__file__).with_name("lerobot_driver.py")
    ran = subprocess.run([python, str(driver), str(root)], capture_output=True, text=True, env=env, timeout=600)
    assert ran.returncode == 0, ran.stderr[-4000:]
    loaded = json.loads(ran.stdout.strip().splitlines()[-1])
    assert (loaded["len"], loaded["episodes"], loaded["fps"]) == (19, 2, 10)
    steps = [(e, t) for e in episodes for t in range(e.meta.length)]
    for i, (item, (episode, t)) in enumerate(zip(loaded["frames"], steps, strict=True)):
        assert item["index"] == i and item["frame_index"] == t and item["task"] == episode.meta.instruction
        assert item["timestamp"] == pytest.approx(t / 10, abs=1e-6)
        np.testing.assert_array_equal(np.float32(item["observation.state"]), episode.proprio[t])
        np.testing.assert_array_equal(np.float32(item["action"]), episode.actions[t])
        assert item["next.reward"] == pytest.approx(float(episode.rewards[t]))
        assert item["next.done"] == (t == episode.meta.length - 1)
        assert item["is_intervention"] == bool(episode.intervention[t]) and item["model_version"] == "7"
        image = np.asarray(item["observation.images.front"], dtype=int)
        assert np.abs(image - episode.frames["front"][t].astype(int)).mean() < 2.0, (i, t)  # H.264, near-lossless


def test_an_export_comes_back_as_the_same_demonstrations_and_a_foreign_dataset_gets_the_reason(tmp_path: Path) -> None:
    from fleet.export.lerobot import FeatureMap, read_dataset

    kind, episodes = select(_episodes(), embodiment=None, task=None, since=None)
    root = export(episodes, tmp_path / "ds", embodiment=kind).root
    mapping = FeatureMap(embodiment="panda", task="pick", cameras={"front": "observation.images.front"})
    back = list(read_dataset(root, mapping))
    assert [e.meta.length for e in back] == [12, 7] and all(e.meta.source == "demo" for e in back)
    for got, sent in zip(back, episodes, strict=True):
        assert got.meta.instruction == sent.meta.instruction and got.meta.interventions == 2
        np.testing.assert_array_equal(got.proprio, sent.proprio)
        np.testing.assert_array_equal(got.actions, sent.actions)
        np.testing.assert_array_equal(got.intervention, sent.intervention)
        assert np.abs(got.frames["front"].astype(int) - sent.frames["front"].astype(int)).mean() < 2.0
    with pytest.raises(ValueError, match=r"'observation.state' has shape \[10\], kuka needs \[8\]"):
        list(read_dataset(root, FeatureMap(embodiment="kuka", task="pick", cameras={})))
    with pytest.raises(ValueError, match="not a video feature"):
        list(read_dataset(root, FeatureMap(embodiment="panda", task="pick", cameras={"front": "action"})))
    with pytest.raises(ValueError, match="not a LeRobot dataset"):
        list(read_dataset(tmp_path, mapping))
