#!/usr/bin/env bash
# `make demo`: bring up the local stack and show where each service listens.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=true
.venv/bin/fleet up
echo
echo "Kafka:  $(.venv/bin/python -c 'from fleet.settings import Settings; print(Settings().bootstrap_servers)')"
echo "MLflow: $(.venv/bin/python -c 'from fleet.settings import Settings; print(Settings().tracking_uri)')"
echo "Stop everything with: .venv/bin/fleet down"
