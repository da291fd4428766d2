#!/usr/bin/env bash
# Issue #28: which learner gets past the ~0.61 that perception-frozen updates at lr 1e-3 reach on ideal data
# (research/scenario_ceiling/high-start-perception-lr1e-3-9k.json)? Each line is one research/scenario_ceiling.py run
# from the committed version 1 on the same 50 scripted high-start demos per pair and the same 120 held-out episodes,
# 6,000 updates scored every 2,000; a run whose JSON exists is skipped, so after a stop the same command goes on.
# Run it alone on the machine (each run ~25-60 minutes on 2 cores).
#
#   bash research/learner_probes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=research/scenario_ceiling
COMMON=(--v1 research/online/v1-10k-flow4 --scenario high-start --updates 6000 --every 2000 --episodes 20 --demos 50)

probe() {  # probe NAME arguments...
  local name=$1; shift
  if [ -f "$OUT/$name.json" ]; then echo "$name: done"; return; fi
  echo "$name: running ($(date +%H:%M))"
  .venv/bin/python -m research.scenario_ceiling "${COMMON[@]}" "$@" --out "$OUT/$name.json" > "$OUT/$name.log" 2>&1
}

probe high-start-encoder-lr1e-3 --freeze encoder --lr 1e-3        # the trunk trains too (cached image tokens)
# version 1 pre-trained twice as long (0.858 nominal, 0.497 high-start; session 25): is the ceiling version 1's skill?
V1_20K=${V1_20K:-$HOME/.cache/fleet/bench-online/cameras-2/v1-20k/checkpoints/step_00020000}
probe high-start-v1-20k-encoder --v1 "$V1_20K" --freeze encoder --lr 1e-3
probe high-start-v1-20k-encoder-d200 --v1 "$V1_20K" --freeze encoder --lr 1e-3 --demos 200  # and data-bound?
probe high-start-v1-20k-encoder-lr3e-4 --v1 "$V1_20K" --freeze encoder --lr 3e-4  # a lower noise floor?
probe high-start-encoder-d200 --freeze encoder --lr 1e-3 --demos 200  # four times the ideal data: data-bound?
probe high-start-encoder-lr3e-4 --freeze encoder --lr 3e-4        # a lower rate: a lower noise floor?
probe high-start-perception-lr3e-4 --freeze perception --lr 3e-4  # a lower rate: a lower noise floor?
probe high-start-perception-b64 --freeze perception --lr 1e-3 --batch 64
probe high-start-none-lr3e-4 --freeze none --lr 3e-4              # everything trains (the slowest update)
