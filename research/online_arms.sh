#!/usr/bin/env bash
# Issue #28's online experiment in session-sized pieces: one `bench/online.py` invocation per arm run (about an hour
# of wall time each at --time-scale 2), each writing its own JSON under research/online/; a run whose JSON exists is
# skipped, so after a stop the same command goes on where it was. The last step merges every run into
# bench/results/online.json (re-scoring nothing).
#
#   bash research/online_arms.sh
#
# V1 is version 1's checkpoint, sampled with 4 flow steps (bench.online.sampled_with); by default the one committed
# in research/online/v1-10k-flow4 (bench.online.version_one(..., 300, 10000), scored in docs/research.md), so a
# fresh machine does not pre-train it again. Its 300 demos per pair are collected (seed 0, deterministic) when
# missing. Run it alone on the machine: the robots are real-time and Ray starts them at niceness 15, so any other
# job starves them. Frozen arms run no learner, so they run at time scale 1 (bench/online.py's merge accepts that:
# their episodes do not depend on it) and take half the wall time.
#
# A second series from another version 1 and learner goes to its own folder, e.g. the 20k-step version 1 (committed in
# research/online/v1-20k-flow4) with the image encoder frozen (research/learner_probes.sh's finding):
#
#   V1=research/online/v1-20k-flow4 OUT=research/online-v1-20k FREEZE=encoder bash research/online_arms.sh
#
# The `raised-bench` series (pick and place on a bench 6 cm above the demonstrations' table; 4 pairs, so 75 held-out
# episodes each make the 300), with the robots on the wall clock and the operator driving whole episodes of the tasks
# a robot keeps failing (research/online-raised-bench-struggling; the stall,regress and stall,deviate runs are in
# research/online-raised-bench):
#
#   V1=research/online/v1-20k-flow4 OUT=research/online-raised-bench-struggling FREEZE=encoder SCENARIO=raised-bench \
#     TIME_SCALE=1 FINAL=75 RULES=stall,struggling LR=3e-4 bash research/online_arms.sh
#
# and without version 1's `nominal` demonstrations in the learner's replay (research/fleet_replay's no-demos finding):
#
#   V1=research/online/v1-20k-flow4 OUT=research/online-raised-bench-no-demos FREEZE=encoder SCENARIO=raised-bench \
#     TIME_SCALE=1 FINAL=75 RULES=stall,struggling LR=3e-4 LEARNER_DEMOS=0 bash research/online_arms.sh
#
# The same in bf16 (OUT=research/online-raised-bench-bf16 PRECISION=bf16), and with the gate's margin allowed to
# shrink to 0.5 standard errors near the top (OUT=research/online-raised-bench-se PRECISION=bf16 GATE_SE=0.5), and
# with the operator driving whole episodes only while a robot's own success is below 0.7
# (OUT=research/online-raised-bench-drive70 PRECISION=bf16 DRIVE_BELOW=0.7; rewards_only-1.json may be copied from the
# bf16 series: an operator who only stops stalled robots never drives). From the version 1 shipped today (paraphrases
# and the colour lexicon, research/language/v1-colour), its full runs (research/online-raised-bench-colour):
#
#   V1=research/language/v1-colour OUT=research/online-raised-bench-colour FREEZE=encoder SCENARIO=raised-bench \
#     TIME_SCALE=1 FINAL=75 RULES=stall,struggling LR=3e-4 LEARNER_DEMOS=0 PRECISION=bf16 DRIVE_BELOW=0.7 \
#     STOP_AFTER=full-2 bash research/online_arms.sh
#
# (full-2 ran on its own with the same options, `--arms full --repeats full:1 --seed 13 --baseline-seconds 0`).
set -euo pipefail
cd "$(dirname "$0")/.."
V1=${V1:-research/online/v1-10k-flow4}
DEMOS=${DEMOS:-$HOME/.cache/fleet/bench-online/cameras-2/demos}  # version 1's demonstrations (the learner's too)
OUT=${OUT:-research/online}
FREEZE=${FREEZE:-perception}  # what the learner holds fixed (fleet learner run --freeze)
LR=${LR:-1e-3}
SCENARIO=${SCENARIO:-high-start}
TIME_SCALE=${TIME_SCALE:-2}  # wall seconds per fleet second for the arms with a learner
FINAL=${FINAL:-50}  # held-out episodes per task x embodiment for each final version
RULES=${RULES:-stall,regress}  # what makes the operator take over (the high-start series ran stall,regress)
LEARNER_DEMOS=${LEARNER_DEMOS:-300}  # version 1's demonstrations the learner keeps in replay (0: none)
PRECISION=${PRECISION:-fp32}  # the learner's update matmuls (fleet learner run --precision)
DRIVE_BELOW=${DRIVE_BELOW:-1.0}  # "struggling" drives no whole episode once a robot's own success reaches this
GATE_SE=${GATE_SE:-}  # the gate's margin in standard errors (fleet learner run --gate-margin-se; empty: the preset's)
mkdir -p "$OUT"
[ -d "$DEMOS" ] || .venv/bin/python -c "
from bench.online import CACHE, cached_demos
from fleet.defaults import DEFAULT_EMBODIMENTS, DEFAULT_TASKS
cached_demos(CACHE, DEFAULT_TASKS, DEFAULT_EMBODIMENTS, 300)"
COMMON=(--scenario "$SCENARIO" --robots 4 --minutes 30 --time-scale "$TIME_SCALE" --v1 "$V1" --v1-demos "$DEMOS"
        --learner-demos "$LEARNER_DEMOS" --freeze "$FREEZE" --learner-lr "$LR" --final-episodes "$FINAL" --takeover-rules "$RULES"
        --learner-precision "$PRECISION" --drive-below "$DRIVE_BELOW" ${GATE_SE:+--gate-margin-se "$GATE_SE"})

STOP_AFTER=${STOP_AFTER:-}  # a run's name: stop once it is done (to free the machine between runs)

run() {  # run NAME bench-arguments...
  local name=$1; shift
  if [ -f "$OUT/$name.json" ]; then echo "$name: done"; else
    echo "$name: running ($(date +%H:%M))"
    .venv/bin/python -m bench.online "${COMMON[@]}" "$@" --out "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  fi
  if [ "$name" = "$STOP_AFTER" ]; then echo "stopping after $name"; exit 0; fi
}

run full-1 --arms full --repeats full:1 --seed 11 --baseline-seconds 0
run frozen-1 --arms frozen --repeats frozen:1 --seed 12 --baseline-seconds 0 --time-scale 1
run full-2 --arms full --repeats full:1 --seed 13 --baseline-seconds 0
run frozen-2 --arms frozen --repeats frozen:1 --seed 14 --baseline-seconds 0 --time-scale 1
run corrections_only-1 --arms corrections_only --seed 15 --baseline-seconds 0
run rewards_only-1 --arms rewards_only --seed 16 --baseline-seconds 0
# offline_demos spends the operator's steps of the full runs (their mean) on demonstrations before its run
steps=$(.venv/bin/python -c "
import json, statistics
runs = [r for n in ('full-1', 'full-2') for r in json.load(open('$OUT/' + n + '.json'))['runs'] if r['arm'] == 'full']
print(round(statistics.mean(r['supervisor_steps'] for r in runs)))")
run offline_demos-1 --arms offline_demos --offline-steps "$steps" --seed 17 --baseline-seconds 0
# the merge measures the learner loop before the evaluator (the baseline) beside as many real-time robots
.venv/bin/python -m bench.online "${COMMON[@]}" --arms "" --baseline-seconds 300 --runs-from "$OUT"/*.json
