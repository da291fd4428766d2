"""`fleet serve` latency: action chunks over openpi's websocket protocol for 1, 4 and 16 concurrent clients, against
the same policy's in-process inference measured in the same run; and what the torch-free robot client costs.

Run from the repository root, on a quiet machine:

    .venv/bin/python -m bench.serve

The model is the robots' (the default `VLAConfig`, 4 flow steps, front and wrist cameras at 64 px; random weights:
the latency does not depend on them), served by `actors.serve.PolicyServer` + `Batcher` in this process on one
torch thread, as `fleet serve` runs it. Each client is its own process (`fleet.client.openpi.PolicyClient`, no
torch), asking for one chunk after another with a fresh observation, as a robot re-planning every 2 steps does at
most; p50/p99 are per chunk, from send to answer. `in_process_p50_ms` is `VLAPolicy.infer` on the same observation
in this process; the target is one client's p50 within 1.5x of it. `client_import_s` is `import fleet.client` in a
fresh interpreter of the `fleet[client]` environment (tests/envs.py; minus the interpreter's own start-up) and
`client_install_mb` that environment's size. Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"


def observation(embodiment: str, rng: np.random.Generator, cameras: tuple[str, ...], proprio_dim: int) -> dict:
    return {"images": {c: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for c in cameras},
            "proprio": rng.uniform(-1, 1, proprio_dim).astype(np.float32),
            "prompt": "pick up the red cube", "embodiment": embodiment}  # fmt: skip


def _client(port: int, seconds: float, warmup_s: float, seed: int, out: Any) -> None:
    """One robot's process: chunks back to back for `seconds`; the latencies after `warmup_s`, in ms."""
    from fleet.client.openpi import PolicyClient

    client = PolicyClient(f"ws://127.0.0.1:{port}")
    meta, rng = client.metadata, np.random.default_rng(seed)
    embodiment = ("panda", "kuka")[seed % 2]
    proprio_dim = meta["embodiments"][embodiment]["proprio_dim"]
    started, latencies = time.monotonic(), []
    while time.monotonic() - started < seconds:
        obs = observation(embodiment, rng, tuple(meta["cameras"]), proprio_dim)
        sent = time.perf_counter()
        client.infer(obs)
        if time.monotonic() - started >= warmup_s:
            latencies.append((time.perf_counter() - sent) * 1000)
    client.close()
    out.put(latencies)


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def in_process(policy: Any, calls: int) -> list[float]:
    from fleet.embodiments import get_embodiment

    rng, took = np.random.default_rng(0), []
    for _ in range(calls):
        obs = observation("panda", rng, policy.config.cameras, get_embodiment("panda").proprio_dim)
        obs["instruction"], obs["task"] = obs.pop("prompt"), ""
        sent = time.perf_counter()
        policy.infer(obs)
        took.append((time.perf_counter() - sent) * 1000)
    return took


def client_costs() -> dict[str, float]:
    from tests.envs import client_python

    with tempfile.TemporaryDirectory() as tmp:
        python = client_python(Path(tmp) / "src")
        bare, imported = [], []
        for _ in range(5):
            for code, into in (("pass", bare), ("import fleet.client, fleet.client.openpi", imported)):
                start = time.perf_counter()
                subprocess.run([python, "-c", code], check=True)
                into.append(time.perf_counter() - start)
    venv = Path(python).parents[1]
    size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    return {"client_import_s": round(statistics.median(imported) - statistics.median(bare), 3),
            "client_install_mb": round(size / 2**20, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients per round")
    parser.add_argument("--seconds", type=float, default=25.0, help="per round, of which --warmup is not counted")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    from actors.serve import Batcher, PolicyServer, ServeConfig, metadata
    from fleet.policy.config import VLAConfig
    from fleet.policy.language import default_embedder
    from fleet.policy.model import VLAModel
    from fleet.policy.policy import VLAPolicy

    torch.manual_seed(0)
    policy = VLAPolicy(VLAModel(VLAConfig()), embedder=default_embedder(), seed=0, num_threads=1)
    in_process(policy, 20)  # warm-up
    baseline = in_process(policy, 200)
    print(f"in process: p50 {percentile(baseline, 50)} ms", flush=True)

    batcher = Batcher(lambda: (policy, "bench"), max_batch=16, wait_s=0.002).start()
    hello = metadata(policy.config, "bench")
    server = PolicyServer(ServeConfig(port=0), batcher, metadata=lambda: hello, authorize=lambda _token: None)
    threading.Thread(target=server.run, daemon=True).start()
    assert server.ready.wait(30) and server.port is not None
    context = multiprocessing.get_context("spawn")
    rounds = {}
    for n in (int(c) for c in args.clients.split(",")):
        batcher.batch_sizes.clear()
        out = context.Queue()
        procs = [context.Process(target=_client, args=(server.port, args.seconds, args.warmup, i, out))
                 for i in range(n)]  # fmt: skip
        for p in procs:
            p.start()
        latencies = [ms for _ in procs for ms in out.get(timeout=args.seconds + 120)]
        for p in procs:
            p.join(30)
        batches = dict(sorted(batcher.batch_sizes.items()))
        rounds[str(n)] = {"chunk_latency_p50_ms": percentile(latencies, 50),
                          "chunk_latency_p99_ms": percentile(latencies, 99), "chunks": len(latencies),
                          "chunks_per_s": round(len(latencies) / (args.seconds - args.warmup), 1),
                          "batch_sizes": batches}  # fmt: skip
        print(f"{n} clients: {rounds[str(n)]}", flush=True)
    server.stop()
    batcher.stop()

    p50_one = rounds.get("1", {}).get("chunk_latency_p50_ms")
    result = {
        "in_process_p50_ms": percentile(baseline, 50),
        "in_process_p99_ms": percentile(baseline, 99),
        "clients": rounds,
        "one_client_over_in_process": round(p50_one / percentile(baseline, 50), 2) if p50_one else None,
        **client_costs(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch_threads": 1},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "clients"}), flush=True)
    return result


if __name__ == "__main__":
    main()
