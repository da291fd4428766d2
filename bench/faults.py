"""Injected faults, and what each one cost: messages lost or kept twice, training on rejected data, foreign weights.

Each fault is injected by its test, against the real parts it names (tests/faults/, the browser and registry
tests; the tests start the stack they need): this bench runs those tests with `FLEET_FAULTS_RECORD` set, so each
writes the counts it measured (tests/faults/record.py) before asserting them, and gathers them into one table.

- `hostile_heartbeat`: a heartbeat whose free text is `</script><script>...` reaches the fleet page (its initial
  JSON and the live stream) in headless Chromium.
- `unsigned_version`, `foreign_signed_version`: a version registered without the learner's signature, and one
  signed by another Ed25519 key, promoted to production in the real MLflow registry while a robot follows it.
- `torn_checkpoint`: the learner's newest `learner_state.json` cut mid-write after the group committed its offsets
  (real Kafka and MLflow).
- `corrupt_spool_record`: one bit flipped mid-segment in an offline robot's spool, then replayed to the broker.
- `dashboard_killed_while_robots_post`: `fleet dashboard` SIGKILLed while 4 real-time robots post through it
  (fleet.transport.http), restarted 10 s later.
- `dashboard_killed_between_review_commit_and_ack`: a rejection committed and the dashboard gone before Kafka
  acknowledged it; the next process relays it to the learner's replay.
- `broker_killed_while_robots_stream`: the Kafka broker SIGKILLed for 30 s while 8 real-time robots stream; the
  recorder and a learner-side group read.

Per case: `lost` (sent and never kept: Kafka, the recorder's rows, the learner's re-read), `duplicated` (kept twice by
what keeps data: the recorder's rows, the learner's reads, the page's rows), `trained_on_rejected` (a rejected
correction's steps still in the learner's replay), `foreign_weights_loaded` (versions a robot loaded that the
learner's key did not sign). `null` where the fault has no path to that outcome (a heartbeat carries no weights);
the case's other measured counts are kept beside them. `all_zero` is true when every measured count is 0 and
every test passed.

    .venv/bin/python -m bench.faults

writes bench/results/faults.json (a few minutes: each test starts the stack it needs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("lost", "duplicated", "trained_on_rejected", "foreign_weights_loaded")
SIGNED = "tests/registry/test_registry.py::test_robots_load_only_versions_signed_by_the_learners_key"
CASES = {
    "hostile_heartbeat": "tests/dashboards/test_browser.py::test_a_hostile_heartbeat_runs_no_script",
    "unsigned_version": SIGNED,
    "foreign_signed_version": SIGNED,
    "torn_checkpoint": "tests/learner/test_service.py::test_learner_publishes_lineage_and_resumes_without_retraining",
    "corrupt_spool_record": (
        "tests/faults/test_spool_full.py::test_a_record_damaged_on_disk_is_dead_lettered_and_the_rest_replayed"
    ),
    "dashboard_killed_while_robots_post": (
        "tests/faults/test_dashboard_kill.py::test_dashboard_killed_while_4_robots_post_through_it"
    ),
    "dashboard_killed_between_review_commit_and_ack": (
        "tests/dashboards/test_durable_publish.py::"
        "test_a_rejection_committed_before_the_dashboard_died_still_takes_the_correction_out_of_training"
    ),
    "broker_killed_while_robots_stream": (
        "tests/faults/test_broker_outage.py::test_broker_killed_for_30_s_while_8_robots_stream"
    ),
}


def run_cases(cases: dict[str, str], log_path: Path) -> tuple[dict[str, dict], int]:
    """Run the cases' tests once each (in one pytest session: one stack); returns each case's record and pytest's
    exit code."""
    with tempfile.TemporaryDirectory(prefix="fleet-faults-") as tmp:
        record = Path(tmp) / "faults.jsonl"
        env = {**os.environ, "FLEET_FAULTS_RECORD": str(record)}
        tests = list(dict.fromkeys(cases.values()))
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *tests]
        print(f"running {len(tests)} fault tests (log: {log_path})", flush=True)
        with open(log_path, "w") as log:
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        lines = record.read_text().splitlines() if record.exists() else []
    recorded = {}
    for line in lines:
        row = json.loads(line)
        recorded[row.pop("case")] = row
    return recorded, code


def table(cases: dict[str, str], recorded: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for case, test in cases.items():
        row = dict(recorded.get(case, {}))
        out[case] = {
            "test": test,
            "recorded": case in recorded,
            **{k: row.pop(k, None) for k in OUTCOMES},
            "measured": row,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults.json")
    parser.add_argument(
        "--log", type=Path, default=Path(tempfile.gettempdir()) / "fleet-faults.log", help="pytest's output"
    )
    args = parser.parse_args()
    cases = {c: CASES[c] for c in args.case} if args.case else CASES
    started = time.monotonic()
    recorded, code = run_cases(cases, args.log)
    rows = table(cases, recorded)
    counts = [v for row in rows.values() for k in OUTCOMES if (v := row[k]) is not None]
    result = {
        "benchmark": "faults",
        "command": " ".join(["bench/faults.py", *sys.argv[1:]]),
        "tests_passed": code == 0,
        "all_zero": code == 0 and all(r["recorded"] for r in rows.values()) and not any(counts),
        "cases": rows,
        "seconds": round(time.monotonic() - started),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    width = max(map(len, rows))
    print(f"{'case':<{width}}  " + "  ".join(f"{k:>22}" for k in OUTCOMES))
    for case, row in rows.items():
        cells = ("-" if row[k] is None else str(row[k]) for k in OUTCOMES)
        print(
            f"{case:<{width}}  " + "  ".join(f"{c:>22}" for c in cells) + ("" if row["recorded"] else "  (no record)")
        )
    print(f"all zero: {result['all_zero']} (pytest exit {code}); wrote {args.out}")
    if not result["all_zero"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
