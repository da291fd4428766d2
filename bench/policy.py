"""Acceptance bench of the VLA recipe: latency, size, sim speed, and success after post-training on 50 demos.

Run from the repository root (about 45 minutes on the 2-core machine; the machine is shared, so nice it):

    nice -n 10 .venv/bin/python -m bench.policy

Writes `bench/results/policy.json` and one eval GIF per head x task x embodiment to `docs/rollouts/`.
What it does, in order (the recipe's `default` presets, `fleet.recipe.train.STAGE_OVERRIDES`):

1. `inference_ms_p50/p99`: one action chunk per `VLAPolicy.infer` of the default flow model, one CPU thread;
   `params`: its parameter count. `sim_steps_per_s`: PyBullet env steps with 64x64 rendering, one core.
2. Scripted demos: 300 per task x embodiment for pre-training (seeds 0..), 25 per task x embodiment for
   post-training (seeds 50_000..), so post-training sees 50 demos of its task; `expert_success` is the
   expert's success on every episode it ran.
3. Per head (flow, discrete): pre-train on all demos, post-train one copy per task on its 50 demos, and
   evaluate each post-trained model on its task, 20 seeded episodes per embodiment (seeds 100_000..),
   with the runtime's chunk schedule (`execute_steps` below, prefetch 1) -> `success[head][task][embodiment]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fleet.episodes import Episode, EpisodeStore
from fleet.policy.config import VLAConfig
from fleet.policy.language import default_embedder
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy
from fleet.recipe.demos import collect_demos_grid
from fleet.recipe.evaluate import evaluate, mean_rate
from fleet.recipe.train import STAGE_OVERRIDES, StageConfig, StageResult, run_stage
from fleet.sim.experts import make_expert
from fleet.sim.registry import make_env

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "policy.json"
GIFS = ROOT / "docs" / "rollouts"
TASKS = ("pick", "push", "place")
EMBODIMENTS = ("panda", "kuka")
HEADS = ("flow", "discrete")
PRETRAIN_DEMOS = 300  # per task x embodiment
POSTTRAIN_DEMOS = 50  # per task, spread over the embodiments
EVAL_EPISODES = 20  # per task x embodiment
EVAL_SEED = 100_000
EXECUTE_STEPS = 4  # actions executed per chunk of 8 before re-planning
THREADS = 2  # torch threads for training (latency is measured on one)


def inference_latency(head: str, calls: int = 200) -> dict[str, float]:
    """p50/p99 ms of one chunk on one thread, and the parameter count, for the default model with `head`."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policy = VLAPolicy(VLAModel(VLAConfig(action_head=head)), embedder=default_embedder())
    env = make_env("pick", "panda", seed=0)
    obs, _ = env.reset(seed=0)
    env.close()
    for _ in range(20):
        policy.infer(obs)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.infer(obs)
        times.append((time.perf_counter() - start) * 1000.0)
    params = sum(p.numel() for p in policy.model.parameters())
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)), "params": params}


def sim_speed(steps: int = 1_000) -> float:
    """Env steps per second with 64x64 rendering (expert actions, timed around `env.step` only)."""
    env = make_env("pick", "panda", seed=0)
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    spent, done, seed = 0.0, 0, 0
    while done < steps:
        action = expert(obs)
        start = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(action)
        spent += time.perf_counter() - start
        done += 1
        if terminated or truncated:
            seed += 1
            obs, _ = env.reset(seed=seed)
    env.close()
    return done / spent


def collect(store: EpisodeStore, per_cell: int, seed: int, outcomes: dict[str, list[bool]]) -> int:
    def record(episode: Episode) -> None:
        outcomes.setdefault(f"{episode.meta.task}/{episode.meta.embodiment}", []).append(episode.meta.success)

    return collect_demos_grid(store, TASKS, EMBODIMENTS, per_cell, seed, on_episode=record)


def _summary(result: StageResult) -> dict[str, float]:
    losses = {k.split("/", 1)[-1]: round(v, 4) for k, v in result.stats.losses.items()}
    return {
        "steps": result.stats.step,
        "episodes": result.episodes,
        "seconds": round(result.stats.seconds, 1),
        **losses,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir, removed)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fleet-bench-policy-"))
    started = time.perf_counter()
    phases: dict[str, float] = {}
    out: dict = {"benchmark": "policy", "command": "nice -n 10 .venv/bin/python -m bench.policy"}

    def save() -> None:
        out["seconds"] = {**phases, "total": round(time.perf_counter() - started, 1)}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=1) + "\n")

    t = time.perf_counter()
    latency = {head: inference_latency(head) for head in HEADS}
    out.update(inference_ms_p50=round(latency["flow"]["p50"], 3), inference_ms_p99=round(latency["flow"]["p99"], 3),
               params=latency["flow"]["params"], sim_steps_per_s=round(sim_speed(), 1))  # fmt: skip
    out["latency_by_head"] = {h: {k: round(v, 3) for k, v in d.items()} for h, d in latency.items()}
    phases["latency_and_sim"] = round(time.perf_counter() - t, 1)
    torch.set_num_threads(THREADS)

    t = time.perf_counter()
    outcomes: dict[str, list[bool]] = {}
    pre_store, post_store = EpisodeStore(work / "demos-pre"), EpisodeStore(work / "demos-post")
    collect(pre_store, PRETRAIN_DEMOS, 0, outcomes)
    collect(post_store, POSTTRAIN_DEMOS // len(EMBODIMENTS), 50_000, outcomes)
    expert: dict[str, dict[str, float]] = {}
    for key, results in sorted(outcomes.items()):
        task, body = key.split("/")
        expert.setdefault(task, {})[body] = round(float(np.mean(results)), 3)
    out["expert_success"] = expert
    out["expert_success_mean"] = round(float(np.mean([r for v in outcomes.values() for r in v])), 3)
    phases["demos"] = round(time.perf_counter() - t, 1)
    save()

    out["success"], out["success_mean"], out["train"] = {}, {}, {}
    GIFS.mkdir(parents=True, exist_ok=True)
    for head in HEADS:
        t = time.perf_counter()
        pre = run_stage(StageConfig(stage="pretrain", demos=pre_store.root, run_dir=work / f"pre-{head}", head=head,
                                    log_mlflow=False, progress=False))  # fmt: skip
        out["train"][head] = {"pretrain": _summary(pre)}
        out["success"][head] = {}
        for task in TASKS:
            post = run_stage(StageConfig(stage="posttrain", demos=post_store.root, run_dir=work / f"post-{head}-{task}",
                                         task=task, num_demos=POSTTRAIN_DEMOS, init=pre.checkpoint, log_mlflow=False,
                                         progress=False))  # fmt: skip
            out["train"][head][f"posttrain-{task}"] = _summary(post)
            gif_dir = work / f"gifs-{head}"
            rates = evaluate(post.checkpoint, [task], EMBODIMENTS, EVAL_EPISODES, EVAL_SEED,
                             execute_steps=EXECUTE_STEPS, prefetch_steps=1, gif_dir=gif_dir)  # fmt: skip
            out["success"][head][task] = rates[task]
            for body in EMBODIMENTS:
                shutil.copy(gif_dir / f"{task}-{body}.gif", GIFS / f"{head}-{task}-{body}.gif")
            save()
        out["success_mean"][head] = round(mean_rate(out["success"][head]), 3)
        phases[f"train_eval_{head}"] = round(time.perf_counter() - t, 1)
        save()

    out["config"] = {
        "tasks": TASKS, "embodiments": EMBODIMENTS, "pretrain_demos_per_cell": PRETRAIN_DEMOS,
        "posttrain_demos_per_task": POSTTRAIN_DEMOS, "eval_episodes_per_cell": EVAL_EPISODES, "eval_seed": EVAL_SEED,
        "execute_steps": EXECUTE_STEPS, "prefetch_steps": 1, "train_threads": THREADS,
        "stage_presets": {stage: STAGE_OVERRIDES[stage]["default"] for stage in STAGE_OVERRIDES},
    }  # fmt: skip
    out["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.machine(), "torch": torch.__version__,
                      "load_average_1m": round(os.getloadavg()[0], 2)}  # fmt: skip
    save()
    print(json.dumps(out, indent=1))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
