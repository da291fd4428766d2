#!/usr/bin/env bash
# `make test`: PostgreSQL for the DB tests (when installed), then pytest on the whole suite.
# pytest's exit code 5 (no tests collected) is a failure here: a suite that ran nothing proved nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FLEET_TEST_POSTGRES_URL:-}" ]; then
  FLEET_TEST_POSTGRES_URL="$(bash scripts/postgres.sh)" || { echo "starting PostgreSQL failed" >&2; exit 1; }
  export FLEET_TEST_POSTGRES_URL
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=true
export RAY_USAGE_STATS_ENABLED=0 FLEET_RAY_LOG_TO_DRIVER=0
report="$(mktemp --suffix=.xml)"
.venv/bin/python -m pytest --junitxml="$report" "$@"
rc=$?
# Repeat the counts as the very last line (background output such as Ray's can follow pytest's summary).
.venv/bin/python - "$report" <<'PY' || true
import sys
import xml.etree.ElementTree as ET

suites = ET.parse(sys.argv[1]).getroot().iter("testsuite")
total = failed = skipped = 0
for suite in suites:
    total += int(suite.get("tests", 0))
    failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped += int(suite.get("skipped", 0))
print(f"{total - failed - skipped} passed, {failed} failed, {skipped} skipped")
PY
rm -f "$report"
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing the run (exit 5 means nothing was tested)" >&2
  exit 1
fi
exit "$rc"
