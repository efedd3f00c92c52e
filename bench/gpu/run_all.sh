#!/usr/bin/env bash
# Issue 11's GPU checks and figures in one call of the device tool (its limit: 10 min):
#   run: bash bench/gpu/run_all.sh        (results in $OUT; copy them to bench/results/)
# Each step has its own time limit, so one that hangs still leaves the other's results.
# PYTHON, DEVICE, DTYPE, CHECK_ARGS and FIGURES_ARGS override the defaults (the CPU smoke test
# in tests/serving/test_device_check.py runs it tiny).
set -u
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"  # after carried wheels, if any
OUT=${OUT:-.}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
CHECK_ARGS=${CHECK_ARGS:---hidden 2048 --layers 22 --heads 32 --adapters 64 --slots 32 \
--batch 32 --prompt 64 --new-tokens 32 --repeats 20}
FIGURES_ARGS=${FIGURES_ARGS:-}
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1
fi
# shellcheck disable=SC2086  # the argument lists are meant to split
timeout 170 "$PYTHON" -m bench.gpu.device_check --device "$DEVICE" --dtype "$DTYPE" $CHECK_ARGS \
    > "$OUT/device_check.log" 2>&1
echo "device_check: exit $?"
# shellcheck disable=SC2086
timeout 400 "$PYTHON" -m bench.gpu.serving_figures --device "$DEVICE" --dtype "$DTYPE" $FIGURES_ARGS \
    > "$OUT/serving_figures.log" 2>&1
echo "serving_figures: exit $?"
tail -n 5 "$OUT/serving_figures.log"
