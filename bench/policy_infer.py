"""Policy inference latency: one action chunk per `VLAPolicy.infer` call on one CPU thread, for both action heads.

Run from the repository root:

    .venv/bin/python -m bench.policy_infer

Builds the default `VLAConfig` (flow-matching head, then the discrete-token head), feeds an observation of
a Panda with a 64x64 image per camera of the config (front and wrist) through the full `Policy.infer` path
(validation, cached MiniLM instruction embedding, trunk, head, numpy out) with `torch.set_num_threads(1)`,
and writes p50/p99/mean latency and parameter counts to `bench/results/policy_infer.json` (target: <= 20 ms per chunk).
The first call per instruction (MiniLM encoding) is reported separately; it never happens per step.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fleet.embodiments import EMBODIMENTS
from fleet.policy.config import VLAConfig
from fleet.policy.language import default_embedder
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy

RESULTS = Path(__file__).resolve().parent / "results" / "policy_infer.json"
TARGET_MS = 20.0
WARMUP = 20
CALLS = 300


def _images(rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {camera: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for camera in cameras}


def _observation(rng: np.random.Generator, cameras: tuple[str, ...]) -> dict:
    spec = EMBODIMENTS["panda"]
    return {
        "images": _images(rng, cameras),
        "proprio": rng.uniform(-1, 1, spec.proprio_dim).astype(np.float32),
        "instruction": "pick up the red cube and place it in the bowl",
        "task": "pick_place",
        "embodiment": "panda",
    }


def bench_head(head: str) -> dict:
    torch.manual_seed(0)
    config = VLAConfig(action_head=head)
    policy = VLAPolicy(VLAModel(config), embedder=default_embedder(), seed=0)
    rng = np.random.default_rng(0)
    obs = _observation(rng, config.cameras)
    start = time.perf_counter()
    policy.infer(obs)  # embeds the instruction (cached afterwards)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(WARMUP):
        policy.infer(obs)
    times = []
    for _ in range(CALLS):
        obs["images"] = _images(rng, config.cameras)
        start = time.perf_counter()
        chunk = policy.infer(obs)
        times.append((time.perf_counter() - start) * 1e3)
    ms = np.array(times)
    return {
        "head": head,
        "cameras": list(config.cameras),
        "params": policy.model.num_parameters(),
        "chunk_shape": list(chunk.shape),
        "flow_steps": config.flow_steps if head == "flow" else None,
        "action_bins": config.action_bins if head == "discrete" else None,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "per_action_p50_ms": round(float(np.percentile(ms, 50)) / config.chunk_size, 3),
        "first_call_ms_with_instruction_embedding": round(first_ms, 1),
        "meets_target": bool(np.percentile(ms, 99) <= TARGET_MS),
    }


def main() -> dict:
    torch.set_num_threads(1)
    results = {
        "benchmark": "policy_infer",
        "command": ".venv/bin/python -m bench.policy_infer",
        "target_ms_per_chunk": TARGET_MS,
        "calls": CALLS,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "image": [64, 64, 3],
        "chunk_size": VLAConfig().chunk_size,
        "heads": [bench_head("flow"), bench_head("discrete")],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
