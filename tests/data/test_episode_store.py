"""The episode store keeps frames compressed, reads what earlier versions wrote, and refuses what it cannot read."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import zstandard

from fleet.episodes import FORMAT_VERSION, Episode, EpisodeMeta, EpisodeStore, ZstdFrames
from fleet.schemas import zstd_contexts


def _episode(steps: int = 30) -> Episode:
    # A rendered-looking scene: flat colours and an object that moves, so frames compress as rendered ones do.
    frames = np.full((steps, 64, 64, 3), 200, dtype=np.uint8)
    for t in range(steps):
        frames[t, 20:30, t : t + 8] = (180, 30, 30)
    meta = EpisodeMeta("sim-1", "ep-7", "panda", "pick", "pick up the cube", "3", steps, True, 2)
    return Episode(
        meta=meta,
        timestamps=np.arange(steps, dtype=np.float64) / 10,
        proprio=np.random.default_rng(0).normal(size=(steps, 8)).astype(np.float32),
        actions=np.random.default_rng(1).normal(size=(steps, 4)).astype(np.float32),
        rewards=np.zeros(steps, np.float32),
        intervention=np.arange(steps) < 2,
        frames={"front": frames, "wrist": frames[:, ::-1].copy()},
    )


def test_frames_are_written_compressed_and_read_back_exactly(tmp_path: Path) -> None:
    episode = _episode()
    store = EpisodeStore(tmp_path)
    directory = store.write(episode)
    files = sorted(p.name for p in (directory / "frames").iterdir())
    assert files == ["front.npy.zst", "wrist.npy.zst"]
    raw = episode.frames["front"].nbytes
    assert (directory / "frames" / "front.npy.zst").stat().st_size < raw / 20
    back = store.read("sim-1", "ep-7")
    assert back.meta == replace(episode.meta, format_version=FORMAT_VERSION)
    for camera, frames in episode.frames.items():
        np.testing.assert_array_equal(back.frames[camera], frames)
    np.testing.assert_array_equal(back.intervention, episode.intervention)
    assert store.read("sim-1", "ep-7", frames=False).frames == {}


def test_an_episode_of_format_version_1_is_still_read(tmp_path: Path) -> None:
    episode = _episode()
    directory = tmp_path / "sim-1" / "ep-7"
    (directory / "frames").mkdir(parents=True)
    for name in ("timestamps", "proprio", "actions", "rewards", "intervention"):
        np.save(directory / f"{name}.npy", getattr(episode, name), allow_pickle=False)
    for camera, frames in episode.frames.items():
        np.save(directory / "frames" / f"{camera}.npy", frames, allow_pickle=False)
    (directory / "meta.json").write_text(json.dumps({**asdict(episode.meta), "format_version": 1}))
    back = EpisodeStore(tmp_path).read("sim-1", "ep-7")
    assert back.meta.format_version == 1
    np.testing.assert_array_equal(back.frames["wrist"], episode.frames["wrist"])
    np.testing.assert_array_equal(back.proprio, episode.proprio)


def test_an_unknown_format_or_a_corrupt_frames_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    directory = store.write(_episode())
    (directory / "frames" / "front.npy.zst").write_bytes(b"not zstd at all")
    with pytest.raises(ValueError, match=r"front\.npy\.zst: not a zstd-compressed \.npy file"):
        store.read("sim-1", "ep-7")
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match=r"unsupported format_version 99 \(this fleet reads \[1, 2, 3\]\)"):
        store.read_meta("sim-1", "ep-7")


def _chunks(frames: np.ndarray, steps_per_chunk: int) -> tuple[bytes, ...]:
    compress = zstd_contexts()[0].compress
    return tuple(compress(frames[t : t + steps_per_chunk].tobytes()) for t in range(0, len(frames), steps_per_chunk))


def test_frames_given_as_zstd_frames_per_segment_are_stored_as_they_came_and_read_back_exactly(tmp_path: Path) -> None:
    episode = _episode()
    arrays = episode.frames
    compressed = {camera: ZstdFrames(frames.shape, _chunks(frames, 10)) for camera, frames in arrays.items()}
    store = EpisodeStore(tmp_path)
    directory = store.write(replace(episode, frames={}), compressed_frames=compressed)
    stored = (directory / "frames" / "front.npy.zst").read_bytes()
    assert stored.endswith(b"".join(compressed["front"].chunks))  # the robots' bytes, not recompressed
    back = store.read("sim-1", "ep-7")
    assert back.meta.format_version == FORMAT_VERSION == 3
    for camera, frames in arrays.items():
        np.testing.assert_array_equal(back.frames[camera], frames)


def test_zstd_frames_that_do_not_hold_the_frames_shape_are_refused(tmp_path: Path) -> None:
    frames = _episode().frames["front"]
    with pytest.raises(ValueError, match=r"zstd frames hold .* need 368640 B"):
        ZstdFrames(frames.shape, _chunks(frames[:20], 10))
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(frames.tobytes())
    with pytest.raises(ValueError, match=r"unknown: -1"):
        ZstdFrames(frames.shape, (unsized,))
    with pytest.raises(ValueError, match=r"shape \(T, H, W, 3\)"):
        ZstdFrames((30, 64, 64), _chunks(frames, 10))
    episode = _episode()
    zf = ZstdFrames(frames.shape, _chunks(frames, 10))
    with pytest.raises(ValueError, match="given both as an array and compressed"):
        EpisodeStore(tmp_path).write(episode, compressed_frames={"front": zf})
    short = ZstdFrames(frames[:20].shape, _chunks(frames[:20], 10))
    with pytest.raises(ValueError, match="has 20 frames for 30 steps"):
        EpisodeStore(tmp_path).write(replace(episode, frames={}), compressed_frames={"front": short})
    assert EpisodeStore(tmp_path).list() == []
