"""Every episode of kept online runs read back from their Kafka logs: success whoever drove, takeover steps, and
return on human effort counted both ways.

Fleet-DAgger's ROHE (Hoque et al. 2022) is the fleet's reward over 1 + the human's steps, and its benchmark counts
every success, the ones a human helped to as well (BerkeleyAutomation/ifl_benchmark, plotting/process_logs.py:
`total_successes` and `total_reward` over all environments and steps, whoever acted). `bench/online.py` counted
only episodes without any takeover until its runs recorded both; this reads the runs made before that from their
streams (`<cache>/runs/<scenario>-<arm>-<repeat>-seed<n>/kafka`), checks that the stream's episodes are the run's
(the same count, autonomous successes and takeover steps), and with `--write` adds `all_successes` to each run's
`fleet` in its JSON (the merge, `bench/online.py --runs-from`, then reports ROHE as Fleet-DAgger does).

    PYTHONPATH=. .venv/bin/python -m research.rohe --runs research/online-raised-bench-no-demos/*.json --write
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.online import CACHE, rohe, stream_name
from research.fleet_replay import read_stream


class Episodes:
    """Collects what each episode's segments say (the `ingest` that `read_stream` hands messages to)."""

    def __init__(self) -> None:
        self.takeover_steps: dict[tuple[str, str], int] = defaultdict(int)
        self.success: dict[tuple[str, str], bool] = {}

    def handle(self, message: Any) -> None:
        from fleet.schemas import TrajectorySegment

        if not isinstance(message, TrajectorySegment):
            return
        key = (message.robot_id, message.episode_id)
        self.takeover_steps[key] += int(message.intervention.sum())
        if message.done:
            self.success[key] = bool(message.success)

    def summary(self) -> dict[str, int]:
        finished = list(self.success)
        return {
            "episodes": len(finished),
            "all_successes": sum(self.success[k] for k in finished),
            "autonomous_successes": sum(self.success[k] and self.takeover_steps[k] == 0 for k in finished),
            "takeover_steps": sum(self.takeover_steps[k] for k in finished),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="bench/online.py results")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--write", action="store_true", help="add fleet.all_successes to each run in its JSON")
    args = parser.parse_args()
    for path in args.runs:
        result = json.loads(path.read_text())
        for run in result["runs"]:
            config = result.get("config", {})
            name = stream_name(result["scenario"], run["arm"], run["repeat"], run["seed"], config.get("freeze"),
                               config.get("learner_precision"))  # fmt: skip
            episodes = Episodes()
            read_stream(args.cache / "runs" / name / "kafka", episodes)
            stream = episodes.summary()
            fleet = run["fleet"]
            steps = run["supervisor_steps"]
            row = {
                "run": f"{path.name}:{name}", **stream, "run_episodes": fleet["episodes"],
                "run_autonomous_successes": fleet["successes"], "supervisor_steps": steps,
                **rohe({**fleet, "all_successes": stream["all_successes"]}, steps),
            }  # fmt: skip
            print(json.dumps(row), flush=True)
            same = (stream["episodes"], stream["autonomous_successes"], stream["takeover_steps"]) == (
                fleet["episodes"], fleet["successes"], fleet["supervisor_steps"])  # fmt: skip
            if args.write and not same:
                raise SystemExit(f"{name}: the stream's episodes are not the run's ({row}); nothing written")
            fleet["all_successes"] = stream["all_successes"]
        if args.write:
            path.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
