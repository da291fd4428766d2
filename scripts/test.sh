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
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing the run (exit 5 means nothing was tested)" >&2
  exit 1
fi
exit "$rc"
