"""The episode store: one directory per episode, one `.npy` file per column, JSON metadata.

Layout (format version 3)::

    <root>/<robot_id>/<episode_id>/
        meta.json            EpisodeMeta (robot, embodiment, task, instruction, model version, length,
                             success, interventions, format_version)
        timestamps.npy       float64 (T,)            wall-clock seconds of each step
        proprio.npy          float32 (T, P)          proprioceptive state before the action
        actions.npy          float32 (T, A)          action executed at each step
        rewards.npy          float32 (T,)            step reward
        intervention.npy     bool    (T,)            True where a human (supervisor) drove the step
        frames/<camera>.npy.zst  uint8 (T, H, W, 3)  RGB frames per camera: a `.npy` file, zstd-compressed
                             (one or more zstd frames whose contents, concatenated, are the file)

Everything is plain NumPy `.npy` loaded with `allow_pickle=False`, so reading a store never executes code. Frames
are compressed because they are almost all of an episode's bytes: two 64x64 cameras take 24.6 kB a step raw and
~0.4 kB compressed (rendered scenes are flat), and compressing ten steps costs ~0.04 ms here, far less than writing
their raw bytes (a fleet of 1,000 robots at 10 Hz records 10,000 steps a second: ~250 MB/s raw). The recorder
writes robots' frames as they came off the wire (`ZstdFrames`: one zstd frame per segment after the `.npy` header's),
so an episode's pixels are never decompressed and compressed again on the way in. Format versions 1 (frames as plain
`frames/<camera>.npy`) and 2 (each frames file one zstd frame) are still read; version 3 differs only in allowing
several frames, which a version-2 reader would cut short, hence the new number. Episodes are written to a temporary
directory and renamed into place, so a reader never sees half an episode. Used by the recorder (from the Kafka
stream), by `fleet demos collect` (scripted demonstrations) and by training (`iter_episodes`).

`episode_from_segments` is the one rule that turns a robot's trajectory segments into an episode: the recorder (for
the store and the DB) and the learner (for replay) both use it, so an episode is the same episode in both.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zstandard

if TYPE_CHECKING:
    from fleet.schemas import TrajectorySegment

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # 1: frames/<camera>.npy uncompressed; 2: each frames file one zstd frame
_COLUMNS = {
    "timestamps": np.float64,
    "proprio": np.float32,
    "actions": np.float32,
    "rewards": np.float32,
    "intervention": np.bool_,
}


@dataclass(frozen=True)
class EpisodeMeta:
    """What the DB and the dashboard know about an episode."""

    robot_id: str
    episode_id: str
    embodiment: str
    task: str
    instruction: str
    model_version: str | None  # registry version that acted; None for scripted demonstrations
    length: int
    success: bool
    interventions: int  # number of steps a human drove
    source: str = "fleet"  # "fleet" (online stream) or "demo" (scripted expert)
    missed_ticks: int = 0  # control ticks that overran their deadline while it ran (real-time robots)
    format_version: int = FORMAT_VERSION


@dataclass
class Episode:
    """A whole episode in memory: metadata plus its columns."""

    meta: EpisodeMeta
    timestamps: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    intervention: np.ndarray
    frames: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.meta.length
        for name in _COLUMNS:
            column = getattr(self, name)
            if len(column) != n:
                raise ValueError(
                    f"episode {self.meta.episode_id}: column {name} has {len(column)} steps, meta says {n}"
                )
        for camera, frames in self.frames.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != n or frames.shape[-1] != 3:
                raise ValueError(
                    f"episode {self.meta.episode_id}: camera {camera!r} frames must be uint8 (T, H, W, 3) with T={n},"
                    f" got {frames.dtype} {frames.shape}"
                )


def _compressed_npy(array: np.ndarray) -> bytes:
    from fleet.schemas import zstd_contexts

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return zstd_contexts()[0].compress(buffer.getvalue())


@dataclass(frozen=True)
class ZstdFrames:
    """A camera's uint8 (T, H, W, 3) frames as zstd frames whose contents, concatenated, are the array's bytes in C
    order: how robots send them (one frame per segment), so they are stored without recompressing."""

    shape: tuple[int, ...]
    chunks: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.shape) != 4 or self.shape[-1] != 3 or 0 in self.shape:
            raise ValueError(f"frames must have shape (T, H, W, 3), got {self.shape}")
        sizes = [zstandard.frame_content_size(chunk) for chunk in self.chunks]
        need = math.prod(self.shape)
        if any(size < 0 for size in sizes) or sum(sizes) != need:
            raise ValueError(f"zstd frames hold {sizes} B (unknown: -1), frames of shape {self.shape} need {need} B")

    def npy_zst(self) -> bytes:
        from fleet.schemas import zstd_contexts

        header = io.BytesIO()
        descr = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(header, descr)
        return zstd_contexts()[0].compress(header.getvalue()) + b"".join(self.chunks)


def _load_compressed_npy(path: Path) -> np.ndarray:
    """A zstd-compressed `.npy` file (one zstd frame or several in a row), never unpickled."""
    from fleet.schemas import zstd_contexts

    try:
        with open(path, "rb") as f, zstd_contexts()[1].stream_reader(f, read_across_frames=True) as reader:
            raw = reader.read()
    except zstandard.ZstdError as e:
        raise ValueError(f"{path}: not a zstd-compressed .npy file ({e})") from None
    return np.load(io.BytesIO(raw), allow_pickle=False)


def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


# Each readable format version's frames: the file suffix after the camera's name, and how such a file is read.
_FRAMES: dict[int, tuple[str, Callable[[Path], np.ndarray]]] = {
    1: (".npy", _load_npy),
    2: (".npy.zst", _load_compressed_npy),
    3: (".npy.zst", _load_compressed_npy),
}


class EpisodeStore:
    """Directory-backed episode store (see module docstring for the layout)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, robot_id: str, episode_id: str) -> Path:
        for part in (robot_id, episode_id):
            if not part or "/" in part or part.startswith(".") or "\\" in part:
                raise ValueError(f"invalid id for the episode store: {part!r}")
        return self.root / robot_id / episode_id

    def exists(self, robot_id: str, episode_id: str) -> bool:
        return (self.path(robot_id, episode_id) / "meta.json").is_file()

    def write(
        self, episode: Episode, *, compressed_frames: Mapping[str, ZstdFrames] | None = None, durable: bool = True
    ) -> Path:
        """Write an episode atomically; writing the same episode again replaces it (idempotent).

        `compressed_frames` are cameras given as zstd frames instead of arrays in `episode.frames` (the recorder's).
        `durable=False` leaves out the fsync of its metadata: for a caller that flushes the disks itself before it
        lets go of another copy (the recorder, whose staging log holds the episode until then).
        """
        meta = episode.meta
        compressed = dict(compressed_frames or {})
        for camera, zf in compressed.items():
            if camera in episode.frames:
                raise ValueError(f"episode {meta.episode_id}: camera {camera!r} given both as an array and compressed")
            if zf.shape[0] != meta.length:
                raise ValueError(
                    f"episode {meta.episode_id}: camera {camera!r} has {zf.shape[0]} frames for {meta.length} steps"
                )
        final = self.path(meta.robot_id, meta.episode_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{meta.episode_id}-{uuid.uuid4().hex[:8]}"
        (tmp / "frames").mkdir(parents=True)
        try:
            for name, dtype in _COLUMNS.items():
                np.save(tmp / f"{name}.npy", np.asarray(getattr(episode, name), dtype=dtype), allow_pickle=False)
            suffix = _FRAMES[FORMAT_VERSION][0]
            for camera, frames in episode.frames.items():
                (tmp / "frames" / f"{camera}{suffix}").write_bytes(_compressed_npy(frames))
            for camera, zf in compressed.items():
                (tmp / "frames" / f"{camera}{suffix}").write_bytes(zf.npy_zst())
            with open(tmp / "meta.json", "w") as f:
                json.dump({**asdict(meta), "format_version": FORMAT_VERSION}, f, indent=1)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def read_meta(self, robot_id: str, episode_id: str) -> EpisodeMeta:
        with open(self.path(robot_id, episode_id) / "meta.json") as f:
            raw = json.load(f)
        if raw.get("format_version") not in READABLE_VERSIONS:
            raise ValueError(
                f"episode {robot_id}/{episode_id}: unsupported format_version {raw.get('format_version')}"
                f" (this fleet reads {list(READABLE_VERSIONS)})"
            )
        return EpisodeMeta(**raw)

    def read(self, robot_id: str, episode_id: str, *, frames: bool = True) -> Episode:
        directory = self.path(robot_id, episode_id)
        meta = self.read_meta(robot_id, episode_id)
        columns = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in _COLUMNS}
        cams: dict[str, np.ndarray] = {}
        if frames:
            suffix, load = _FRAMES[meta.format_version]
            for file in sorted((directory / "frames").glob(f"*{suffix}")):
                cams[file.name[: -len(suffix)]] = load(file)
        return Episode(meta=meta, frames=cams, **columns)

    def list(self) -> list[tuple[str, str]]:
        """(robot_id, episode_id) of every complete episode, sorted."""
        if not self.root.exists():
            return []
        return sorted(
            (meta.parent.parent.name, meta.parent.name)
            for meta in self.root.glob("*/*/meta.json")
            if not meta.parent.name.startswith(".")
        )

    def iter_episodes(self, *, frames: bool = True) -> Iterator[Episode]:
        for robot_id, episode_id in self.list():
            yield self.read(robot_id, episode_id, frames=frames)


class EpisodeError(ValueError):
    """Segments that do not make one episode (a gap in the steps, columns that do not fit together)."""


def acting_version(steps_by_version: Mapping[str | None, int]) -> str | None:
    """The version an episode belongs to: the one that acted most of its steps (a version over None, scripted, on
    a tie). A robot that hot-reloads mid-episode runs two; the episode counts for the one that did most of it."""
    return max(steps_by_version, key=lambda v: (steps_by_version[v], v is not None))


def episode_from_segments(
    segments: Sequence[TrajectorySegment], *, success: bool | None = None, source: str = "fleet"
) -> Episode:
    """One episode from all of its segments, in index order (the last one `done`).

    The steps must follow on without a gap or overlap (each segment starts where the one before ended). The episode
    belongs to the model version that acted in most of its steps (a swap mid-episode splits its segments; steps
    driven by no version, `None`, lose ties). `success` overrides the last segment's (a late reward label);
    interventions and missed control ticks are summed. Raises `EpisodeError` with the reason otherwise.
    """
    if not segments:
        raise EpisodeError("no segments")
    step = 0
    for seg in segments:
        if seg.step_start != step:
            raise EpisodeError(f"segment {seg.segment_index} starts at step {seg.step_start}, expected {step}")
        step += seg.length
    first, last = segments[0], segments[-1]
    steps_by_version: Counter[str | None] = Counter()
    for seg in segments:
        steps_by_version[seg.model_version] += seg.length
    version = acting_version(steps_by_version)
    intervention = np.concatenate([s.intervention for s in segments])
    meta = EpisodeMeta(
        robot_id=first.robot_id,
        episode_id=first.episode_id,
        embodiment=first.embodiment,
        task=first.task_id,
        instruction=first.instruction,
        model_version=version,
        length=step,
        success=bool(last.success if success is None else success),
        interventions=int(intervention.sum()),
        source=source,
        missed_ticks=sum(s.missed_ticks for s in segments),
    )
    try:
        return Episode(
            meta=meta,
            timestamps=np.concatenate([s.timestamps for s in segments]),
            proprio=np.concatenate([s.proprio for s in segments]),
            actions=np.concatenate([s.actions for s in segments]),
            rewards=np.concatenate([s.rewards for s in segments]),
            intervention=intervention,
            frames={camera: np.concatenate([s.frames[camera] for s in segments]) for camera in sorted(first.frames)},
        )
    except (KeyError, ValueError) as e:
        raise EpisodeError(f"segments do not fit together: {e}") from None
