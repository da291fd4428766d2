"""Run one simulated episode and keep it in the episode-store format; collect scripted demos; save GIFs.

    env = make_env("pick", "panda", seed=0)
    episode = rollout(env, policy, seed=3)                      # a policy: obs -> action
    episode = rollout(env, policy, supervisor=make_expert(env), takeover=my_rule)  # with interventions
    collect_demos(EpisodeStore("demos"), task="pick", embodiment="panda", episodes=50)
    save_gif(episode, "pick.gif")

Column conventions (see `fleet.episodes`): row t holds the observation *before* action t (image,
proprio), action t, the reward it earned and whether a supervisor chose it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fleet.episodes import Episode, EpisodeMeta, EpisodeStore
from fleet.sim.base import Env, Observation
from fleet.sim.experts import make_expert
from fleet.sim.registry import make_env

Policy = Callable[[Observation], ArrayLike]  # anything that maps an observation to one action step
Takeover = Callable[[Env, Observation, int], bool]  # (env, obs, step) -> should the supervisor drive this step?


def rollout(
    env: Env,
    policy: Policy,
    *,
    seed: int | None = None,
    robot_id: str = "sim-0",
    episode_id: str | None = None,
    model_version: str | None = None,
    source: str = "fleet",
    supervisor: Policy | None = None,
    takeover: Takeover | None = None,
    max_steps: int | None = None,
    options: dict[str, Any] | None = None,
) -> Episode:
    """Run one episode of `policy` in `env` (reset with `seed` and `options`) and return it as an `Episode`.

    With a `supervisor` and a `takeover` rule, steps where `takeover(env, obs, t)` is true are driven by
    the supervisor and marked as interventions (HG-DAgger style). `max_steps` cuts the episode short
    of the task's time limit.
    """
    if (supervisor is None) != (takeover is None):
        raise ValueError("give both a supervisor and a takeover rule, or neither")
    obs, info = env.reset(seed=seed, options=options)
    cameras = list(obs["images"])
    frames: dict[str, list[np.ndarray]] = {camera: [] for camera in cameras}
    stamps: list[float] = []
    proprio: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    rewards: list[float] = []
    intervened: list[bool] = []
    limit = max_steps if max_steps is not None else getattr(env, "max_steps", env.task.max_steps)
    done = False
    while not done and len(actions) < limit:
        by_supervisor = bool(supervisor is not None and takeover is not None and takeover(env, obs, len(actions)))
        actor = supervisor if by_supervisor and supervisor is not None else policy
        action = np.asarray(actor(obs), dtype=np.float32)
        stamps.append(time.time())
        for camera in cameras:
            frames[camera].append(obs["images"][camera])
        proprio.append(obs["proprio"])
        next_obs, reward, terminated, truncated, info = env.step(action)
        actions.append(np.clip(action, -1.0, 1.0))
        rewards.append(reward)
        intervened.append(by_supervisor)
        obs, done = next_obs, terminated or truncated
    length = len(actions)
    spec = env.embodiment
    meta = EpisodeMeta(
        robot_id=robot_id,
        episode_id=episode_id or f"{env.task.name}-{spec.name}-{uuid.uuid4().hex[:12]}",
        embodiment=spec.name,
        task=env.task.name,
        instruction=obs["instruction"],
        model_version=model_version,
        length=length,
        success=bool(info["success"]),
        interventions=int(sum(intervened)),
        source=source,
    )
    return Episode(
        meta=meta,
        timestamps=np.asarray(stamps, dtype=np.float64),
        proprio=np.asarray(proprio, dtype=np.float32).reshape(length, spec.proprio_dim),
        actions=np.asarray(actions, dtype=np.float32).reshape(length, spec.action_dim),
        rewards=np.asarray(rewards, dtype=np.float32),
        intervention=np.asarray(intervened, dtype=np.bool_),
        frames={
            camera: np.asarray(f, dtype=np.uint8).reshape(length, *obs["images"][camera].shape)
            for camera, f in frames.items()
        },
    )


def expert_rollout(
    env: Env, *, seed: int | None = None, robot_id: str = "demo", episode_id: str | None = None, noise_std: float = 0.0
) -> Episode:
    """One scripted demonstration (source "demo"); `noise_std` perturbs the expert for more varied demos."""
    expert = make_expert(env, noise_std=noise_std, seed=seed)
    return rollout(env, expert, seed=seed, robot_id=robot_id, episode_id=episode_id, source="demo")


def collect_demos(
    store: EpisodeStore,
    *,
    task: str,
    embodiment: str,
    episodes: int,
    seed: int = 0,
    image_size: int = 64,
    noise_std: float = 0.0,
    robot_id: str | None = None,
    only_successes: bool = True,
    on_episode: Callable[[Episode], None] | None = None,
    scenario: str = "nominal",
) -> list[Path]:
    """Write `episodes` scripted demonstrations (seeds seed, seed+1, ...) to `store`; return their paths.
    `scenario`: the deployment conditions they are shown in (`fleet.sim.scenarios`).

    Episode ids are deterministic (`<task>-<embodiment>-seed<k>`), so re-running replaces rather than
    duplicates. Failed demos are skipped when `only_successes` (the expert fails < 5% of seeds).
    """
    env = make_env(task, embodiment, seed=seed, image_size=image_size, scenario=scenario)
    robot = robot_id or f"demo-{embodiment}"
    paths = []
    try:
        for k in range(seed, seed + episodes):
            episode = expert_rollout(
                env, seed=k, robot_id=robot, episode_id=f"{task}-{embodiment}-seed{k}", noise_std=noise_std
            )
            if on_episode is not None:
                on_episode(episode)
            if episode.meta.success or not only_successes:
                paths.append(store.write(episode))
    finally:
        env.close()
    return paths


def save_gif(
    episode: Episode | np.ndarray, path: Path | str, *, camera: str = "front", fps: float = 10.0, scale: int = 4
) -> Path:
    """Save an episode's frames (or a uint8 (T, H, W, 3) array) as a looping GIF, upscaled `scale` times."""
    import imageio.v3 as iio

    frames = episode.frames[camera] if isinstance(episode, Episode) else np.asarray(episode)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"need frames shaped (T, H, W, 3) with T > 0, got {frames.shape}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    return path
