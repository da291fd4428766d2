"""`evaluate`: the runtime's chunk schedule, seeded determinism, a rate in [0, 1] for every task x embodiment."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fleet.policy.config import VLAConfig
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy
from fleet.recipe.evaluate import ChunkedController, evaluate, format_table, policy_rollout
from fleet.sim.registry import make_env
from tests.policy.fakes import HashEmbedder


class CountingPolicy:
    """Chunks whose rows say (inference number, position in chunk)."""

    def __init__(self, horizon: int) -> None:
        self.horizon, self.calls, self.resets = horizon, 0, 0

    def infer(self, obs: dict) -> np.ndarray:
        self.calls += 1
        return np.stack([[self.calls, i] for i in range(self.horizon)]).astype(np.float32)

    def reset(self) -> None:
        self.resets += 1


def test_controller_executes_chunks_like_the_runtime() -> None:
    policy = CountingPolicy(horizon=4)
    controller = ChunkedController(policy, execute_steps=2, prefetch_steps=1)
    actions = [tuple(controller({"step": t})) for t in range(6)]
    # two actions of each chunk, then re-plan; the next chunk is inferred one step early, so its action 0
    # (meant for the step it was inferred at) is already past and it runs from action 1
    assert actions == [(1, 0), (1, 1), (2, 1), (2, 2), (3, 1), (3, 2)]
    assert policy.calls == 4  # chunk 4 was prefetched during the last step; a reset drops it, as the runtime does
    controller.reset()
    assert policy.resets == 2 and tuple(controller({})) == (5, 0)

    # The robots' schedule: every chunk is inferred 2 steps ahead, right as the one before starts, so it
    # runs its actions 2 and 3 (0 and 1 were for the 2 steps its inference overlapped).
    ahead = CountingPolicy(horizon=4)
    runtime = ChunkedController(ahead, execute_steps=2, prefetch_steps=2)
    assert [tuple(runtime({})) for _ in range(6)] == [(1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)]
    assert ahead.calls == 4

    whole = ChunkedController(CountingPolicy(horizon=3), execute_steps=None, prefetch_steps=0)
    assert [tuple(whole({})) for _ in range(4)] == [(1, 0), (1, 1), (1, 2), (2, 0)]


def _policy(config: VLAConfig, embedder: HashEmbedder) -> VLAPolicy:
    import torch

    torch.manual_seed(0)
    return VLAPolicy(VLAModel(config), embedder=embedder, seed=3)


def test_seeded_evaluation_is_deterministic(tiny_model: VLAConfig, embedder: HashEmbedder, tmp_path: Path) -> None:
    policy = _policy(tiny_model, embedder)
    env = make_env("push", "kuka", seed=0)
    try:
        a = policy_rollout(env, policy, seed=11, execute_steps=2)
        b = policy_rollout(env, policy, seed=11, execute_steps=2)
    finally:
        env.close()
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.frames["front"], b.frames["front"])

    tasks, bodies = ["pick", "push"], ["panda", "kuka"]
    rates = evaluate(policy, tasks, bodies, episodes=1, seed=7, gif_dir=tmp_path)
    assert rates == evaluate(_policy(tiny_model, HashEmbedder()), tasks, bodies, episodes=1, seed=7)
    assert {t: sorted(r) for t, r in rates.items()} == {t: sorted(bodies) for t in tasks}
    assert all(0.0 <= rate <= 1.0 for row in rates.values() for rate in row.values())
    assert sorted(p.name for p in tmp_path.glob("*.gif")) == sorted(f"{t}-{e}.gif" for t in tasks for e in bodies)
    assert "mean" in format_table(rates).splitlines()[0]


class ProprioPolicy:
    """A chunk that is a fixed function of the observation (so an episode's actions depend on its seed only), with a
    batched `infer_many` that records the batch sizes."""

    def __init__(self, horizon: int = 8, action_dim: int = 4) -> None:
        self.horizon, self.action_dim, self.batches = horizon, action_dim, []

    def reset(self) -> None:
        pass

    def infer(self, obs: dict) -> np.ndarray:
        p = np.asarray(obs["proprio"], dtype=np.float32)
        rows = [np.sin(p[: self.action_dim] * (k + 1) + p.sum()) for k in range(self.horizon)]
        return np.stack(rows).astype(np.float32)

    def infer_many(self, observations: list) -> list[np.ndarray]:
        self.batches.append(len(observations))
        return [self.infer(o) for o in observations]


class LoggedEnv:
    """The real sim env, logging each episode's actions under the seed it was reset with."""

    def __init__(self, env, log: dict) -> None:  # noqa: ANN001
        self.env, self.log, self.seed = env, log, None

    def reset(self, seed: int):  # noqa: ANN201
        self.seed = seed
        self.log[seed] = []
        return self.env.reset(seed=seed)

    def step(self, action: np.ndarray):  # noqa: ANN201
        self.log[self.seed].append(np.asarray(action).copy())
        return self.env.step(action)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.env, name)


def test_lockstep_lanes_run_each_episode_as_one_lane_would() -> None:
    """Three lanes sharing batched forwards give every seed the very actions it gets run alone, on the robots' chunk
    schedule, episode lengths differing (a lane takes the next seed when its episode ends, out of phase)."""
    from fleet.recipe.evaluate import run_lockstep

    seeds = [5, 6, 7, 8, 9]
    stuck_after = {5: 7, 8: 12}  # two episodes "stall" (and fail) early, so the lanes fall out of phase
    logs: list[dict] = []
    batches = []
    for lanes in (1, 3):
        log: dict = {}
        envs = [LoggedEnv(make_env("push", "panda", seed=0), log) for _ in range(lanes)]
        policy = ProprioPolicy()

        def stuck(lane: int, envs: list = envs) -> object:
            count = {"n": 0}

            def check(env: object) -> bool:
                count["n"] += 1
                return count["n"] > stuck_after.get(envs[lane].seed, 10**6)

            return check

        try:
            results = run_lockstep(envs, policy, seeds, max_steps=20, stuck=stuck)
        finally:
            for env in envs:
                env.close()
        assert results == [False] * len(seeds)  # these actions solve nothing (and stalled episodes fail)
        logs.append(log)
        batches.append(policy.batches)
    alone, together = logs
    assert sorted(alone) == sorted(together) == seeds
    for seed in seeds:
        assert len(alone[seed]) == len(together[seed]) == stuck_after.get(seed, 20)
        np.testing.assert_array_equal(np.stack(alone[seed]), np.stack(together[seed]))
    assert max(batches[0]) == 1 and max(batches[1]) == 3  # one forward served three lanes
    assert sum(batches[0]) == sum(batches[1])  # the same chunks, fewer forwards
