"""A robot's steps become the fleet's messages in one place (fleet.client.episode.EpisodeStream), used by the
simulated fleet's control loop and by real robots' clients alike."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.client.episode import EpisodeStream
from fleet.episodes import episode_from_segments
from fleet.schemas import Correction, Message, RewardSignal, TrajectorySegment, decode, encode


def _stream(sent: list[Message], **kw: object) -> EpisodeStream:
    return EpisodeStream(
        lambda m: sent.append(decode(encode(m))), robot_id="arm-1", embodiment="panda", task="pick",
        instruction="pick up the red cube", episode_id="arm-1-e1", segment_steps=4, operator="alice",
        channel=lambda: "canary", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _step(stream: EpisodeStream, t: int, *, version: str = "3", human: bool = False, missed: int = 0,
          done: bool = False) -> None:  # fmt: skip
    image = np.full((8, 8, 3), t, dtype=np.uint8)
    stream.act({"front": image}, np.full(10, t, np.float32), np.full(4, t / 100, np.float32), version=version,
               human=human, reason="stall: no progress" if human else "", missed_ticks=missed)  # fmt: skip
    stream.result(0.5, done=done, success=done, missed_ticks=missed)


def test_steps_become_segments_a_takeover_a_correction_and_the_end_an_outcome() -> None:
    sent: list[Message] = []
    stream = _stream(sent)
    for t in range(11):  # 4 + 2 (a swap to version 4 at step 6) + 4 + 1
        _step(stream, t, version="3" if t < 6 else "4", human=7 <= t <= 8, missed=t // 5, done=t == 10)
    stream.finish("4", success=True)
    segments = [m for m in sent if isinstance(m, TrajectorySegment)]
    assert [(s.segment_index, s.step_start, s.length, s.model_version) for s in segments] == [
        (0, 0, 4, "3"), (1, 4, 2, "3"), (2, 6, 4, "4"), (3, 10, 1, "4")
    ]  # fmt: skip
    assert [s.done for s in segments] == [False, False, False, True] and segments[-1].success
    assert sum(s.missed_ticks for s in segments) == 10 // 5  # the running count's growth, each tick once
    [correction] = [m for m in sent if isinstance(m, Correction)]
    assert (correction.step_start, len(correction.actions), correction.model_version) == (7, 2, "4")
    assert (correction.operator, correction.channel, correction.reason) == ("alice", "canary", "stall: no progress")
    np.testing.assert_allclose(correction.actions[:, 0], [0.07, 0.08])
    [outcome] = [m for m in sent if isinstance(m, RewardSignal)]
    assert outcome.success is True and outcome.reward_id == "arm-1-e1-outcome"
    episode = episode_from_segments(segments)  # what the recorder and the learner make of it
    assert (episode.meta.length, episode.meta.interventions, episode.meta.model_version) == (11, 2, "3")  # 6 of 11
    np.testing.assert_array_equal(episode.proprio[:, 0], np.arange(11))
    assert stream.segments == 4 and stream.interventions == 2


def test_a_takeover_running_at_the_end_is_sent_by_finish_and_a_stopped_episode_sends_no_partial_segment() -> None:
    sent: list[Message] = []
    stream = _stream(sent)
    for t in range(6):
        _step(stream, t, human=t >= 4)
    stream.finish("3", success=None)  # stopped mid-episode: no outcome to report
    assert [type(m).__name__ for m in sent] == ["TrajectorySegment", "Correction"]  # steps 4-5 stay unsent
    with pytest.raises(ValueError, match="segment_steps"):
        EpisodeStream(print, robot_id="r", embodiment="panda", task="pick", instruction="x", episode_id="e",
                      segment_steps=0)  # fmt: skip
