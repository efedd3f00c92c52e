#!/usr/bin/env bash
# Issue 11's GPU checks and figures in one call of the device tool (its limit: 10 min):
#   run: bash bench/gpu/run_all.sh        (results in $OUT; copy them to bench/results/)
# Each step has its own time limit, so one that hangs still leaves the other's results.
set -u
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"  # after carried wheels, if any
OUT=${OUT:-.}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1
timeout 170 python -m bench.gpu.device_check --device cuda --dtype bfloat16 \
    --hidden 2048 --layers 22 --heads 32 --adapters 64 --slots 32 --batch 32 \
    --prompt 64 --new-tokens 32 --repeats 20 > "$OUT/device_check.log" 2>&1
echo "device_check: exit $?"
timeout 400 python -m bench.gpu.serving_figures --device cuda --dtype bfloat16 \
    > "$OUT/serving_figures.log" 2>&1
echo "serving_figures: exit $?"
tail -n 5 "$OUT/serving_figures.log"
