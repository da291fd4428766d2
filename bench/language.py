"""Language the policy never trained on (#29): success by instruction kind, on the same scenes.

Run from the repository root, on a quiet machine:

    .venv/bin/python -m bench.language --checkpoint DIR [--baseline DIR] [--episodes 60]

For each task (pick, push, place) x embodiment (panda, kuka) the same `--episodes` seeded scenes are run four ways
(`fleet.recipe.evaluate.evaluate`, the robots' chunk schedule):

- `in_distribution`: the task's own training phrasings,
- `paraphrase`: held-out phrasings (fleet/sim/language/held_out.json, never in any training list),
- `new_colour_words`: the task's own phrasings with other names of the palette's colours ("crimson", "navy", ...),
- `new_object`: the target painted a colour no demonstration had, named so ("orange").

Ratios are to `in_distribution` on those same scenes; 95% Wilson intervals per kind. `--baseline` scores a second
checkpoint (e.g. version 1 before instruction augmentation) on the same seeds, so "in-distribution success must not
fall" is read in the same run. Writes bench/results/language.json and the first episode of each held-out kind as a
GIF per pair under docs/language/.

bench/results/language.json's `--checkpoint` is the shipped version 1 of today (fleet/assets/version-one, the same
weights as research/language/v1-colour); its `--baseline fleet/assets/version-one` was, when it ran, the version 1
shipped before it, which is research/online/v1-20k-flow4 (no paraphrases, no colour lexicon):

    .venv/bin/python -m bench.language --checkpoint fleet/assets/version-one --baseline research/online/v1-20k-flow4 \
        --episodes 60
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "language.json"
GIFS = ROOT / "docs" / "language"
KINDS = {"in_distribution": None, "paraphrase": "held-out", "new_colour_words": "held-out-colours",
         "new_object": "held-out-object"}  # fmt: skip
SEED = 4_000_000  # scenes no gate, bench or demo uses


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def score(checkpoint: Path, args: argparse.Namespace, *, gifs: Path | None) -> dict[str, Any]:
    """Every kind's success on the same scenes: mean, interval and per-pair rates."""
    from fleet.recipe.evaluate import evaluate, load_policy
    from fleet.sim.language import load_instruction_set

    policy = load_policy(checkpoint)
    out: dict[str, Any] = {}
    for kind, named in KINDS.items():
        started = time.monotonic()
        rates = evaluate(policy, args.tasks, args.embodiments, args.episodes, SEED,
                         instructions=load_instruction_set(named) if named else None,
                         gif_dir=gifs / kind if gifs is not None and named else None)  # fmt: skip
        wins = round(sum(r * args.episodes for row in rates.values() for r in row.values()))
        n = args.episodes * sum(len(row) for row in rates.values())
        out[kind] = {"success": round(wins / n, 3), "ci95": wilson(wins, n), "episodes": n,
                     "per_pair": {f"{t}/{e}": r for t, row in rates.items() for e, r in row.items()},
                     "seconds": round(time.monotonic() - started)}  # fmt: skip
        print(f"  {kind}: {out[kind]['success']} {out[kind]['ci95']}", flush=True)
    return out


def ratios(kinds: dict[str, Any]) -> dict[str, float | None]:
    base = kinds["in_distribution"]["success"]
    names = {
        "paraphrase_ratio": "paraphrase",
        "colour_word_ratio": "new_colour_words",
        "new_object_ratio": "new_object",
    }
    return {key: round(kinds[kind]["success"] / base, 3) if base else None for key, kind in names.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the policy to score")
    parser.add_argument("--baseline", type=Path, help="a second checkpoint scored on the same scenes")
    parser.add_argument("--episodes", type=int, default=60, help="per task x embodiment and kind")
    parser.add_argument("--tasks", nargs="+", default=["pick", "push", "place"])
    parser.add_argument("--embodiments", nargs="+", default=["panda", "kuka"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    print(f"{args.checkpoint}: {args.episodes} scenes per pair and kind", flush=True)
    kinds = score(args.checkpoint, args, gifs=GIFS)
    result: dict[str, Any] = {
        "benchmark": "language",
        "command": " ".join(["python -m bench.language", *(argv if argv is not None else sys.argv[1:])]),
        "checkpoint": str(args.checkpoint),
        "episodes_per_pair": args.episodes,
        **{kind: kinds[kind]["success"] for kind in KINDS},
        **ratios(kinds),
        "kinds": kinds,
    }
    if args.baseline is not None:
        print(f"baseline {args.baseline}", flush=True)
        base = score(args.baseline, args, gifs=None)
        result["baseline"] = {"checkpoint": str(args.baseline), **{k: base[k]["success"] for k in KINDS},
                              **ratios(base), "kinds": base}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("kinds", "baseline")}), flush=True)
    return result


if __name__ == "__main__":
    main()
