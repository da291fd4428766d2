#!/usr/bin/env bash
# `make demo`: the whole loop on this machine (stack, version 1, learner, dashboard, simulated fleet).
# Extra arguments go to `fleet demo` (e.g. `make demo ARGS="--minutes 5 --robots 2"`).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=true RAY_USAGE_STATS_ENABLED=0
.venv/bin/fleet demo "$@"
