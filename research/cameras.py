"""Which cameras version 1 needs: the same demos and pre-training steps, front only / wrist only / front + wrist.

Collects `--demos` scripted demonstrations per task × embodiment once (every camera the sim has, as the robots
stream them), pre-trains one VLA per camera set with the recipe's pre-training stage (`pretrain_cached` of
bench/online.py, the default architecture with only `VLAConfig.cameras` changed; same seed, steps and
batches), and scores each on the same held-out episodes (`fleet.recipe.evaluate`: `--episodes` per pair from
seed 100,000, on the robots' chunk schedule). Demos and runs are cached under `--cache`; a re-run resumes /
reuses them.

Writes research/cameras/cameras.json: per camera set, success per task × embodiment, the mean, the final action
loss and the training throughput (steps/s; only comparable within one run, and only when the runs were not
resumed). Command that produced the committed result:

    .venv/bin/python -m research.cameras --cache /tmp/s10/cameras

(the three runs had been trained by the same calls in scratch scripts of session 10, so this run found them
done and evaluated them; their throughputs are the scratch runs' tqdm figures, in the note, not in the JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fleet.sim.base import CAMERA_REVISION

ROOT = Path(__file__).resolve().parents[1]
CAMERA_SETS = {"front": ("front",), "wrist": ("wrist",), "front+wrist": ("front", "wrist")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sets", default=",".join(CAMERA_SETS), help=f"camera sets, of {list(CAMERA_SETS)}")
    parser.add_argument("--tasks", nargs="+", default=["pick", "push", "place"])
    parser.add_argument("--embodiments", nargs="+", default=["panda", "kuka"])
    parser.add_argument("--demos", type=int, default=300, help="scripted demos per task × embodiment")
    parser.add_argument("--steps", type=int, default=10_000, help="pre-training steps per camera set")
    parser.add_argument("--episodes", type=int, default=30, help="held-out episodes per task × embodiment")
    cache = Path.home() / ".cache" / "fleet" / "bench-cameras" / f"cameras-{CAMERA_REVISION}"
    parser.add_argument("--cache", type=Path, default=cache)
    parser.add_argument("--out", type=Path, default=ROOT / "research" / "cameras" / "cameras.json")
    args = parser.parse_args(argv)

    from bench.online import pretrain_cached
    from fleet.policy.config import VLAConfig
    from fleet.recipe.evaluate import evaluate, format_table, mean_rate

    sets = [s for s in args.sets.split(",") if s]
    unknown = sorted(set(sets) - set(CAMERA_SETS))
    if unknown:
        parser.error(f"unknown camera sets {unknown}; known: {list(CAMERA_SETS)}")
    result: dict = {
        "command": "research/cameras.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "demos_per_pair": args.demos,
        "steps": args.steps,
        "episodes_per_pair": args.episodes,
        "sets": {},
    }
    for name in sets:
        stats = pretrain_cached(
            args.cache, tuple(args.tasks), tuple(args.embodiments), args.demos, args.steps,
            run=name, model=VLAConfig(cameras=CAMERA_SETS[name]),
        ).stats  # fmt: skip
        rates = evaluate(stats.checkpoint, args.tasks, args.embodiments, args.episodes)
        print(f"\n{name}: {stats.checkpoint}\n{format_table(rates)}", flush=True)
        result["sets"][name] = {
            "cameras": list(CAMERA_SETS[name]),
            "success": rates,
            "mean": mean_rate(rates),
            "action_loss": stats.losses.get("loss/action"),  # None when the run was already done
            "steps_run": stats.steps_run,
            "steps_per_s": stats.steps_run / stats.seconds if stats.steps_run else None,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: round(v["mean"], 3) for k, v in result["sets"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
