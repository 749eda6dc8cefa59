#!/usr/bin/env bash
# One-shot check of mmtx on a machine with one NVIDIA GPU (issue 20), in under 11 minutes (8
# without the ahead-of-time predictions, PREDICT=0).
#
#   benchmarks/device_check.sh            # GPU: venv + CUDA install, device, tests, bf16 runs
#   DRY_RUN=1 benchmarks/device_check.sh  # print the stages' commands, run nothing
#   benchmarks/device_check.sh --cpu      # CPU smoke: existing .venv, tiny benchmark (< 1 min)
#
# Stages, each with its own timeout, all within a total budget (BUDGET_S, default 450 s, and
# 2 x PREDICT_S more with the predictions):
#   venv, install   python -m venv $VENV; pip install -r requirements-gpu.txt pytest pytest-xdist
#   nvidia-smi      the GPU, driver and CUDA version
#   devices         jax.devices(), the backend (must be gpu), a bf16 matmul
#   tests           pytest tests/attention tests/nn tests/train/test_step.py
#   train_bf16      python -m mmtx.main, configs/base.py:tiny in bfloat16, 30 steps
#   bench_clip_aot  python -m mmtx.compile: bench_clip's config and batch, compiled ahead of
#                   time for the GPUs found (h100|h200|a100 from nvidia-smi's name : the count)
#   bench_clip      benchmarks/train_step.py, configs/bench_clip.py, bf16, batch $BATCH_CLIP
#   bench_base_aot  python -m mmtx.compile, as bench_clip_aot for bench_base
#   bench_base      benchmarks/train_step.py, $BASE_CONFIG, bf16, batch $BATCH_BASE
# A benchmark that runs out of device memory is retried once at half the batch. Where the
# config has `attention.implementation`, the benchmarks also run with it set to cudnn.
# The *_aot stages predict what the benchmark after them measures: the memory per device and
# the step time the FLOPs take at the GPU's bf16 peak (mmtx.compile's report); the summary
# prints prediction and measurement side by side. A prediction that fails (no spec for the
# GPU, a compile error, its timeout) says why and does not fail the check.
#
# Output goes to $OUT if set, else ./device_check_out: device_check.log (everything printed),
# one <stage>.log per stage, bench_*.json (the benchmark's result line) and summary.txt.
#
# Environment: PYTHON (python3.12, else python3), VENV (.venv-gpu; --cpu: .venv), BUDGET_S,
# BATCH_CLIP (4096), BATCH_BASE (256), BASE_CONFIG (configs/base.py:base), PEAK_TFLOPS (the
# GPU's dense bf16 peak for the nominal MFU; known GPUs are looked up from nvidia-smi),
# PREDICT (1; 0: no *_aot stages), PREDICT_S (90: each *_aot stage's timeout, added twice to
# the default BUDGET_S), AOT_TOPOLOGY (default: from nvidia-smi, e.g. h100:1).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

MODE=gpu
DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --cpu) MODE=cpu ;;
    --dry-run | --dry_run) DRY_RUN=1 ;;
    -h | --help)
      sed -n '2,35p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (see --help)" >&2
      exit 2
      ;;
  esac
done

OUT_DIR=${OUT:-$ROOT/device_check_out}
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/device_check.log") 2>&1

if [[ -z "${PYTHON:-}" ]]; then
  if python3.12 -c "" >/dev/null 2>&1; then PYTHON=python3.12; else PYTHON=python3; fi
fi
if [[ $MODE == cpu ]]; then
  VENV=${VENV:-$ROOT/.venv}
  export JAX_PLATFORMS=cpu
else
  VENV=${VENV:-$ROOT/.venv-gpu}
fi
PY=$VENV/bin/python
PREDICT=${PREDICT:-1}
PREDICT_S=${PREDICT_S:-90}
if [[ $MODE == gpu && $PREDICT == 1 ]]; then
  BUDGET_S=${BUDGET_S:-$((450 + 2 * PREDICT_S))} # the two *_aot stages on top of 450 s
else
  BUDGET_S=${BUDGET_S:-450}
fi
BATCH_CLIP=${BATCH_CLIP:-4096}
BATCH_BASE=${BATCH_BASE:-256}
BASE_CONFIG=${BASE_CONFIG:-configs/base.py:base}
START=$SECONDS
SUMMARY=$OUT_DIR/summary.txt
: >"$SUMMARY"

# stage NAME TIMEOUT_S CMD...: runs CMD with a timeout (capped by what is left of BUDGET_S),
# its output to the screen and to $OUT_DIR/NAME.log; records "NAME rc=.. seconds=.." in
# summary.txt. Returns CMD's status (124/137: timed out; 125: skipped, no time left).
# With SOFT_STAGE=1 it records "NAME exit=.." or "NAME not run", which do not fail the check.
stage() {
  local name=$1 limit=$2 key=rc skipped=skipped
  shift 2
  if [[ ${SOFT_STAGE:-0} == 1 ]]; then
    key=exit
    skipped="not run"
  fi
  local left=$((BUDGET_S - (SECONDS - START)))
  ((limit > left)) && limit=$left
  echo
  echo "=== $name (timeout ${limit}s, $((SECONDS - START))s elapsed)"
  printf '+'
  printf ' %q' "$@"
  echo
  if [[ $DRY_RUN == 1 ]]; then
    echo "$name dry-run" >>"$SUMMARY"
    return 0
  fi
  if ((limit < 5)); then
    echo "$name $skipped: the ${BUDGET_S}s budget is spent"
    echo "$name $skipped" >>"$SUMMARY"
    return 125
  fi
  local begin=$SECONDS rc
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
  rc=${PIPESTATUS[0]}
  ((rc == 124 || rc == 137)) && echo "$name TIMED OUT after ${limit}s"
  echo "$name $key=$rc seconds=$((SECONDS - begin))" >>"$SUMMARY"
  return "$rc"
}

# predict NAME BATCH ARGS...: before benchmark NAME, python -m mmtx.compile of the same config
# and overrides (the --config* ones of ARGS) at train batch BATCH for $AOT_TOPOLOGY, logged as
# NAME_aot. A failure is reported (mmtx.compile's error line, or the timeout) and ignored.
predict() {
  local name=$1 batch=$2
  shift 2
  [[ $MODE == gpu && $PREDICT == 1 ]] || return 0
  if [[ -z $AOT_TOPOLOGY ]]; then
    echo
    echo "=== ${name}_aot: not run ($AOT_WHY)"
    echo "${name}_aot not run: $AOT_WHY" >>"$SUMMARY"
    return 0
  fi
  local args=() arg
  for arg in "$@"; do
    [[ $arg == --config=* || $arg == --config.* ]] && args+=("$arg")
  done
  SOFT_STAGE=1 stage "${name}_aot" "$PREDICT_S" "$PY" -m mmtx.compile "${args[@]}" \
    --config.train.batch_size="$batch" --topology="$AOT_TOPOLOGY"
  local rc=$? why
  if [[ $DRY_RUN != 1 && $rc != 0 ]]; then
    why=$(grep -m 1 '^error:' "$OUT_DIR/${name}_aot.log" 2>/dev/null)
    ((rc == 124 || rc == 137)) && why="timed out after ${PREDICT_S}s"
    ((rc == 125)) && why="no time left in the budget"
    [[ -n $why ]] || why=$(tail -n 1 "$OUT_DIR/${name}_aot.log" 2>/dev/null)
    echo "${name}_aot: the ahead-of-time prediction failed (exit $rc: ${why:-no output});" \
      "the measurement runs anyway"
  fi
  return 0
}

# bench NAME BATCH ARGS...: benchmarks/train_step.py; on out-of-memory, once more at BATCH/2.
bench() {
  local name=$1 batch=$2 limit=$3
  shift 3
  stage "$name" "$limit" "$PY" benchmarks/train_step.py --batch_size="$batch" "$@"
  local rc=$?
  if [[ $DRY_RUN != 1 && $rc != 0 ]] && grep -q "RESOURCE_EXHAUSTED\|Out of memory" \
    "$OUT_DIR/$name.log" 2>/dev/null && ((batch > 1)); then
    echo "$name: out of memory at batch $batch; once more at $((batch / 2))"
    stage "${name}_half" "$limit" "$PY" benchmarks/train_step.py --batch_size=$((batch / 2)) "$@"
    rc=$?
    name=${name}_half
  fi
  if [[ $DRY_RUN != 1 && -s "$OUT_DIR/$name.log" ]]; then
    grep '^{' "$OUT_DIR/$name.log" | tail -n 1 >"$OUT_DIR/${name%_half}.json"
  fi
  return "$rc"
}

echo "mmtx device check: mode=$MODE dry_run=$DRY_RUN out=$OUT_DIR venv=$VENV budget=${BUDGET_S}s"
echo "repo: $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
date -u

# --- install --------------------------------------------------------------------------------
if [[ $MODE == gpu ]]; then
  if [[ ! -x $PY || $DRY_RUN == 1 ]]; then
    stage venv 60 "$PYTHON" -m venv "$VENV" || exit 1
  fi
  stage install 200 "$PY" -m pip install --quiet --disable-pip-version-check \
    -r requirements-gpu.txt pytest pytest-xdist || exit 1
  stage nvidia-smi 20 nvidia-smi
elif [[ ! -x $PY && $DRY_RUN != 1 ]]; then
  echo "--cpu needs an installed $VENV (make venv)" >&2
  exit 1
fi

# The ahead-of-time predictions' topology: mmtx.compile's spec (mmtx/gpu_specs/) of the GPU
# nvidia-smi names, and as many GPUs as the benchmarks see.
AOT_TOPOLOGY=${AOT_TOPOLOGY:-}
AOT_WHY=""
if [[ $MODE == gpu && $PREDICT == 1 && -z $AOT_TOPOLOGY ]]; then
  GPU_NAMES=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)
  GPU_COUNT=$(printf '%s\n' "$GPU_NAMES" | grep -c .)
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    GPU_COUNT=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
  fi
  case "$(printf '%s\n' "$GPU_NAMES" | head -n 1)" in
    *H200*) AOT_KIND=h200 ;;
    *H100*) AOT_KIND=h100 ;; # the spec is the SXM part's (a PCIe or NVL H100 differs)
    *A100*80GB*) AOT_KIND=a100 ;;
    *) AOT_KIND="" ;;
  esac
  if [[ -n $AOT_KIND ]] && ((GPU_COUNT > 0)); then
    AOT_TOPOLOGY=$AOT_KIND:$GPU_COUNT
  elif [[ $DRY_RUN == 1 ]]; then
    AOT_TOPOLOGY="KIND:GPUS" # shown only: nvidia-smi names no known GPU here
  else
    AOT_WHY="no mmtx/gpu_specs file for the GPU '$(printf '%s\n' "$GPU_NAMES" | head -n 1)'"
  fi
fi
if [[ $MODE == gpu && $PREDICT == 1 ]]; then
  echo "ahead-of-time predictions: ${AOT_TOPOLOGY:-none ($AOT_WHY)}"
fi

export XLA_PYTHON_CLIENT_PREALLOCATE=false # several processes may share the GPU (tests -n)
stage devices 60 "$PY" -c "
import jax, jax.numpy as jnp
print('jax', jax.__version__, 'backend', jax.default_backend())
for d in jax.devices():
    print(d, getattr(d, 'device_kind', ''))
x = jnp.ones((4096, 4096), jnp.bfloat16)
print('bf16 matmul:', (x @ x).block_until_ready().dtype)
assert '$MODE' == 'cpu' or jax.default_backend() == 'gpu', 'JAX does not see the GPU'
" || exit 1

# cuDNN attention, where the config has the field (another change adds it).
CUDNN_ARGS=()
if [[ $MODE == gpu ]]; then
  PROBE_PY=$PY
  [[ -x $PROBE_PY ]] || PROBE_PY=$ROOT/.venv/bin/python
  [[ -x $PROBE_PY ]] || PROBE_PY=$PYTHON
  if "$PROBE_PY" -c "
from mmtx import config
assert 'implementation' in config.default_config().attention
" >/dev/null 2>&1; then
    CUDNN_ARGS=(--config.attention.implementation=cudnn)
    echo "config.attention.implementation exists: the benchmarks use cudnn attention"
  else
    echo "config.attention.implementation not in this checkout: the benchmarks use XLA attention"
  fi
fi

# --- tests and a tiny bf16 training run ------------------------------------------------------
if [[ $MODE == gpu ]]; then
  stage tests 90 "$PY" -m pytest -q -p no:cacheprovider -n 4 --durations=5 \
    tests/attention tests/nn tests/train/test_step.py
  stage train_bf16 70 "$PY" -m mmtx.main --config=configs/base.py:tiny \
    --config.dtype=bfloat16 --config.train.steps=30 --config.train.eval_every=30 \
    --config.train.checkpoint_every=30 --workdir="$OUT_DIR/train_bf16"
fi

# --- benchmarks: steps/s and MFU ------------------------------------------------------------
unset XLA_PYTHON_CLIENT_PREALLOCATE
if [[ $MODE == gpu ]]; then
  CLIP_ARGS=(--config=configs/bench_clip.py --config.dtype=bfloat16 "${CUDNN_ARGS[@]}")
  BASE_ARGS=(--config="$BASE_CONFIG" --config.dtype=bfloat16 "${CUDNN_ARGS[@]}")
  predict bench_clip "$BATCH_CLIP" "${CLIP_ARGS[@]}"
  bench bench_clip "$BATCH_CLIP" 80 "${CLIP_ARGS[@]}" --steps=20 --warmup=3 --peak_size=8192
  predict bench_base "$BATCH_BASE" "${BASE_ARGS[@]}"
  bench bench_base "$BATCH_BASE" 100 "${BASE_ARGS[@]}" --steps=10 --warmup=2 --peak_size=8192 \
    --no_unrolled_count
else
  TINY='{"dtype": "bfloat16", "model": {"modalities": ["text", "image"], "embed_dim": 32,
    "num_classes": 0, "scan_layers": false,
    "text": {"max_length": 16, "width": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64},
    "image": {"image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "num_heads": 2,
    "mlp_dim": 64}}, "fusion": {"type": "gated", "width": 32, "depth": 1, "num_heads": 2,
    "mlp_dim": 64}, "loss": {"classification_weight": 0.0}}'
  [[ $DRY_RUN == 1 ]] || printf '%s\n' "$TINY" >"$OUT_DIR/tiny_config.json"
  bench bench_tiny 8 60 --config="$OUT_DIR/tiny_config.json" --steps=2 --warmup=1 \
    --peak_size=256 --peak_repeats=2 --no_unrolled_count
fi

# --- summary -------------------------------------------------------------------------------
echo
echo "=== summary ($((SECONDS - START))s)"
cat "$SUMMARY"
if [[ $DRY_RUN != 1 ]]; then
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  GPU_NAME=$GPU_NAME PEAK_TFLOPS=${PEAK_TFLOPS:-} "$PY" - "$OUT_DIR"/bench_*.json <<'EOF'
import json, os, sys
# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets (SXM parts).
NOMINAL = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
name = os.environ.get("GPU_NAME", "")
peak = os.environ.get("PEAK_TFLOPS") or next((v for k, v in NOMINAL.items() if k in name), None)
print(f"{'benchmark':<12} {'batch':>6} {'steps/s':>8} {'ex/s':>10} {'TFLOP/s':>8} "
      f"{'MFU (f32 matmul peak)':>22} {'MFU (nominal bf16)':>19}")
for path in sys.argv[1:]:
    try:
        r = json.loads(open(path).read())
    except (OSError, ValueError):
        continue
    nominal = f"{r['achieved_gflops'] / 1e3 / float(peak):.1%}" if peak else "n/a"
    print(f"{os.path.basename(path)[:-5]:<12} {r.get('batch_size', ''):>6} "
          f"{1e3 / r['step_ms']:8.2f} {r['examples_per_sec']:10.1f} "
          f"{r['achieved_gflops'] / 1e3:8.2f} {r['mfu']:22.1%} {nominal:>19}")
print(f"GPU: {name or 'none'}; nominal bf16 peak: {peak or 'unknown'} TFLOP/s")
EOF
  if [[ $MODE == gpu && $PREDICT == 1 ]]; then
    echo
    echo "=== predicted (mmtx.compile ${AOT_TOPOLOGY:-not run}) vs measured (train_step.py)"
    "$PY" - "$OUT_DIR" bench_clip bench_base <<'EOF'
import json, os, re, sys
# mmtx.compile's train-step lines: "train step (global batch B, ...", "  total X (N B) of H
# HBM (P%): fits", "  flops: ...; T ms at the P TFLOP/s ..." (T: the step at 100% of the peak).
TOTAL = re.compile(
    r"  total ([^(]+) \([\d,]+ B\)(?: of ([^(]+) HBM \(([\d.]+)%\): ([A-Za-z ]+))?"
)
AT_PEAK = re.compile(r"([\d.e+-]+) ms at the ([\d.]+) TFLOP/s")
out = sys.argv[1]
for name in sys.argv[2:]:
    predicted_batch = predicted_ms = None
    try:
        text = open(os.path.join(out, f"{name}_aot.log")).read()
    except OSError:
        text = None
        print(f"{name}: predicted: not run")
    if text is not None and "train step (" not in text:
        error = re.search(r"^error: (.*)$", text, re.M)
        print(f"{name}: predicted: failed ({error[1] if error else f'see {name}_aot.log'})")
    elif text is not None:
        train = text.split("train step (", 1)[1].split("eval step (", 1)[0]
        batch = re.match(r"global batch (\d+)", train)
        total, at_peak = TOTAL.search(train), AT_PEAK.search(train)
        memory = "memory unknown"
        if total:
            memory = f"{total[1].strip()} per device"
            if total[2]:
                memory += f" of {total[2].strip()} HBM ({total[3]}%: {total[4].strip()})"
        step = "no FLOPs-implied step time"
        if at_peak:
            predicted_ms = float(at_peak[1])
            step = f"{predicted_ms:.4g} ms/step at the {at_peak[2]} TFLOP/s bf16 peak"
        predicted_batch = int(batch[1]) if batch else None
        print(f"{name}: predicted, batch {predicted_batch}: {memory}; {step}")
    try:
        result = json.loads(open(os.path.join(out, f"{name}.json")).read())
    except (OSError, ValueError):
        print(f"{name}: measured: no result")
        continue
    batch = result.get("batch_size")
    line = f"{name}: measured,  batch {batch}: {result['step_ms']:.4g} ms/step"
    if predicted_ms and batch == predicted_batch:
        line += f"; the predicted 100%-peak step is {predicted_ms / result['step_ms']:.1%} of it"
    elif predicted_batch and batch != predicted_batch:
        line += " (not the predicted batch: the first ran out of memory)"
    print(line)
EOF
  fi
fi
if grep -q "rc=[1-9]\|skipped" "$SUMMARY"; then
  echo "device check: some stages failed (see $OUT_DIR)"
  exit 1
fi
echo "device check: all stages passed"
