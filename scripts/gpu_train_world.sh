#!/usr/bin/env bash
# Train the embedded world model on a lent GPU machine (the `device` tool), resumably.
# Usage there: bash scripts/gpu_train_world.sh STEPS TIME_LIMIT_S [extra train flags...]
# Next retrain (README, "Why position fails" and "The VAE ceiling"): fresh --work, e.g.
#   12000 560 --x0-cap 50 --layout 0.1 --object-weight 10,
# then python scripts/position_probe.py --model runs/export after each call.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -m unitune.embedded.train --work runs/world --out runs/export --workers 12 \
    --steps "${1:-12000}" --time-limit "${2:-400}" "${@:3}" --quiet 2>&1 | grep -v -i "warn\|dtype" \
    | tee "$OUT/train.log"
cp runs/world/log.jsonl "$OUT/" 2>/dev/null
(cd runs && tar cf - export) | split -b 15M - "$OUT/model.tar.part-"
ls -la "$OUT"
