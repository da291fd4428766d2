"""Where does version 1 stand on candidate deployment scenarios? Scores one checkpoint with the gate's rules (20
held-out episodes per pair, seeds 2,000,000+, an episode that stalls fails) on scenarios defined here, to pick a
benchmark scenario on which version 1 scores 0.3-0.5 (issue #28) before any of them enters `fleet.sim.scenarios`.

    PYTHONPATH=. .venv/bin/python -m research.scenario_scan --v1 <checkpoint> --only high-start,wide --out scan.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fleet.sim import scenarios
from fleet.sim.scenarios import Layout, Scenario

CANDIDATES = {
    s.name: s
    for s in (
        Scenario("high-start", "the tool starts higher and nearer the base", home=(0.42, 0.0, 0.30), home_jitter=0.06),
        Scenario("mid-start", "the tool starts a little higher and nearer", home=(0.46, 0.0, 0.27), home_jitter=0.05),
        Scenario(
            "wide", "objects farther out and to the sides", layout=Layout((0.50, 0.72), (-0.22, 0.22), (0.55, 0.70))
        ),
        Scenario(
            "mild-far",
            "between nominal and far-reach",
            layout=Layout((0.50, 0.70), (-0.21, 0.21), (0.52, 0.68)),
            home=(0.46, 0.0, 0.26),
            home_jitter=0.05,
        ),  # fmt: skip
    )
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--v1", type=Path, required=True)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    parser.add_argument("--tasks", default="pick,push,place")
    parser.add_argument("--embodiments", default="panda,kuka")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from fleet.policy.checkpoint import load_checkpoint
    from fleet.policy.language import default_embedder

    torch.set_num_threads(args.threads)
    scenarios.SCENARIOS.update(CANDIDATES)
    model, embedder = load_checkpoint(args.v1), default_embedder()
    out: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.only.split(","):
        out[name] = held_out_score(model, embedder, name, args)
        print(name, json.dumps(out[name]), flush=True)
        args.out.write_text(json.dumps(out, indent=1))


def held_out_score(model: Any, embedder: Any, scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    """`model` scored with the gate's rules on `args.episodes` held-out episodes (seeds 2,000,000+) per pair of
    `args.tasks` x `args.embodiments` (comma-separated) in `scenario`: mean, per-pair success, seconds taken."""
    from learner.gate import EvalGate, GateConfig

    config = GateConfig(
        tasks=tuple(args.tasks.split(",")), embodiments=tuple(args.embodiments.split(",")), scenario=scenario,
        episodes=args.episodes, seed_offset=2_000_000,
    )  # fmt: skip
    started = time.monotonic()
    result = EvalGate(config).evaluate(model, embedder=embedder)
    return {
        "mean": round(result.mean, 3),
        "success": {f"{t}/{e}": v for (t, e), v in result.success.items()},
        "seconds": round(time.monotonic() - started),
    }


if __name__ == "__main__":
    main()
