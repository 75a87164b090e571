#!/usr/bin/env bash
# One GPU session's speed measurements, about 7 minutes on one GPU:
#   a) whole train steps (ResNet-18 batch 256, the small transformer LM),
#      sgdm, pnm, pnm_static, adam, amsgrad, adapnm side by side;
#   b) the optimizer step alone on one 2^28 float32 leaf, pnm_static
#      (pnm_optax.pnm_train_step) included;
#   c) the library tests (tests/library) on the GPU;
#   d) the default speed report under its time budget (whatever time is left).
# Run from the repository root: OUT=folder bash benchmarks/speed/gpu_check.sh
# Each part has its own time limit and its exit status is recorded; a failed
# part does not stop the others. Writes into $OUT (default results/gpu_check):
# gpu_check.json (what ran, exit statuses, seconds, environment), the parts'
# JSON results and logs (at most 8 files).
# GPU_CHECK_TINY=1 runs the same parts at toy sizes (a check of this script on
# a CPU); PYTHON picks the interpreter (default python3); GPU_CHECK_TOTAL_S the
# time for all parts (default 420 s: a part does not start with under 30 s left).
set -u
OUT="${OUT:-results/gpu_check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
TOTAL_S="${GPU_CHECK_TOTAL_S:-420}"  # the whole script's time
STATUS="$OUT/.status"
: >"$STATUS"

if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
  WHOLE=(--size tiny --models transformer --repeats 2 --budget 30)
  STEP=(--sizes 2^12 --trees none --repeats 2 --compile-repeats 1
    --target-time 0.01)
  TESTS=(tests/library/test_train_step.py)
  DEFAULT_REPORT=(--quick --budget 20)
  LIMITS=(120 60 120 60)
else
  WHOLE=(--size full --repeats 5 --steps 20 --budget 80)
  STEP=(--sizes 2^28 --trees none --repeats 5 --compile-repeats 1
    --target-time 0.1)
  TESTS=(tests/library -n 8)
  DEFAULT_REPORT=(--budget 150)
  LIMITS=(200 100 150 180)
fi

# part NAME LIMIT_S COMMAND...: runs COMMAND with output to $OUT/NAME.log
part() {
  local name=$1 limit=$2
  shift 2
  local left=$((TOTAL_S - ($(date +%s) - START)))
  if [ "$left" -lt 30 ]; then
    echo "$name -1 0 not run: under 30 s left of the ${TOTAL_S} s" >>"$STATUS"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0 rc
  t0=$(date +%s)
  echo "== $name (limit ${limit} s): $*"
  timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "$name $rc $(($(date +%s) - t0))" >>"$STATUS"
  echo "== $name: exit $rc after $(($(date +%s) - t0)) s"
  tail -n 25 "$OUT/$name.log"
}

part whole_step "${LIMITS[0]}" "$PY" -m benchmarks.speed.whole_step \
  "${WHOLE[@]}" --no-progress --out "$OUT"
part step_time "${LIMITS[1]}" "$PY" -m benchmarks.speed "${STEP[@]}" \
  --optimizers sgdm,pnm,pnm_static,adam,amsgrad,adapnm --no-torch \
  --no-progress --no-plot --out "$OUT"
part library_tests "${LIMITS[2]}" env XLA_PYTHON_CLIENT_PREALLOCATE=false \
  "$PY" -m pytest "${TESTS[@]}" -q -p no:cacheprovider
part default_report "${LIMITS[3]}" "$PY" -m benchmarks.speed \
  "${DEFAULT_REPORT[@]}" --no-progress --no-plot --out "$OUT/default"

"$PY" -m benchmarks.speed.gpu_summary "$OUT" "$STATUS"
rm -f "$STATUS"
