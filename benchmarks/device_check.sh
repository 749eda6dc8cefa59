#!/usr/bin/env bash
# One-shot check of mmtx on a machine with one NVIDIA GPU (issue 20), in under 8 minutes.
#
#   benchmarks/device_check.sh            # GPU: venv + CUDA install, device, tests, bf16 runs
#   DRY_RUN=1 benchmarks/device_check.sh  # print the stages' commands, run nothing
#   benchmarks/device_check.sh --cpu      # CPU smoke: existing .venv, tiny benchmark (< 1 min)
#
# Stages, each with its own timeout, all within a total budget (BUDGET_S, default 450 s):
#   venv, install   python -m venv $VENV; pip install -r requirements-gpu.txt pytest pytest-xdist
#   nvidia-smi      the GPU, driver and CUDA version
#   devices         jax.devices(), the backend (must be gpu), a bf16 matmul
#   tests           pytest tests/attention tests/nn tests/train/test_step.py
#   train_bf16      python -m mmtx.main, configs/base.py:tiny in bfloat16, 30 steps
#   bench_clip      benchmarks/train_step.py, configs/bench_clip.py, bf16, batch $BATCH_CLIP
#   bench_base      benchmarks/train_step.py, $BASE_CONFIG, bf16, batch $BATCH_BASE
# A benchmark that runs out of device memory is retried once at half the batch. Where the
# config has `attention.implementation`, the benchmarks also run with it set to cudnn.
#
# Output goes to $OUT if set, else ./device_check_out: device_check.log (everything printed),
# one <stage>.log per stage, bench_*.json (the benchmark's result line) and summary.txt.
#
# Environment: PYTHON (python3.12, else python3), VENV (.venv-gpu; --cpu: .venv), BUDGET_S,
# BATCH_CLIP (4096), BATCH_BASE (256), BASE_CONFIG (configs/base.py:base), PEAK_TFLOPS (the
# GPU's dense bf16 peak for the nominal MFU; known GPUs are looked up from nvidia-smi).
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
      sed -n '2,25p' "${BASH_SOURCE[0]}"
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
BUDGET_S=${BUDGET_S:-450}
BATCH_CLIP=${BATCH_CLIP:-4096}
BATCH_BASE=${BATCH_BASE:-256}
BASE_CONFIG=${BASE_CONFIG:-configs/base.py:base}
START=$SECONDS
SUMMARY=$OUT_DIR/summary.txt
: >"$SUMMARY"

# stage NAME TIMEOUT_S CMD...: runs CMD with a timeout (capped by what is left of BUDGET_S),
# its output to the screen and to $OUT_DIR/NAME.log; records "NAME rc=.. seconds=.." in
# summary.txt. Returns CMD's status (124/137: timed out; 125: skipped, no time left).
stage() {
  local name=$1 limit=$2
  shift 2
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
    echo "$name skipped: the ${BUDGET_S}s budget is spent"
    echo "$name skipped" >>"$SUMMARY"
    return 125
  fi
  local begin=$SECONDS rc
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
  rc=${PIPESTATUS[0]}
  ((rc == 124 || rc == 137)) && echo "$name TIMED OUT after ${limit}s"
  echo "$name rc=$rc seconds=$((SECONDS - begin))" >>"$SUMMARY"
  return "$rc"
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
  bench bench_clip "$BATCH_CLIP" 80 --config=configs/bench_clip.py --config.dtype=bfloat16 \
    --steps=20 --warmup=3 --peak_size=8192 "${CUDNN_ARGS[@]}"
  bench bench_base "$BATCH_BASE" 100 --config="$BASE_CONFIG" --config.dtype=bfloat16 \
    --steps=10 --warmup=2 --peak_size=8192 --no_unrolled_count "${CUDNN_ARGS[@]}"
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
fi
if grep -q "rc=[1-9]\|skipped" "$SUMMARY"; then
  echo "device check: some stages failed (see $OUT_DIR)"
  exit 1
fi
echo "device check: all stages passed"
