"""Correction review: what a reviewer sees (frames, actions, instruction) and what a verdict does.

A verdict updates the `corrections` row, adds a `reviews` row and publishes a `Review` on
`fleet.reviews` so the learner changes what it trains on: approve keeps the correction, reject
removes its steps from the replay, relabel (`relabel_success`) sets the episode's outcome in the
replay (and so its returns) while the correction keeps training.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from dashboards.auth import Principal
from dashboards.errors import BadRequest, NotFound
from fleet.db import Correction, Episode, Review
from fleet.episodes import Episode as StoredEpisode
from fleet.episodes import EpisodeStore
from fleet.schemas import Review as ReviewMessage

CONTEXT_STEPS = 8  # frames shown before the takeover starts
FILMSTRIP_FRAMES = 12


class EpisodeCache:
    """A few recently read episodes (a filmstrip asks for a dozen frames of the same one)."""

    def __init__(self, store: EpisodeStore, *, size: int = 8) -> None:
        self.store = store
        self.size = size
        self._items: OrderedDict[tuple[str, str], StoredEpisode] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, robot_id: str, episode_id: str) -> StoredEpisode | None:
        key = (robot_id, episode_id)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        try:
            if not self.store.exists(robot_id, episode_id):
                return None
            episode = self.store.read(robot_id, episode_id)
        except ValueError:
            return None
        with self._lock:
            self._items[key] = episode
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return episode


def get_correction(session: Session, correction_id: str) -> Correction:
    row = session.get(Correction, correction_id)
    if row is None:
        raise NotFound(f"no correction {correction_id!r}")
    return row


def window(correction: Correction, length: int) -> tuple[int, int]:
    """[first, last] episode steps worth showing: some context before the takeover, then all of it."""
    first = max(0, correction.start_step - CONTEXT_STEPS)
    last = min(max(length - 1, 0), max(correction.end_step, correction.start_step))
    return first, last


def detail(session: Session, episodes: EpisodeCache, correction: Correction) -> dict[str, Any]:
    """Everything the review card shows, frames as step numbers to fetch as PNGs."""
    row = session.scalar(
        select(Episode).where(Episode.robot_id == correction.robot_id, Episode.episode_id == correction.episode_id)
    )
    stored = episodes.get(correction.robot_id, correction.episode_id)
    instruction = row.instruction if row is not None else (stored.meta.instruction if stored else None)
    out: dict[str, Any] = {
        "instruction": instruction,
        "embodiment": row.embodiment if row is not None else (stored.meta.embodiment if stored else None),
        "episode_success": row.success if row is not None else (stored.meta.success if stored else None),
        "cameras": [],
        "filmstrip": [],
        "reviews": [
            {
                "reviewer": r.reviewer,
                "decision": r.decision,
                "relabel_success": r.relabel_success,
                "reason": r.reason,
                "created_at": r.created_at,
            }
            for r in sorted(correction.reviews, key=lambda r: r.id)
        ],
    }
    if stored is not None:
        first, last = window(correction, stored.meta.length)
        count = min(FILMSTRIP_FRAMES, last - first + 1)
        steps = sorted({int(s) for s in np.linspace(first, last, count).round()}) if count > 0 else []
        out["cameras"] = sorted(stored.frames)
        out["filmstrip"] = [{"step": s, "human": bool(stored.intervention[s])} for s in steps]
    return out


def frame_png(episodes: EpisodeCache, correction: Correction, *, step: int, camera: str | None) -> bytes:
    stored = episodes.get(correction.robot_id, correction.episode_id)
    if stored is None or not stored.frames:
        raise NotFound("this correction's episode has no frames in the episode store (yet)")
    name = camera or sorted(stored.frames)[0]
    frames = stored.frames.get(name)
    if frames is None:
        raise NotFound(f"no camera {name!r}; cameras: {', '.join(sorted(stored.frames))}")
    if not 0 <= step < len(frames):
        raise NotFound(f"step {step} is outside the episode (0..{len(frames) - 1})")
    buf = io.BytesIO()
    Image.fromarray(frames[step]).save(buf, format="PNG")
    return buf.getvalue()


def actions_window(episodes: EpisodeCache, correction: Correction) -> tuple[np.ndarray, np.ndarray, int]:
    stored = episodes.get(correction.robot_id, correction.episode_id)
    if stored is None:
        return np.zeros((0, 0), np.float32), np.zeros(0, bool), correction.start_step
    first, last = window(correction, stored.meta.length)
    return stored.actions[first : last + 1], stored.intervention[first : last + 1], first


def apply_review(
    session: Session,
    correction: Correction,
    *,
    principal: Principal,
    decision: str,
    success: bool | None,
    reason: str,
) -> tuple[Review, ReviewMessage]:
    """Change the DB rows and build the `Review` to publish (the caller publishes, audits, commits)."""
    if decision == "relabel" and success is None:
        raise BadRequest("relabel needs `success` (the episode's corrected outcome)")
    if decision != "relabel" and success is not None:
        raise BadRequest("`success` is only for decision='relabel'")
    message = ReviewMessage(
        review_id=f"rev-{uuid.uuid4().hex[:16]}",
        correction_id=correction.id,
        robot_id=correction.robot_id,
        reviewer=principal.name,
        decision=decision,  # type: ignore[arg-type]
        relabel_success=success,
        note=reason,
        created_at=time.time(),
    )
    if decision == "relabel":
        correction.relabel_success = success
    correction.status = "rejected" if decision == "reject" else "approved"
    review = Review(
        correction_id=correction.id,
        reviewer=principal.name,
        decision=decision,
        relabel_success=success,
        reason=reason or None,
    )
    session.add(review)
    return review, message
