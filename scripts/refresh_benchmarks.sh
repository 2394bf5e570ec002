#!/usr/bin/env bash
# Rebuild every benchmark number in docs/ from the shipped embedded model, on a 2-core CPU
# (about 90 min: the medium run 51, best-of-N beside the LoRA comparison ~27, the quick run ~8).
#   bash scripts/refresh_benchmarks.sh [RUN_DIR]     (default runs/bench-medium; resumable)
# One process per core with OMP_NUM_THREADS=1: two default-threaded torch jobs side by side
# oversubscribe the cores and run many times slower (docs/BENCHMARKS.md).
# Afterwards, rewrite the prose in docs/BENCHMARKS.md and README.md from the new files.
set -euo pipefail
R=${1:-runs/bench-medium}
export OMP_NUM_THREADS=1
medium=(--preset medium --out "$R" --work "$R/work" --device cpu)
unitune bench edits "${medium[@]}" --shard 0/2 &
first=$!
unitune bench edits "${medium[@]}" --shard 1/2
wait "$first"
unitune bench edits "${medium[@]}" | tee "$R/summary.txt"  # every scene reused: the tables
mkdir -p docs/bench-medium
cp "$R"/{configs.csv,results.csv,frontier.png,sine_curves.png,figure10.png} docs/bench-medium/
python -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["summary"], open(sys.argv[2], "w"), indent=1)' \
    "$R/results.json" docs/bench-medium/summary.json
python scripts/bench_claims.py "$R/results.json" --out docs/bench_claims.json
# what the edit keeps: every config against the default, frontiers against SDEdit's
python scripts/bench_keep.py "$R/results.json" --out docs/keep_medium.json
# the shipped --fidelity map comes from the full run (scripts/bench_full.sh); this is the medium one
python scripts/fidelity_map.py "$R/results.json" --out docs/fidelity_map_medium_v5.json
python scripts/bench_best_of.py "$R" --methods sdedit,unitune,unitune+pg,sine --cfg 7.5 \
    --out docs/best_of.json &
best=$!
unitune bench edits --preset tune-compare --tune-method lora --out runs/bench-lora \
    --device cpu
python scripts/bench_tune_compare.py "$R/results.json" runs/bench-lora/results.json \
    --out docs/tune_compare.json
wait "$best"
mkdir -p runs/bench-quick
unitune bench edits --quick --out runs/bench-quick --device cpu | tee runs/bench-quick/summary.txt
