"""One rule turns segments into an episode (fleet.episodes.episode_from_segments), and the recorder and the learner
both use it: the same segments are the same episode in the store and in replay."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from fleet.episodes import Episode, EpisodeError, episode_from_segments
from fleet.policy.config import debug_model_config
from fleet.recorder import Recorder, RecorderConfig
from fleet.schemas import RewardSignal, TrajectorySegment
from fleet.transport import publish
from learner.ingest import Ingest
from learner.replay import ReplayBuffer, ReplayConfig, StoredEpisode
from tests.data.factories import make_segment
from tests.data.fakes import FakeTransport
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder


def _swapped(n: int = 5, swap_at: int = 2) -> list[TrajectorySegment]:
    """An episode of `n` 4-step segments whose robot swapped from version 1 to 2 before segment `swap_at`."""
    return [
        make_segment("robot-0", "ep-0", i, steps=4, segments_per_episode=n, size=8,
                     model_version="1" if i < swap_at else "2")
        for i in range(n)
    ]  # fmt: skip


def test_an_episode_belongs_to_the_version_that_acted_most_and_sums_what_its_segments_count() -> None:
    episode = episode_from_segments(_swapped())
    meta = episode.meta
    assert (meta.model_version, meta.length, meta.success) == ("2", 20, True)  # 12 of 20 steps by version 2
    assert meta.interventions == int(sum(s.intervention.sum() for s in _swapped()))
    assert meta.missed_ticks == 0 + 1 + 2 + 0 + 1
    np.testing.assert_array_equal(episode.proprio[:, 0], np.arange(20))
    assert episode_from_segments(_swapped(), success=False).meta.success is False  # a late reward label
    scripted = [s.model_copy(update={"model_version": None}) for s in _swapped(4, 2)]
    scripted[2:] = [s.model_copy(update={"model_version": "3"}) for s in scripted[2:]]
    assert episode_from_segments(scripted).meta.model_version == "3"  # a tie goes to the version, not to None


def test_segments_that_are_not_one_episode_are_refused_with_the_reason() -> None:
    gap = _swapped()
    gap[3] = gap[3].model_copy(update={"step_start": 13})
    with pytest.raises(EpisodeError, match="segment 3 starts at step 13, expected 12"):
        episode_from_segments(gap)
    cameras = _swapped()
    cameras[1] = make_segment("robot-0", "ep-0", 1, steps=4, segments_per_episode=5, size=8, cameras=("wrist",))
    with pytest.raises(EpisodeError, match="do not fit together"):
        episode_from_segments(cameras)
    with pytest.raises(EpisodeError, match="no segments"):
        episode_from_segments([])


class _Capture(ReplayBuffer):
    """The learner's replay, keeping each episode it is given."""

    given: list[Episode]

    def add_episode(self, episode: Episode, **kwargs: object) -> StoredEpisode | None:  # type: ignore[override]
        self.given.append(episode)
        return super().add_episode(episode, **kwargs)  # type: ignore[arg-type]


def test_the_recorder_and_the_learner_make_the_same_episode_from_the_same_segments(tmp_path: Path) -> None:
    segments = _swapped()
    shuffled = segments + random.Random(0).sample(segments, 2)  # out of order, two redelivered
    random.Random(1).shuffle(shuffled)
    transport = FakeTransport()
    for seg in shuffled:
        publish(transport, seg)
    recorder = Recorder(RecorderConfig(store_dir=tmp_path / "store", staging_dir=tmp_path / "staging"),
                        transport=transport, index=None)  # fmt: skip
    while recorder.step():
        pass
    stored = recorder.store.read("robot-0", "ep-0")

    replay = _Capture(ReplayConfig(), debug_model_config(text_encoder=FAKE_ENCODER), embedder=HashEmbedder())
    replay.given = []
    ingest = Ingest(replay)
    for seg in shuffled:
        ingest.handle(seg)
    [learned] = replay.given
    assert learned.meta == stored.meta and learned.meta.model_version == "2"
    for column in ("timestamps", "proprio", "actions", "rewards", "intervention"):
        np.testing.assert_array_equal(getattr(learned, column), getattr(stored, column))
    np.testing.assert_array_equal(learned.frames["front"], stored.frames["front"])

    # a reward label that arrived first decides the learner's success; the recorder keeps the robot's own
    replay.given = []
    relabelled = Ingest(replay)
    relabelled.handle(RewardSignal(reward_id="r", robot_id="robot-0", episode_id="ep-0", source="human",
                                   labeller="op", created_at=0.0, success=False))  # fmt: skip
    for seg in segments:
        relabelled.handle(seg)
    assert replay.given[0].meta.success is False and stored.meta.success is True
