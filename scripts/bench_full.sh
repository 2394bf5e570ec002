#!/usr/bin/env bash
# The full-size benchmark (--preset full: 40 scenes) on a CPU, split over as many runs as it
# takes (17.8 core-hours on v5, docs/BENCHMARKS.md). Rerun the same command to go on:
#   bash scripts/bench_full.sh [RUN_DIR]      (default runs/bench-full)
# SHARDS=N processes (default: one per core); DEVICE=cuda on a GPU machine (default cpu).
# 1. restores the scenes already finished (docs/bench-full/scene-results/*.json.gz) into
#    RUN_DIR/work;
# 2. runs one shard per core (OMP_NUM_THREADS=1) over the scenes left, storing every finished
#    scene back into docs/bench-full/scene-results every 5 minutes: commit that folder before the
#    machine goes away, and a run cut short loses only the scenes in flight;
# 3. once every scene is there: the tables and plots into docs/bench-full/, the four claims
#    into docs/bench_claims_full.json and the --fidelity map into src/unitune/assets/.
set -euo pipefail
R=${1:-runs/bench-full}
S=docs/bench-full/scene-results
N=${SHARDS:-$(nproc)}
D=${DEVICE:-cpu}
export OMP_NUM_THREADS=1
full=(--preset full --out "$R" --work "$R/work" --device "$D" --quiet)
mkdir -p "$R/work" "$S"
python -m unitune.bench.store restore "$S" "$R/work"
(while sleep 300; do python -m unitune.bench.store store "$R/work" "$S" >/dev/null; done) &
saver=$!
trap 'kill "$saver" 2>/dev/null || true' EXIT
pids=()
for ((k = 0; k < N; k++)); do
    unitune bench edits "${full[@]}" --shard "$k/$N" >"$R/shard$k.log" 2>&1 &
    pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
python -m unitune.bench.store store "$R/work" "$S"
if [ "$failed" != 0 ]; then
    echo "a shard failed: see $R/shard*.log (finished scenes are stored)" >&2
    exit 1
fi
left=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["summary"]["scenes_left"])' "$R/results.json")
if [ "$left" != 0 ]; then
    echo "$left scenes left: rerun this script"
    exit 0
fi
unitune bench edits "${full[@]}" | tee "$R/summary.txt"  # every scene reused: the tables
cp "$R"/{configs.csv,frontier.png,sine_curves.png} docs/bench-full/
# figure10 needs samples on disk, which only the scenes sampled on this machine have
if [ -f "$R/figure10.png" ]; then cp "$R/figure10.png" docs/bench-full/; else
    echo "no figure10.png: none of the scenes run on this machine kept its samples" >&2; fi
python -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["summary"], open(sys.argv[2], "w"), indent=1)' \
    "$R/results.json" docs/bench-full/summary.json
python scripts/bench_claims.py "$R/results.json" --out docs/bench_claims_full.json
python scripts/fidelity_map.py "$R/results.json" --out src/unitune/assets/fidelity_map.json
