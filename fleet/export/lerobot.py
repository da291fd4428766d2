"""Recorded episodes as a LeRobotDataset v3.0, the format robot-learning teams keep their data in.

    fleet export lerobot --out DIR [--embodiment panda] [--task pick] [--since 2026-12-01]

What goes where (one dataset per embodiment: a LeRobot dataset has one state and one action shape):

- `data/chunk-000/file-000.parquet`: per frame `observation.state` (proprio), `action`, `next.reward`, `next.done`,
  `is_intervention` (a human drove this step), `model_version` (the registry version that acted; "" for scripted
  or human), and LeRobot's own `timestamp`, `frame_index`, `episode_index`, `index`, `task_index`.
- `videos/observation.images.<camera>/chunk-000/file-000.mp4`: each camera's frames, every episode back to back
  (H.264, yuv420p, constant `fps`; frame k of the file has pts k / fps, as LeRobot's loader checks).
- `meta/tasks.parquet`: the instructions as they were said (LeRobot's "task" is the language instruction).
- `meta/episodes/chunk-000/file-000.parquet`: per episode its length, task, global index range, where its frames
  start in each video, and fleet's own episode id, robot, success and source.
- `meta/stats.json`: min, max, mean, std, count and the 1/10/50/90/99% quantiles per feature (video per channel,
  in [0, 1]), which LeRobot's policies normalise with.
- `meta/info.json`: the schema, fps and counts.

The layout follows lerobot 0.6.1's reader (research/lerobot_v3_format.md); tests/data/test_lerobot_export.py
loads an export with the `lerobot` package itself.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleet.embodiments import get_embodiment
from fleet.episodes import Episode

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"  # LeRobot's templates (info.json has them)
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
DATA = DATA_PATH.format(chunk_index=0, file_index=0)  # an export is one file of each
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
DEFAULT_FEATURES = {name: {"dtype": dtype, "shape": [1], "names": None} for name, dtype in (
    ("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
    ("task_index", "int64"))}  # fmt: skip


@dataclass(frozen=True)
class ExportSummary:
    root: Path
    embodiment: str
    episodes: int
    frames: int
    tasks: int
    cameras: tuple[str, ...]


def _stats(values: np.ndarray) -> dict[str, list[Any]]:
    """LeRobot's per-feature statistics of a (frames, n) array."""
    values = values.astype(np.float64)
    out: dict[str, list[Any]] = {
        "min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(), "count": [int(len(values))],
    }  # fmt: skip
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = np.quantile(values, q, axis=0).tolist()
    return out


def _image_stats(frames: np.ndarray) -> dict[str, list[Any]]:
    """Per channel over (sampled) frames, scaled to [0, 1], each stat shaped (3, 1, 1) as LeRobot keeps them."""
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0
    flat = _stats(pixels)
    return {k: (v if k == "count" else [[[c]] for c in v]) for k, v in flat.items()} | {"count": [int(len(frames))]}


def _write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """`frames` (N, H, W, 3) uint8 as H.264 at a constant `fps`, frame k at pts k (time base 1 / fps)."""
    from fractions import Fraction

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"crf": "10", "g": "2", "bf": "0"}  # near-lossless, seekable every 2 frames, no B-frames
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = k
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def select(
    episodes: Iterable[Episode], *, embodiment: str | None, task: str | None, since: float | None
) -> tuple[str, list[Episode]]:
    """The episodes to export (ordered by start), and their embodiment; ValueError when none match or they mix
    embodiments without `embodiment` choosing one."""
    chosen = [
        e for e in episodes
        if e.meta.length > 0 and (task is None or e.meta.task == task)
        and (embodiment is None or e.meta.embodiment == embodiment)
        and (since is None or float(e.timestamps[0]) >= since)
    ]  # fmt: skip
    if not chosen:
        raise ValueError("no recorded episode matches (check --embodiment, --task and --since)")
    kinds = sorted({e.meta.embodiment for e in chosen})
    if len(kinds) > 1:
        raise ValueError(f"the episodes come from several embodiments {kinds}: export one at a time (--embodiment)")
    chosen.sort(key=lambda e: (float(e.timestamps[0]), e.meta.robot_id, e.meta.episode_id))
    return kinds[0], chosen


def export(episodes: Sequence[Episode], out: Path, *, embodiment: str, robot_type: str | None = None) -> ExportSummary:
    """Write `episodes` (one embodiment, see `select`) as a LeRobotDataset v3.0 in `out` (replaced if present)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = get_embodiment(embodiment)
    fps = int(round(spec.control_hz))
    cameras = tuple(sorted(episodes[0].frames))
    if any(tuple(sorted(e.frames)) != cameras for e in episodes):
        raise ValueError(f"episodes differ in cameras; every one needs {list(cameras)}")
    size = episodes[0].frames[cameras[0]].shape[1:3] if cameras else (0, 0)
    if out.exists():
        shutil.rmtree(out)
    (out / "meta").mkdir(parents=True)

    tasks = list(dict.fromkeys(e.meta.instruction for e in episodes))  # first-said order
    task_index = {t: i for i, t in enumerate(tasks)}
    lengths = [e.meta.length for e in episodes]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    total = int(starts[-1])

    def column(name: str) -> np.ndarray:
        return np.concatenate([getattr(e, name) for e in episodes])

    state, action = column("proprio").astype(np.float32), column("actions").astype(np.float32)
    reward, intervention = column("rewards").astype(np.float32), column("intervention").astype(bool)
    frame_index = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
    done = np.zeros(total, dtype=bool)
    done[starts[1:] - 1] = True
    table = pa.table({
        "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.ravel()), spec.proprio_dim),
        "action": pa.FixedSizeListArray.from_arrays(pa.array(action.ravel()), spec.action_dim),
        "next.reward": pa.array(reward),
        "next.done": pa.array(done),
        "is_intervention": pa.array(intervention),
        "model_version": pa.array([e.meta.model_version or "" for e in episodes for _ in range(e.meta.length)]),
        "timestamp": pa.array((frame_index / fps).astype(np.float32)),
        "frame_index": pa.array(frame_index),
        "episode_index": pa.array(np.repeat(np.arange(len(episodes)), lengths).astype(np.int64)),
        "index": pa.array(np.arange(total, dtype=np.int64)),
        "task_index": pa.array(np.repeat([task_index[e.meta.instruction] for e in episodes], lengths).astype(np.int64)),
    })  # fmt: skip
    (out / DATA).parent.mkdir(parents=True)
    pq.write_table(table, out / DATA, compression="snappy")

    features: dict[str, Any] = {
        "observation.state": {"dtype": "float32", "shape": [spec.proprio_dim],
                              "names": [f"proprio_{i}" for i in range(spec.proprio_dim)]},
        "action": {"dtype": "float32", "shape": [spec.action_dim],
                   "names": [f"action_{i}" for i in range(spec.action_dim)]},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "is_intervention": {"dtype": "bool", "shape": [1], "names": None},
        "model_version": {"dtype": "string", "shape": [1], "names": None},
        **DEFAULT_FEATURES,
    }  # fmt: skip
    stats: dict[str, Any] = {
        "observation.state": _stats(state), "action": _stats(action),
        "next.reward": _stats(reward[:, None]), "next.done": _stats(done[:, None]),
        "is_intervention": _stats(intervention[:, None]),
        **{name: _stats(table[name].to_numpy()[:, None]) for name in DEFAULT_FEATURES},
    }  # fmt: skip
    video_columns: dict[str, Any] = {}
    for camera in cameras:
        key = f"observation.images.{camera}"
        frames = np.concatenate([e.frames[camera] for e in episodes])
        _write_video(out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), frames, fps)
        features[key] = {
            "dtype": "video", "shape": [int(size[0]), int(size[1]), 3], "names": ["height", "width", "channels"],
            "info": {"video.height": int(size[0]), "video.width": int(size[1]), "video.codec": "h264",
                     "video.pix_fmt": "yuv420p", "video.fps": fps, "video.channels": 3, "has_audio": False,
                     "is_depth_map": False},
        }  # fmt: skip
        sample = frames[:: max(1, total // 1000)]  # LeRobot samples frames for image statistics too
        stats[key] = _image_stats(sample)
        video_columns |= {
            f"videos/{key}/chunk_index": [0] * len(episodes),
            f"videos/{key}/file_index": [0] * len(episodes),
            f"videos/{key}/from_timestamp": [float(s) / fps for s in starts[:-1]],
            f"videos/{key}/to_timestamp": [float(s) / fps for s in starts[1:]],
        }

    tasks_frame = pd.DataFrame({"task_index": np.arange(len(tasks), dtype=np.int64)},
                               index=pd.Index(tasks, name="task"))  # fmt: skip
    tasks_frame.to_parquet(out / "meta" / "tasks.parquet")
    meta = pa.table({
        "episode_index": pa.array(np.arange(len(episodes), dtype=np.int64)),
        "tasks": pa.array([[e.meta.instruction] for e in episodes], type=pa.list_(pa.string())),
        "length": pa.array(np.asarray(lengths, dtype=np.int64)),
        "data/chunk_index": pa.array([0] * len(episodes), type=pa.int64()),
        "data/file_index": pa.array([0] * len(episodes), type=pa.int64()),
        "dataset_from_index": pa.array(starts[:-1].astype(np.int64)),
        "dataset_to_index": pa.array(starts[1:].astype(np.int64)),
        **{k: pa.array(v) for k, v in video_columns.items()},
        "meta/episodes/chunk_index": pa.array([0] * len(episodes), type=pa.int64()),
        "meta/episodes/file_index": pa.array([0] * len(episodes), type=pa.int64()),
        "fleet/episode_id": pa.array([e.meta.episode_id for e in episodes]),
        "fleet/robot_id": pa.array([e.meta.robot_id for e in episodes]),
        "fleet/success": pa.array([bool(e.meta.success) for e in episodes]),
        "fleet/source": pa.array([e.meta.source for e in episodes]),
    })  # fmt: skip
    (out / EPISODES).parent.mkdir(parents=True)
    pq.write_table(meta, out / EPISODES)
    (out / "meta" / "stats.json").write_text(json.dumps(stats, indent=1))
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type or embodiment,
        "total_episodes": len(episodes), "total_frames": total, "total_tasks": len(tasks),
        "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if cameras else None,
        "features": features,
    }  # fmt: skip
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=1))
    return ExportSummary(out, embodiment, len(episodes), total, len(tasks), cameras)


@dataclass(frozen=True)
class FeatureMap:
    """Which LeRobot features become what in a fleet demonstration."""

    embodiment: str  # fleet's arm the actions and states are for (their sizes must match it)
    task: str  # fleet's task id of the episodes (LeRobot's task string becomes the instruction)
    cameras: dict[str, str]  # fleet camera -> LeRobot video key, e.g. {"front": "observation.images.front"}
    state: str = "observation.state"
    action: str = "action"
    reward: str | None = "next.reward"  # absent: 0 until the last step, 1 there when the episode counts as a success
    intervention: str | None = "is_intervention"  # absent: no human steps


def read_dataset(root: Path, mapping: FeatureMap, *, robot_id: str = "lerobot") -> Iterable[Episode]:
    """The episodes of a LeRobotDataset v3.0 at `root` as fleet demonstrations (source "demo"); ValueError naming
    what cannot be mapped, before any episode is produced."""
    import pyarrow.parquet as pq

    from fleet.episodes import EpisodeMeta

    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise ValueError(f"{root} is not a LeRobot dataset: no meta/info.json")
    info = json.loads(info_path.read_text())
    if not str(info.get("codebase_version", "")).startswith("v3."):
        raise ValueError(f"{root} is a LeRobot {info.get('codebase_version')} dataset; only v3.x reads here")
    features, spec = info.get("features", {}), get_embodiment(mapping.embodiment)
    problems = []
    for key, size in ((mapping.state, spec.proprio_dim), (mapping.action, spec.action_dim)):
        shape = features.get(key, {}).get("shape")
        if shape != [size]:
            problems.append(f"{key!r} has shape {shape}, {mapping.embodiment} needs [{size}]"
                            if shape else f"no feature {key!r} (features: {sorted(features)})")  # fmt: skip
    for camera, key in mapping.cameras.items():
        if features.get(key, {}).get("dtype") != "video":
            problems.append(f"camera {camera!r}: {key!r} is not a video feature of the dataset")
    for optional in (mapping.reward, mapping.intervention):
        if optional is not None and optional not in features:
            problems.append(f"no feature {optional!r} (map it to none to go without)")
    if problems:
        raise ValueError(f"cannot map {root}: " + "; ".join(problems))
    data = pq.read_table(sorted((root / "data").glob("*/*.parquet"))).to_pydict()  # the loader's own file order
    episodes_meta = pq.read_table(sorted((root / "meta" / "episodes").glob("*/*.parquet"))).to_pydict()
    videos = {camera: _read_videos(root, info, key, episodes_meta) for camera, key in mapping.cameras.items()}
    tasks = pq.read_table(root / "meta" / "tasks.parquet").to_pandas()
    instruction = {int(i): str(t) for t, i in zip(tasks.index, tasks["task_index"], strict=True)}
    rows, task_of = np.asarray(data["episode_index"]), np.asarray(data["task_index"])
    timestamps = np.asarray(data["timestamp"], dtype=np.float64)
    state, action = np.asarray(data[mapping.state], dtype=np.float32), np.asarray(data[mapping.action], np.float32)
    reward = np.asarray(data[mapping.reward], dtype=np.float32) if mapping.reward else None
    human = np.asarray(data[mapping.intervention], dtype=bool) if mapping.intervention else np.zeros(len(rows), bool)
    for k, episode_index in enumerate(episodes_meta["episode_index"]):
        at = np.flatnonzero(rows == episode_index)
        n = len(at)
        rewards = reward[at] if reward is not None else np.eye(1, n, n - 1, dtype=np.float32)[0]
        meta = EpisodeMeta(
            robot_id=robot_id, episode_id=f"lerobot-{int(episode_index):06d}", embodiment=mapping.embodiment,
            task=mapping.task, instruction=instruction[int(task_of[at[0]])], model_version=None, length=n,
            success=bool(n and rewards.max() > 0), interventions=int(human[at].sum()), source="demo",
        )  # fmt: skip
        yield Episode(
            meta=meta, timestamps=timestamps[at], proprio=state[at], actions=action[at], rewards=rewards,
            intervention=human[at], frames={camera: frames[k] for camera, frames in videos.items()},
        )  # fmt: skip


def _read_videos(root: Path, info: dict[str, Any], key: str, episodes: dict[str, list[Any]]) -> list[np.ndarray]:
    """Each episode's frames of one video feature, found by its file and start time as LeRobot finds them."""
    import av

    fps = int(info["fps"])
    template = info.get("video_path") or VIDEO_PATH
    decoded: dict[Path, np.ndarray] = {}
    out = []
    for k, length in enumerate(episodes["length"]):
        path = root / template.format(video_key=key, chunk_index=episodes[f"videos/{key}/chunk_index"][k],
                                      file_index=episodes[f"videos/{key}/file_index"][k])  # fmt: skip
        if path not in decoded:
            with av.open(str(path)) as container:
                decoded[path] = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        start = int(round(float(episodes[f"videos/{key}/from_timestamp"][k]) * fps))
        out.append(decoded[path][start : start + int(length)])
    return out
