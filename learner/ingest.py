"""From the fleet stream into replay: assemble episodes from segments, attach corrections, labels and reviews.

Messages may arrive in any order across topics. Segments are kept per (robot, episode) until the
last one (`done`) and every index before it are in; then the episode enters replay with its
RECAP returns. A Correction, RewardSignal or Review that names something not yet in replay waits
(bounded) and is applied when it arrives. `pending_messages()` lists everything still waiting, so
the learner's checkpoint can carry it across a restart (the consumer offsets move past it).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from fleet.episodes import EpisodeError, episode_from_segments
from fleet.schemas import Correction, Message, Review, RewardSignal, TrajectorySegment
from learner.replay import EpisodeKey, ReplayBuffer

log = logging.getLogger(__name__)


class Ingest:
    """Routes decoded fleet messages into a ReplayBuffer (see the module docstring)."""

    def __init__(self, replay: ReplayBuffer, *, max_pending: int = 2_000) -> None:
        self.replay = replay
        self.max_pending = max_pending  # waiting episodes / labels / reviews each; the oldest is dropped beyond it
        self._segments: OrderedDict[EpisodeKey, dict[int, TrajectorySegment]] = OrderedDict()
        self._corrections: OrderedDict[EpisodeKey, dict[str, Correction]] = OrderedDict()
        self._labels: OrderedDict[EpisodeKey, RewardSignal] = OrderedDict()
        self._reviews: OrderedDict[str, Review] = OrderedDict()
        self.episodes_added = 0  # episodes that entered replay
        self.corrections_seen: set[str] = set()  # correction ids consumed since `reset_window`

    def reset_window(self) -> None:
        self.corrections_seen = set()

    def handle(self, message: Message) -> None:
        if isinstance(message, TrajectorySegment):
            self._segment(message)
        elif isinstance(message, Correction):
            self._correction(message)
        elif isinstance(message, RewardSignal):
            self._reward(message)
        elif isinstance(message, Review):
            self._review(message)

    def pending_messages(self) -> list[Message]:
        """Everything still waiting, in an order that re-handles cleanly (segments first)."""
        out: list[Message] = [s for segs in self._segments.values() for s in segs.values()]
        out += [c for cs in self._corrections.values() for c in cs.values()]
        out += list(self._labels.values()) + list(self._reviews.values())
        return out

    @property
    def pending_episodes(self) -> int:
        return len(self._segments)

    # --- per kind --------------------------------------------------------------------------------

    def _segment(self, seg: TrajectorySegment) -> None:
        key = (seg.robot_id, seg.episode_id)
        segments = self._segments.setdefault(key, {})
        segments[seg.segment_index] = seg  # a redelivered copy overwrites itself
        _bound(self._segments, self.max_pending, "episode")
        last = next((s.segment_index for s in segments.values() if s.done), None)
        if last is not None and all(i in segments for i in range(last + 1)):
            del self._segments[key]
            self._finish(key, [segments[i] for i in range(last + 1)])

    def _finish(self, key: EpisodeKey, segments: list[TrajectorySegment]) -> None:
        label = self._labels.pop(key, None)
        try:
            episode = episode_from_segments(segments, success=label.success if label is not None else None)
        except EpisodeError as e:
            log.warning("ingest: episode %s/%s skipped: %s", *key, e)
            return
        corrections = self._corrections.pop(key, {})
        spans = [(c.correction_id, c.step_start, len(c.actions)) for c in corrections.values()]
        if self.replay.add_episode(episode, corrections=spans) is None:
            return
        self.episodes_added += 1
        for cid in corrections:
            review = self._reviews.pop(cid, None)
            if review is not None:
                self._apply(review)

    def _correction(self, c: Correction) -> None:
        self.corrections_seen.add(c.correction_id)
        key = (c.robot_id, c.episode_id)
        if not self.replay.tag_correction(c.correction_id, c.robot_id, c.episode_id, c.step_start, len(c.actions)):
            self._corrections.setdefault(key, {})[c.correction_id] = c
            _bound(self._corrections, self.max_pending, "correction")
            return
        review = self._reviews.pop(c.correction_id, None)
        if review is not None:
            self._apply(review)

    def _reward(self, r: RewardSignal) -> None:
        if r.success is None:
            return  # dense-only signals do not change RECAP returns
        if not self.replay.set_success(r.robot_id, r.episode_id, r.success):
            self._labels[(r.robot_id, r.episode_id)] = r
            _bound(self._labels, self.max_pending, "reward label")

    def _review(self, review: Review) -> None:
        if not self._apply(review) and review.decision != "approve":
            self._reviews[review.correction_id] = review
            _bound(self._reviews, self.max_pending, "review")

    def _apply(self, review: Review) -> bool:
        if not self.replay.correction_steps(review.correction_id):
            return False
        self.replay.apply_review(
            review.correction_id,
            review.decision,
            relabel_success=review.relabel_success,
            relabelled_actions=review.relabelled_actions,
        )
        return True


def _bound(pending: OrderedDict, limit: int, what: str) -> None:  # type: ignore[type-arg]
    while len(pending) > limit:
        key, _ = pending.popitem(last=False)
        log.warning("ingest: dropping the oldest waiting %s %s (more than %d waiting)", what, key, limit)
