"""Replay for online post-training: demonstrations, autonomous fleet steps and intervention steps, mixed in set ratios.

Three FIFO buffers of step samples (each bounded to `capacity` steps):

    demo          steps of stored demonstrations (EpisodeStore, source "demo")
    online        every fleet step, autonomous and intervention alike
    intervention  the steps a human drove (also in `online`: HIL-SERL puts interventions in both buffers)

A batch draws `online_fraction` of its rows from `online` and the rest from `demo` ∪ `intervention`
(RLPD / HIL-SERL: 50/50; fleet's default 25/75, see ReplayConfig); `intervention_fraction` optionally fixes
the intervention share of that offline part. An empty source gives its share to the others. A sample is
(episode, step t): the observation at t and the action chunk t..t+H (padded, masked past the end), with
provenance (robot, episode, step) and the correction id of the takeover that produced it.

Returns, RECAP-style (π*0.6): the value target at step t of an episode of length T is
``-(T - t) / horizon`` (steps to success, normalized, clipped to -1) when the episode succeeded and
``failure_return`` (default -2, below any success) when it failed, and also for the autonomous steps
before a takeover (`takeover_is_failure`: the policy needed rescuing there, even if the human then
finished the task); dense step rewards are kept but not used. Per-sample weights (`sample_weights`):
demonstrations and intervention steps weigh 1 (HG-DAgger: imitate the human); autonomous steps weigh
``exp((G - V(s)) / beta)`` clipped to `max_weight` (AWR) when their episode succeeded, with V from the model's
value head at update time, and 0 when it failed or a takeover followed: failures teach the value head without
being imitated.

With `autonomous=False` (the "corrections only" arm of bench/online.py) autonomous fleet steps are
kept for their episode's context but never sampled: only demonstrations and intervention steps train.

With `features` (a `learner.features.FrozenFeatures`, for a learner that holds part of the VLA fixed) batches carry
the frozen part's output (`image_tokens` or `memory`) instead of `images`. A step's output is computed the first
time a batch samples it and kept from then on: encoding every step as it arrived took ~90% of a learner's CPU
beside 4 real-time robots on 2 cores (10 ms a step, 40 steps a second), leaving almost nothing for updates, while
a batch of 32 meets only a few steps it has not seen. A step no batch samples is never encoded.

Reviews (`apply_review`): reject removes a correction's steps from every buffer; relabel replaces
their actions and/or the episode's success (and so the returns).

Over 400 lines because the three buffers, their batch shares and the chunk labels all read the same stored
arrays: a sample's layout is defined once, here.
"""

from __future__ import annotations

import itertools
import logging
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fleet.episodes import Episode, EpisodeStore
from fleet.policy.config import VLAConfig
from fleet.policy.data import FAILURE_RETURN, VALUE_HORIZON, chunk_indices, recap_returns
from fleet.policy.language import InstructionEmbedder, embedder_for
from fleet.sim.language import paraphrased

if TYPE_CHECKING:
    from learner.features import FrozenFeatures

log = logging.getLogger(__name__)

DEMO, INTERVENTION, AUTONOMOUS = 0, 1, 2  # `kind` column: how a sample is weighted
SOURCES = ("demo", "online", "intervention")
EpisodeKey = tuple[str, str]  # (robot_id, episode_id)


@dataclass(frozen=True)
class ReplayConfig:
    """Replay sizes, mixing ratios and return shaping."""

    capacity: int = 50_000  # steps per source buffer; the oldest steps leave first (FIFO per source)
    # Share of each batch from the online buffer. RLPD / HIL-SERL use 0.5 for RL from scratch; continuing a
    # BC-trained VLA, half the batch from its own fleet steps dilutes the demonstrations it still learns from:
    # research/replay_mix.py, 2,000 updates on the same 780 supervised episodes, 300-episode eval from 0.79:
    # 0.5 -> 0.77, 0.25 -> 0.857, demonstrations alone 0.84 (research/replay_mix/replay_mix.json).
    online_fraction: float = 0.25
    intervention_fraction: float | None = None  # share of the offline part from interventions; None = uniform
    # With `intervention_fraction` None, the most of the offline part interventions may take: corrections pile up
    # over a run (late in a 20-minute run they outnumbered the demonstrations), and corrections alone pulled
    # pick/panda from 0.86 to 0.58 (research/learning_probe.py --no-autonomous), so demonstrations keep a floor.
    max_intervention_fraction: float = 0.5
    horizon: int = VALUE_HORIZON  # steps that normalize -(steps to success) into [-1, 0] (as in pre-training)
    failure_return: float = FAILURE_RETURN  # value target of every step of a failed episode (below any success)
    autonomous: bool = True  # train on autonomous fleet steps (AWR); False = corrections only (HG-DAgger)
    takeover_is_failure: bool = True  # autonomous steps that end in a takeover get the failure return (RLIF)
    # Instruction augmentation: each episode added is said in one of its instruction and up to this many
    # paraphrases (fleet.sim.language.paraphrased, the training bank), drawn once per episode from its id, so the
    # fleet's own episodes keep teaching language, not only the phrasings robots were given. Once per episode, not
    # per sample: a frozen part's cached features read the instruction, and must be those of the words trained on.
    paraphrases: int = 0

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.horizon < 1:
            raise ValueError("ReplayConfig: capacity and horizon must be >= 1")
        if not 0.0 <= self.online_fraction <= 1.0:
            raise ValueError(f"ReplayConfig.online_fraction must be in [0, 1], got {self.online_fraction}")
        if self.intervention_fraction is not None and not 0.0 <= self.intervention_fraction <= 1.0:
            raise ValueError("ReplayConfig.intervention_fraction must be in [0, 1] or None")
        if not 0.0 <= self.max_intervention_fraction <= 1.0:
            raise ValueError("ReplayConfig.max_intervention_fraction must be in [0, 1]")
        if self.failure_return >= -1.0:
            raise ValueError("ReplayConfig.failure_return must be < -1 (below every successful return)")
        if self.paraphrases < 0:
            raise ValueError(f"ReplayConfig.paraphrases must be >= 0, got {self.paraphrases}")


def sample_weights(
    kinds: torch.Tensor, returns: torch.Tensor, values: torch.Tensor, *, beta: float, max_weight: float
) -> torch.Tensor:
    """(B,) weights: 1 for demo / intervention rows, clip(exp((G - V) / beta), max_weight) for autonomous rows of
    a success, 0 for autonomous rows of a failure (G < -1: the episode failed, or a takeover followed).

    A failed step is never imitated, whatever the value head says: once V has learnt that such a state ends at
    `failure_return`, AWR would give it an advantage near 0 and a weight near 1. The value head still trains on it.
    """
    advantage = (returns - values.detach()).clamp(max=beta * float(np.log(max_weight)))
    awr = torch.exp(advantage / beta).clamp(max=max_weight)
    awr = torch.where(returns < -1.0, torch.zeros_like(awr), awr)
    return torch.where(kinds == AUTONOMOUS, awr, torch.ones_like(awr))


@dataclass
class StoredEpisode:
    """One episode's arrays, padded to the model's widths; samples point into it."""

    robot_id: str
    episode_id: str
    source: str  # "demo" or "fleet"
    instruction: str
    embodiment_id: int
    observation: str  # the batch column: "images", or a frozen part's output ("image_tokens" / "memory")
    images: np.ndarray  # uint8 (T, cameras, S, S, 3)
    proprio: np.ndarray  # float32 (T, max_proprio_dim)
    actions: np.ndarray  # float32 (T, max_action_dim), clipped to [-1, 1]
    action_dim: int  # the embodiment's real action width
    intervention: np.ndarray  # bool (T,)
    rewards: np.ndarray  # float32 (T,) dense step rewards (kept, not used by RECAP returns)
    success: bool
    returns: np.ndarray  # float32 (T,) RECAP value targets
    correction_ids: list[str | None] = field(default_factory=list)  # per step: the takeover it came from
    # The frozen part's output per step (float16, see learner.features), rows filled as batches first sample them;
    # `encoded` says which rows are. None until a batch samples one of the episode's steps.
    features: np.ndarray | None = None
    encoded: np.ndarray | None = None

    @property
    def key(self) -> EpisodeKey:
        return (self.robot_id, self.episode_id)

    @property
    def length(self) -> int:
        return int(len(self.actions))


@dataclass(frozen=True)
class Sample:
    """Where one replay row comes from (provenance)."""

    robot_id: str
    episode_id: str
    step: int
    kind: int  # DEMO, INTERVENTION or AUTONOMOUS
    correction_id: str | None


class ReplayBuffer:
    """Demo / online / intervention step buffers over shared episode arrays (see the module docstring)."""

    def __init__(
        self,
        config: ReplayConfig,
        model_config: VLAConfig,
        *,
        embedder: InstructionEmbedder,
        features: FrozenFeatures | None = None,
    ) -> None:
        embedder = embedder_for(model_config, embedder)  # ValueError when the model read another encoder
        if features is not None and features.model.config != model_config:
            raise ValueError("the frozen features were made for another model config")
        self.config = config
        self.model_config = model_config
        self.embedder = embedder
        self.features = features
        self._episodes: dict[EpisodeKey, StoredEpisode] = {}
        self._refs: Counter[EpisodeKey] = Counter()
        self._buffers: dict[str, deque[tuple[EpisodeKey, int]]] = {s: deque() for s in SOURCES}
        self._text: dict[str, np.ndarray] = {}
        self._said = None
        if config.paraphrases:
            self._said = paraphrased(config.paraphrases, seed=0, colour_names=model_config.colour_lexicon)
        self.encoded_total = 0  # steps whose frozen features were computed (each once, when first sampled)

    # --- adding ----------------------------------------------------------------------------------

    def add_episode(
        self, episode: Episode, *, corrections: Iterable[tuple[str, int, int]] = ()
    ) -> StoredEpisode | None:
        """Add every step of a finished episode; `corrections` are (correction_id, step_start, n) takeovers.

        Demonstrations (`meta.source == "demo"`) go to `demo`; fleet steps to `online`, and intervention
        steps also to `intervention`. Returns None (and logs why) for an episode the model cannot train on.
        """
        try:
            stored = self._convert(episode)
        except (KeyError, ValueError) as e:
            log.warning("replay: skipping episode %s/%s: %s", episode.meta.robot_id, episode.meta.episode_id, e)
            return None
        for cid, start, n in corrections:
            stop = min(start + n, stored.length)
            stored.intervention[start:stop] = True
            stored.correction_ids[start:stop] = [cid] * max(0, stop - start)
        self._set_returns(stored)  # after the corrections: a takeover changes the steps before it
        if stored.key in self._episodes:  # a re-sent episode replaces the old copy (idempotent on the key)
            self.drop_where(lambda key, _t: key == stored.key)
        self._episodes[stored.key] = stored
        for t in range(stored.length):
            if stored.source == "demo":
                self._push("demo", stored.key, t)
            else:
                if self.config.autonomous or stored.intervention[t]:
                    self._push("online", stored.key, t)
                if stored.intervention[t]:
                    self._push("intervention", stored.key, t)
        return stored

    def add_demos(self, root: str | Path, *, limit: int | None = None) -> int:
        """Add the demonstrations (`meta.source == "demo"`) of the episode store at `root`, at most `limit` of
        them, taken in turn from each task x embodiment and, within it, from each robot that recorded them (so a
        cap keeps every pair, and a store that adds a few new demonstrations to many old ones keeps the new ones,
        not the store's first ones); other episodes there are left out. Returns how many were added."""
        if limit is not None and limit <= 0:
            return 0
        store = EpisodeStore(root)
        groups: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        for episode in store.iter_episodes(frames=False):  # metadata only: choose first, read the chosen ones' frames
            m = episode.meta
            if m.source == "demo":
                groups.setdefault((m.task, m.embodiment, m.robot_id), []).append((m.robot_id, m.episode_id))
        chosen = [key for turn in itertools.zip_longest(*groups.values()) for key in turn if key is not None]
        return sum(1 for key in chosen[:limit] if self.add_episode(store.read(*key)) is not None)

    def _convert(self, episode: Episode) -> StoredEpisode:
        c, meta = self.model_config, episode.meta
        dims = c.embodiment(meta.embodiment)
        n = meta.length
        if n < 1:
            raise ValueError("episode is empty")
        if episode.proprio.shape != (n, dims.proprio_dim) or episode.actions.shape != (n, dims.action_dim):
            raise ValueError(f"proprio/actions {episode.proprio.shape}/{episode.actions.shape} do not fit {dims}")
        cams = []
        for camera in c.cameras:
            frames = episode.frames.get(camera)
            if frames is None or frames.shape != (n, c.image_size, c.image_size, 3):
                got = None if frames is None else frames.shape
                raise ValueError(f"camera {camera!r} frames are {got}, the model needs ({n}, {c.image_size}px, 3)")
            cams.append(frames)
        proprio = np.zeros((n, c.max_proprio_dim), dtype=np.float32)
        proprio[:, : dims.proprio_dim] = episode.proprio
        actions = np.zeros((n, c.max_action_dim), dtype=np.float32)
        actions[:, : dims.action_dim] = np.clip(episode.actions, -1.0, 1.0)
        embodiment_id = c.embodiment_index(meta.embodiment)
        images = np.ascontiguousarray(np.stack(cams, axis=1))
        return StoredEpisode(
            robot_id=meta.robot_id,
            episode_id=meta.episode_id,
            source="demo" if meta.source == "demo" else "fleet",
            instruction=self._instruction(episode),
            embodiment_id=embodiment_id,
            observation=self.features.column if self.features is not None else "images",
            images=images,
            proprio=proprio,
            actions=actions,
            action_dim=dims.action_dim,
            intervention=np.asarray(episode.intervention, dtype=bool).copy(),
            rewards=np.asarray(episode.rewards, dtype=np.float32),
            success=bool(meta.success),
            returns=np.zeros(n, dtype=np.float32),  # set by add_episode once the corrections are applied
            correction_ids=[None] * n,
        )

    def _set_returns(self, stored: StoredEpisode) -> None:
        """Recompute the episode's value targets from its outcome and intervention mask."""
        c = self.config
        mask = stored.intervention if c.takeover_is_failure else None
        stored.returns = recap_returns(
            stored.length, stored.success, horizon=c.horizon, failure_return=c.failure_return, intervention=mask
        )

    def _push(self, source: str, key: EpisodeKey, t: int) -> None:
        buffer = self._buffers[source]
        buffer.append((key, t))
        self._refs[key] += 1
        while len(buffer) > self.config.capacity:
            self._release(buffer.popleft()[0])

    def _release(self, key: EpisodeKey) -> None:
        self._refs[key] -= 1
        if self._refs[key] <= 0:
            del self._refs[key]
            self._episodes.pop(key, None)

    def drop_where(self, predicate: Callable[[EpisodeKey, int], bool]) -> int:
        """Drop every sampled step (episode, t) `predicate` holds for, from every source; returns how many. A
        re-sent episode and a rejected correction leave this way; probes use it to replay part of a run."""
        dropped = 0
        for source, buffer in self._buffers.items():
            kept: deque[tuple[EpisodeKey, int]] = deque()
            for key, t in buffer:
                if predicate(key, t):
                    self._release(key)
                    dropped += 1
                else:
                    kept.append((key, t))
            self._buffers[source] = kept
        return dropped

    # --- labels and reviews ----------------------------------------------------------------------

    def fleet_robots(self) -> list[str]:
        """The robots whose episodes are in replay (not demonstrations): the fleet as the learner knows it."""
        return sorted({e.robot_id for e in self._episodes.values() if e.source == "fleet"})

    def episode(self, robot_id: str, episode_id: str) -> StoredEpisode | None:
        return self._episodes.get((robot_id, episode_id))

    def set_success(self, robot_id: str, episode_id: str, success: bool) -> bool:
        """Relabel an episode's outcome (late RewardSignal); False when it is not in replay."""
        stored = self._episodes.get((robot_id, episode_id))
        if stored is None:
            return False
        stored.success = success
        self._set_returns(stored)
        return True

    def tag_correction(self, correction_id: str, robot_id: str, episode_id: str, step_start: int, n: int) -> bool:
        """Mark steps of an episode already in replay as a takeover (a Correction that arrived after its steps)."""
        stored = self._episodes.get((robot_id, episode_id))
        if stored is None:
            return False
        stop = min(step_start + n, stored.length)
        for t in range(step_start, stop):
            stored.correction_ids[t] = correction_id
            if not stored.intervention[t]:
                stored.intervention[t] = True
                self._push("intervention", stored.key, t)
                if not self.config.autonomous:  # it was left out of `online` as an autonomous step
                    self._push("online", stored.key, t)
        self._set_returns(stored)
        return True

    def correction_steps(self, correction_id: str) -> list[Sample]:
        """The replay samples of one correction (one per step, from the online buffer)."""
        return [s for s in self.samples("online") if s.correction_id == correction_id]

    def apply_review(
        self,
        correction_id: str,
        decision: str,
        *,
        relabel_success: bool | None = None,
        relabelled_actions: np.ndarray | None = None,
    ) -> int:
        """Apply a reviewer's verdict; returns how many steps it touched.

        "reject" removes the correction's steps from every buffer; "relabel" replaces their actions
        (`relabelled_actions`, (n, A) from the correction's first step) and/or sets the episode's
        success (`relabel_success`, which recomputes its returns); "approve" changes nothing.
        """
        if decision == "approve":
            return 0
        if decision == "reject":
            return self.drop_where(lambda key, t: self._episodes[key].correction_ids[t] == correction_id)
        if decision != "relabel":
            raise ValueError(f"unknown review decision {decision!r} (approve, reject, relabel)")
        touched = 0
        for stored in list(self._episodes.values()):
            steps = [t for t, cid in enumerate(stored.correction_ids) if cid == correction_id]
            if not steps:
                continue
            if relabelled_actions is not None:
                actions = np.asarray(relabelled_actions, dtype=np.float32)
                width = min(actions.shape[1], stored.action_dim)
                for i, t in enumerate(steps[: len(actions)]):
                    stored.actions[t, :] = 0.0
                    stored.actions[t, :width] = np.clip(actions[i, :width], -1.0, 1.0)
            if relabel_success is not None:
                stored.success = relabel_success
                self._set_returns(stored)
            touched += len(steps)
        return touched

    # --- sampling --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def sizes(self) -> dict[str, int]:
        return {s: len(b) for s, b in self._buffers.items()}

    def samples(self, source: str) -> list[Sample]:
        """Provenance of every sample in one buffer, oldest first."""
        kind = {"demo": DEMO}.get(source)
        out = []
        for key, t in self._buffers[source]:
            e = self._episodes[key]
            k = kind if kind is not None else (INTERVENTION if e.intervention[t] else AUTONOMOUS)
            out.append(Sample(e.robot_id, e.episode_id, t, k, e.correction_ids[t]))
        return out

    def counts_for(self, batch_size: int, rng: np.random.Generator) -> dict[str, int]:
        """How many rows of a batch each buffer gives (empty buffers hand their share to the others)."""
        sizes = self.sizes()
        if not any(sizes.values()):
            raise ValueError("replay is empty: no demonstrations loaded and no fleet data consumed yet")
        offline = sizes["demo"] + sizes["intervention"]
        n_online = round(batch_size * self.config.online_fraction) if offline else batch_size
        if not sizes["online"]:
            n_online = 0
        n_offline = batch_size - n_online
        frac = self.config.intervention_fraction
        if frac is None:  # uniform over demo ∪ intervention, as one offline buffer, interventions capped
            share = sizes["intervention"] / offline if offline else 0.0
            if sizes["demo"]:
                share = min(share, self.config.max_intervention_fraction)
            n_interv = int(rng.binomial(n_offline, share)) if offline else 0
        elif not sizes["intervention"]:
            n_interv = 0
        elif not sizes["demo"]:
            n_interv = n_offline
        else:
            n_interv = round(n_offline * frac)
        return {"online": n_online, "intervention": n_interv, "demo": n_offline - n_interv}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A training batch of numpy columns (the VLAModel batch format plus `kind`, see the module docstring)."""
        rows: list[tuple[EpisodeKey, int, int]] = []
        for source, n in self.counts_for(batch_size, rng).items():
            buffer = self._buffers[source]
            for i in rng.integers(0, len(buffer), size=n) if n else ():
                key, t = buffer[int(i)]
                e = self._episodes[key]
                kind = DEMO if source == "demo" else INTERVENTION if e.intervention[t] else AUTONOMOUS
                rows.append((key, t, kind))
        return self._collate(rows)

    def _encode(self, features: FrozenFeatures, steps: list[tuple[StoredEpisode, int]]) -> None:
        """Compute the frozen part's output of the steps not encoded yet, in one batch, and keep it."""
        todo = list({(e.key, t): (e, t) for e, t in steps if e.encoded is None or not e.encoded[t]}.values())
        if not todo:
            return
        columns = {
            "images": np.stack([e.images[t] for e, t in todo]),
            "instruction_embedding": np.stack([self._embedding(e.instruction) for e, _t in todo]),
            "proprio": np.stack([e.proprio[t] for e, t in todo]),
            "embodiment_id": np.asarray([e.embodiment_id for e, _t in todo], dtype=np.int64),
        }
        for (e, t), row in zip(todo, features(columns), strict=True):
            if e.features is None or e.encoded is None:
                e.features = np.zeros((e.length, *row.shape), dtype=row.dtype)
                e.encoded = np.zeros(e.length, dtype=bool)
            e.features[t], e.encoded[t] = row, True
        self.encoded_total += len(todo)

    def _instruction(self, episode: Episode) -> str:
        """The words an episode is trained with: its own, or one of its paraphrases (`ReplayConfig.paraphrases`)."""
        if self._said is None:
            return episode.meta.instruction
        texts = self._said(episode)
        return texts[zlib.crc32(f"said:{episode.meta.episode_id}".encode()) % len(texts)]

    def _embedding(self, text: str) -> np.ndarray:
        vec = self._text.get(text)
        if vec is None:
            vec = np.asarray(self.embedder.embed(text), dtype=np.float32)
            self._text[text] = vec
        return vec

    def _collate(self, rows: list[tuple[EpisodeKey, int, int]]) -> dict[str, np.ndarray]:
        horizon = self.model_config.chunk_size
        observation = self.features.column if self.features is not None else "images"
        if self.features is not None:
            self._encode(self.features, [(self._episodes[key], t) for key, t, _kind in rows])
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "text", "proprio", "actions", "mask")}
        ids, returns, kinds = [], [], []
        for key, t, kind in rows:
            e = self._episodes[key]
            idx, valid = chunk_indices(e.length, np.array([t]), horizon)
            cols["observations"].append(e.images[t] if e.features is None else e.features[t])
            cols["text"].append(self._embedding(e.instruction))
            cols["proprio"].append(e.proprio[t])
            cols["actions"].append(e.actions[idx[0]])
            # An intervention row learns the human's actions only: chunk steps after the human let go are masked.
            cols["mask"].append(valid[0] & e.intervention[idx[0]] if kind == INTERVENTION else valid[0])
            ids.append(e.embodiment_id)
            returns.append(e.returns[t])
            kinds.append(kind)
        observations = np.stack(cols["observations"])
        return {
            observation: observations if observation == "images" else observations.astype(np.float32),
            "instruction_embedding": np.stack(cols["text"]),
            "proprio": np.stack(cols["proprio"]),
            "embodiment_id": np.asarray(ids, dtype=np.int64),
            "actions": np.stack(cols["actions"]),
            "action_mask": np.stack(cols["mask"]),
            "returns": np.asarray(returns, dtype=np.float32),
            "return_mask": np.ones(len(rows), dtype=bool),
            "kind": np.asarray(kinds, dtype=np.int64),
        }
