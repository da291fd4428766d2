"""Test data for the dashboard: heartbeats, robots with episodes and corrections (DB + episode store), learner runs
(MLflow)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from fleet.db import Correction, Episode, Robot
from fleet.episodes import Episode as StoredEpisode
from fleet.episodes import EpisodeMeta, EpisodeStore
from fleet.registry import EXPERIMENT
from fleet.schemas import Heartbeat, LoopStats


def heartbeat(
    robot_id: str = "robot-1", *, state: str = "running", version: str | None = "3", **kw: object
) -> Heartbeat:
    loop = LoopStats(
        control_hz=10, ticks=10, missed_ticks=int(kw.pop("missed", 0)), tick_ms_p50=3, tick_ms_p99=8, tick_ms_max=9
    )
    return Heartbeat(
        robot_id=robot_id,
        embodiment="panda",
        state=state,
        model_version=version,  # type: ignore[arg-type]
        task_id=kw.pop("task_id", "pick"),
        sent_at=time.time(),
        loop=loop,
        **kw,
    )  # type: ignore[arg-type]


def add_robot(session: Session, robot_id: str = "robot-1") -> Robot:
    robot = session.get(Robot, robot_id) or Robot(id=robot_id, embodiment="panda", task="pick", state="offline")
    session.add(robot)
    session.flush()
    return robot


def add_episode(
    session: Session,
    *,
    robot_id: str = "robot-1",
    episode_id: str = "ep-1",
    success: bool = True,
    interventions: int = 0,
    ended_ago_s: float = 10.0,
    version: str = "3",
    task: str = "pick",
) -> Episode:
    add_robot(session, robot_id)
    ended = datetime.now(UTC) - timedelta(seconds=ended_ago_s)
    row = Episode(
        robot_id=robot_id,
        episode_id=episode_id,
        embodiment="panda",
        task=task,
        instruction="pick up the red cube",
        model_version=version,
        length=30,
        success=success,
        interventions=interventions,
        started_at=ended - timedelta(seconds=3),
        ended_at=ended,
    )
    session.add(row)
    session.flush()
    return row


def store_episode(
    store: EpisodeStore,
    *,
    robot_id: str = "robot-1",
    episode_id: str = "ep-1",
    length: int = 30,
    takeover: tuple[int, int] = (12, 20),
) -> StoredEpisode:
    rng = np.random.default_rng(0)
    intervention = np.zeros(length, bool)
    intervention[takeover[0] : takeover[1] + 1] = True
    frames = np.zeros((length, 32, 32, 3), np.uint8)
    for t in range(length):
        frames[t, :, : t + 1, 0] = 200  # a red bar growing with t: frames differ visibly
    episode = StoredEpisode(
        meta=EpisodeMeta(
            robot_id=robot_id,
            episode_id=episode_id,
            embodiment="panda",
            task="pick",
            instruction="pick up the red cube",
            model_version="3",
            length=length,
            success=False,
            interventions=int(intervention.sum()),
        ),
        timestamps=np.arange(length, dtype=np.float64) * 0.1,
        proprio=rng.normal(size=(length, 10)).astype(np.float32),
        actions=rng.normal(size=(length, 4)).astype(np.float32),
        rewards=np.zeros(length, np.float32),
        intervention=intervention,
        frames={"front": frames},
    )
    store.write(episode)
    return episode


def add_correction(
    session: Session,
    *,
    correction_id: str = "c-1",
    robot_id: str = "robot-1",
    episode_id: str = "ep-1",
    task: str = "pick",
    version: str = "3",
    age_s: float = 0.0,
    reason: str = "stall: no progress for 10 steps, 3.1 cm still to go",
) -> Correction:
    add_robot(session, robot_id)
    row = Correction(
        id=correction_id,
        robot_id=robot_id,
        episode_id=episode_id,
        task=task,
        model_version=version,
        operator="supervisor:script",
        reason=reason,
        start_step=12,
        end_step=20,
        status="pending",
        created_at=datetime.now(UTC) - timedelta(seconds=age_s),
    )
    session.add(row)
    session.flush()
    return row


def add_learner_run(
    tracking_uri: str,
    *,
    losses: list[float],
    rates: list[float],
    batch_size: int = 32,
    every: int = 10,
    with_publish_run: bool = True,
) -> str:
    """A learner run in `fleet-learner` logged like `learner.service` does (one point per `every` updates, 1 s apart);
    with `with_publish_run`, then a newer registry publish run in the same experiment, which readers must skip."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    run_id: str = client.create_run(exp_id, tags={"fleet.kind": "learner", "fleet.preset": "debug"}).info.run_id
    t0 = int(time.time() * 1000) - 1000 * len(losses)
    metrics = []
    for i, (loss, rate) in enumerate(zip(losses, rates, strict=True)):
        step, ts = every * (i + 1), t0 + 1000 * i
        metrics += [
            Metric("losses/action", loss, ts, step),
            Metric("losses/total", loss + 0.1, ts, step),
            Metric("charts/updates_per_s", rate, ts, step),
            Metric("charts/samples_per_s", rate * batch_size, ts, step),
            Metric("charts/batch_size", float(batch_size), ts, step),
        ]
    client.log_batch(run_id, metrics=metrics)
    if with_publish_run:
        publish = client.create_run(exp_id, tags={"fleet.kind": "publish", "fleet.parent": ""}).info.run_id
        client.log_metric(publish, "losses/action", 99.0)
        client.set_terminated(publish)
    return run_id
