"""Simulator benchmark: env steps/s per core (rendering included) and scripted-expert success rates.

For every task x embodiment (PyBullet: panda, kuka; Meta-World: sawyer, when installed) it runs
`--episodes` expert episodes from clean seeded resets and as many "takeover" episodes (random actions
for `--drift-steps` steps, then the expert drives: the simulated-supervisor use), all in one process.
Speed counts `env.step` calls only (IK or MuJoCo control, physics substeps, the 64x64 renders, proprio),
timed in wall-clock and in process CPU time; CPU time is the per-core figure that holds on a shared
machine. Resets are timed separately (PyBullet rebuilds the world on each one).

Results in bench/results/sim.json came from:

    PYTHONPATH=. .venv/bin/python -m bench.sim --episodes 50
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fleet.sim import BACKENDS, TASKS, make_env, make_expert

RESULTS = Path(__file__).parent / "results" / "sim.json"


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    episodes: int = 50  # expert episodes per task x embodiment (and as many takeover episodes)
    drift_steps: int = 15  # random-action steps before the expert takes over
    image_size: int = 64  # camera resolution, pixels
    seed: int = 0  # first episode seed; episode k uses seed + k
    embodiments: tuple[str, ...] = ("panda", "kuka", "sawyer")  # embodiments to benchmark (sawyer if installed)
    tasks: tuple[str, ...] = tuple(sorted(TASKS))  # tasks to benchmark
    out: Path = RESULTS  # where the JSON goes


def _bench_one(task: str, embodiment: str, config: BenchConfig) -> dict:
    env = make_env(task, embodiment, seed=config.seed, image_size=config.image_size)
    expert = make_expert(env)
    rng = np.random.default_rng(config.seed)
    steps, wall, cpu, reset_wall = 0, 0.0, 0.0, 0.0
    successes, takeover_successes, lengths = 0, 0, []
    try:
        for mode in ("expert", "takeover"):
            for k in range(config.episodes):
                t0 = time.perf_counter()
                obs, info = env.reset(seed=config.seed + k)
                reset_wall += time.perf_counter() - t0
                done, t = False, 0
                while not done:
                    if mode == "takeover" and t < config.drift_steps:
                        action = rng.uniform(-1, 1, env.embodiment.action_dim).astype(np.float32)
                    else:
                        action = expert(obs)
                    w0, c0 = time.perf_counter(), time.process_time()
                    obs, _, terminated, truncated, info = env.step(action)
                    wall += time.perf_counter() - w0
                    cpu += time.process_time() - c0
                    steps, t, done = steps + 1, t + 1, terminated or truncated
                if mode == "expert":
                    successes += bool(info["success"])
                    lengths.append(info["step"])
                else:
                    takeover_successes += bool(info["success"])
    finally:
        env.close()
    n = config.episodes
    return {
        "task": task,
        "embodiment": embodiment,
        "episodes": n,
        "expert_success_rate": successes / n,
        "expert_mean_length": float(np.mean(lengths)),
        "takeover_success_rate": takeover_successes / n,
        "time_limit": TASKS[task].max_steps,
        "env_steps": steps,
        "steps_per_s_wall": round(steps / wall, 1),
        "steps_per_s_cpu": round(steps / cpu, 1),
        "reset_ms": round(1000 * reset_wall / (2 * n), 2),
    }


def main(config: BenchConfig) -> dict:
    started = time.time()
    rows = []
    for task in config.tasks:
        for embodiment in config.embodiments:
            if embodiment not in TASKS[task].embodiments:
                continue
            if BACKENDS[embodiment] == "metaworld" and importlib.util.find_spec("metaworld") is None:
                print(f"skipping {task}/{embodiment}: metaworld is not installed", flush=True)
                continue
            row = _bench_one(task, embodiment, config)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "benchmark": "sim",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "seconds": round(time.time() - started, 1),
        "results": rows,
    }
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=BenchConfig.episodes)
    parser.add_argument("--drift-steps", type=int, default=BenchConfig.drift_steps)
    parser.add_argument("--image-size", type=int, default=BenchConfig.image_size)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    main(BenchConfig(episodes=args.episodes, drift_steps=args.drift_steps, image_size=args.image_size, out=args.out))
