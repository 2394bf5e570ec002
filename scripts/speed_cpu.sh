#!/usr/bin/env bash
# The CPU measurements of docs/SPEED.md, one `unitune bench speed` run each (docs/speed/*.json),
# then the tables (scripts/speed_tables.py). Resumable: a run whose JSON exists is skipped.
# About 90 minutes on 2 cores, most of it SD 1.5's architecture at 256 px. The SD 1.5 runs share
# one random-weights model if $work/models/random-sd15 exists (link it into each run's work dir).
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/speed
work="${UNITUNE_SPEED_WORK:-/tmp/unitune-speed}"  # models and tune folders (GBs): not in the repo
mkdir -p "$out" "$work"
run() {  # NAME ARGS...: one bench run into $out/NAME.json
    local name="$1"; shift
    [ -s "$out/$name.json" ] && return 0
    unitune bench speed "$@" --out "$work/$name.json" --quiet
    cp "$work/$name.json" "$out/$name.json"
}
# what a user meets first: `unitune demo`, in a fresh process
[ -s "$out/demo.json" ] || python scripts/demo_time.py --runs 2 --out "$out/demo.json"
# the embedded model: the defaults, then each option on
run world --tune-steps 10 --repeats 5
run world-threads1 --threads 1 --tune-steps 10 --repeats 5
run world-gc --cases tune --gradient-checkpointing on --tune-steps 10 --repeats 5
run world-channels-last --channels-last --tune-steps 10 --repeats 5
run world-compile --compile --cases edit,tune --tune-steps 10 --repeats 3
# SD 1.5's architecture with random weights at 256 px (10-step edits: 50 would take ~10 min each)
run sd15-256-edit --random-weights sd15 --resolution 256 --cases edit,edit-t0 --steps 10 --batch 1 --repeats 2
run sd15-256-tune --random-weights sd15 --resolution 256 --cases tune --repeats 2 --tune-steps 2
run sd15-256-gc --random-weights sd15 --resolution 256 --cases tune --gradient-checkpointing on --repeats 1 --tune-steps 2
python scripts/speed_tables.py "$out"/*.json
