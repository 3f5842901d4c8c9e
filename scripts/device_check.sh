#!/usr/bin/env bash
# Everything the kernels need checked on a GPU, in one call of the device tool:
#   1. the GPU tests (pytest -m gpu: tests/gpu, the DTensor tests over NCCL, and the CPU tests
#      that take the `device` fixture, on CUDA)
#   2. compute-sanitizer memcheck on one pass of each kernel path
#   3. the launch-table sweep, when SWEEP=1 (it rewrites the table this run then uses; it compiles its
#      candidates first, in parallel processes: SWEEP_ARGS="--workers N", 0 for one at a time)
#   4. host time per call of small launches: layer by layer, both launch paths
#      (scripts/host_overhead.py), and every op against its peers (layernorm bench --host-time-only;
#      HOST_ARGS passed through, e.g. "--impl torch --impl layernorm" to skip torch.compile's compiles)
#   5. layernorm bench (BENCH_OPS, default "layer_norm"; BENCH_ARGS passed through), then the
#      project's bar judged from its results and the host-time results (scripts/bench_bar.py)
#   6. experiments with --device cuda, when EXPERIMENTS names them (quick size; EXPERIMENT_SIZE)
#   7. a training step of a whole model, when MODEL_STEP names them (gpt2, encoder, llama); PROFILE=1 traces it
#   8. layernorm tour on the GPU (its GPU branch; smoke-size experiments)
# STEPS picks the steps and their order (default "tests memcheck sweep host bench experiments models tour");
# with little device time, the measurement that decides comes first, e.g.
#   STEPS="host models bench tests" MODEL_STEP=gpt2 bash scripts/device_check.sh
# PRESET fills in what is not set, for a short lease (each meant to fit one 10-minute call):
#   PRESET=launch   host time per call, the whole models' training steps (profiled), then the bench at
#                   the small-M and short-row shapes (bf16, ours against torch and Liger, with graphs)
#   PRESET=kernels  the sweep (150 s; it checks each candidate's results before timing it) of the widths
#                   whose designs were never measured (16384, 65536; 768 and 1536 unpadded; SWEEP_ARGS=""
#                   sweeps every width), then the GPU tests and memcheck with the table it wrote
#   PRESET=bench    the bench at the standard bf16 shapes, every peer, with graphs
# Output goes under $OUT (the device tool's folder; runs/device elsewhere); with the device tool, set
# BUNDLE=1 (see below). Each step runs even
# when an earlier one failed; a summary is printed last and the exit status is 1 if any failed.
#
#   run: bash scripts/device_check.sh            (carry .whl for liger-kernel, if wanted)
#   e.g. SWEEP=1 BENCH_OPS="layer_norm rms_norm" bash scripts/device_check.sh
# A call of the device tool is limited to 10 minutes; to split the work over two calls,
# name the steps in STEPS (or: SKIP_TESTS=1 and SKIP_MEMCHECK=1 leave steps 1 and 2 out, SKIP_HOST=1 step 4,
# BENCH_OPS="" step 5).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PRESET:-}" in
  "") ;;
  launch)
    : "${STEPS:=host models bench}" "${MODEL_STEP:=gpt2 encoder llama}" "${PROFILE:=1}" "${BENCH_OPS:=layer_norm}"
    : "${HOST_ARGS:=--impl torch --impl layernorm --impl liger}"
    : "${BENCH_ARGS:=--dtype bf16 --shape 8x4096 --shape 512x4096 --shape 32768x768 --shape 32768x1024 --shape 32768x2048 --shape 32768x4096 --impl torch --impl layernorm --impl liger --cuda-graph}" ;;
  kernels)
    : "${STEPS:=sweep tests memcheck}" "${SWEEP:=1}" "${SWEEP_BUDGET_S:=150}"
    : "${SWEEP_ARGS=--widths 16384 65536 768 1536}" ;;
  bench)
    : "${STEPS:=bench}" "${BENCH_OPS:=layer_norm}" "${BENCH_ARGS:=--dtype bf16 --cuda-graph}" ;;
  *) echo "PRESET: no preset '$PRESET' (launch, kernels, bench)"; exit 2 ;;
esac
OUT=${OUT:-runs/device}
# BUNDLE=1: the results are written to a scratch folder and, after every step, packed into OUT as
# log.txt, results.tar.gz and traces.tar.gz (the profiles): three files, whatever the steps wrote, for
# a caller that takes back only a few files (the device tool: 8), and a run cut short keeps its steps.
BUNDLE_TO=""
if [ "${BUNDLE:-0}" = 1 ]; then
  BUNDLE_TO=$OUT
  mkdir -p "$BUNDLE_TO"
  OUT=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
fi
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
summary=()
status=0

step() {  # step NAME COMMAND...: run, log, remember the verdict
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name" | tee -a "$LOG"
  "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  summary+=("$(printf '%-10s %-4s %4ss' "$name" "$([ "$rc" = 0 ] && echo ok || echo FAIL:$rc)" $((SECONDS - t0)))")
  [ "$rc" = 0 ] || status=1
  bundle
}

bundle() {  # BUNDLE=1: pack what the steps wrote into BUNDLE_TO
  [ -n "$BUNDLE_TO" ] || return 0
  cp "$LOG" "$BUNDLE_TO/log.txt"
  tar czf "$BUNDLE_TO/results.tar.gz" -C "$OUT" --exclude='./profile_*' .
  local traces=()
  for d in "$OUT"/profile_*; do [ -e "$d" ] && traces+=("$(basename "$d")"); done
  [ ${#traces[@]} -eq 0 ] || tar czf "$BUNDLE_TO/traces.tar.gz" -C "$OUT" "${traces[@]}"
}

# Wheels carried in .whl (liger-kernel: pure Python) go to a private site folder.
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda); print(torch.cuda.get_device_properties(0))"
  $PY -c "import liger_kernel; print('liger-kernel imports')" 2>/dev/null || echo "liger-kernel: not importable"
} 2>&1 | tee -a "$LOG"

# 1. GPU tests
# (4 workers when pytest-xdist is there: kernel compilation dominates, and it runs on the CPU)
xdist=""
$PY -c "import xdist" 2>/dev/null && xdist="-n 4"
run_tests() {
  [ "${SKIP_TESTS:-0}" = 1 ] || step gpu-tests $PY -m pytest -m gpu tests/gpu tests/test_dtensor.py tests/test_reference.py tests/test_add_norm.py -q -p no:cacheprovider -rf --durations=5 $xdist
}

# 2. memcheck: every kernel path once (register and chunked rows, LayerNorm / RMSNorm / add,
#    with and without parameters, the dweight/dbias reduction). The first run compiles the
#    kernels outside the sanitizer; the second, under it, finds them in Triton's cache.
cat > /tmp/memcheck_paths.py <<'EOF'
import torch
from layernorm.kernels import ops

torch.manual_seed(0)
for n in (1000, 16384, 20000):  # 16384: persistent forward; 20000: chunked rows
    x = (0.5 * torch.randn(37, n, device="cuda") - 2.3).bfloat16().requires_grad_()
    r = torch.randn(37, n, device="cuda").bfloat16().requires_grad_()
    w = torch.randn(n, device="cuda", requires_grad=True)
    b = torch.randn(n, device="cuda", requires_grad=True)
    dy = torch.randn(37, n, device="cuda").bfloat16()
    ops.triton_layer_norm(x, (n,), w, b, 1e-5).backward(dy)
    ops.triton_layer_norm(x[:, : n - 3], (n - 3,), None, None, 1e-5).backward(dy[:, : n - 3])
    ops.triton_rms_norm(x, (n,), w, 1e-5).backward(dy)
    y, s = ops.triton_add_layer_norm(x, r, (n,), w, b, 1e-5, True)
    torch.autograd.backward((y, s), (dy, dy.float()))
    y, s = ops.triton_add_rms_norm(x, None, (n,), w, 1e-5)
    torch.autograd.backward((y, s), (dy, dy))
# the lean register backward (the sweep's candidate for the widest register rows)
from layernorm.kernels import table
with table.forced(launch=table.Launch(1, 16384, 32, True, 1, lean=True)):
    ops.triton_layer_norm(x[:, :16000], (16000,), w[:16000], b[:16000], 1e-5).backward(dy[:, :16000])
    y, s = ops.triton_add_layer_norm(x[:, :16000], r[:, :16000], (16000,), w[:16000], None, 1e-5)
    torch.autograd.backward((y, s), (dy[:, :16000], dy[:, :16000]))
# the split backward (row sums, then column tiles x row bands)
with table.forced(launch=table.Launch(8, 1024, 8, False, 4, split=True)):
    ops.triton_layer_norm(x, (n,), w, b, 1e-5).backward(dy)
    y, s = ops.triton_add_rms_norm(x, r, (n,), w, 1e-5)
    torch.autograd.backward((y, s), (dy, dy))
# the chunked backward holding its partial sums in registers (a sweep candidate up to 16384 columns)
with table.forced(launch=table.Launch(1, 4096, 16, False, 1, hold_partials=True)):
    ops.triton_layer_norm(x[:, :16000], (16000,), w[:16000], b[:16000], 1e-5).backward(dy[:, :16000])
    y, s = ops.triton_add_rms_norm(x[:, :16000], r[:, :16000], (16000,), w[:16000], 1e-5)
    torch.autograd.backward((y, s), (dy[:, :16000], dy[:, :16000]))
# the paired backward (row programs beside column-tile programs, bands of 16 rows, the last one short)
with table.forced(launch=table.Launch(1, 4096, 8, False, 1, band_rows=16)):
    ops.triton_layer_norm(x, (n,), w, b, 1e-5).backward(dy)
    y, s = ops.triton_add_rms_norm(x, r, (n,), w, 1e-5)
    torch.autograd.backward((y, s), (dy, dy))
# the chunked forward on a persistent grid (a sweep candidate for the widest rows)
with table.forced(launch=table.Launch(1, 4096, 8, False, 1)):
    ops.triton_layer_norm(x, (n,), w, b, 1e-5).backward(dy)
# an exact-width row: 768 columns as 3 chunks of 256, several rows per program, a partial last block
x768, r768, dy768 = x[:, :768].contiguous(), r[:, :768].contiguous(), dy[:, :768].contiguous()
with table.forced(launch=table.Launch(8, 256, 8, False, 2)):
    ops.triton_layer_norm(x768, (768,), w[:768], b[:768], 1e-5).backward(dy768)
    y, s = ops.triton_add_rms_norm(x768, r768, (768,), w[:768], 1e-5)
    torch.autograd.backward((y, s), (dy768, dy768))
torch.cuda.synchronize()
print("memcheck paths ran")
EOF
memcheck() {
  $PY /tmp/memcheck_paths.py || return $?
  if ! command -v compute-sanitizer >/dev/null; then echo "compute-sanitizer not found"; return 3; fi
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
    $PY /tmp/memcheck_paths.py 2>&1 | tee "$OUT/memcheck.txt"
  return "${PIPESTATUS[0]}"
}
run_memcheck() { [ "${SKIP_MEMCHECK:-0}" = 1 ] || step memcheck memcheck; }

# 3. sweep (optional)
run_sweep() {
  [ "${SWEEP:-0}" = 1 ] || return 0
  mkdir -p "$OUT/sweep"
  step sweep $PY scripts/sweep_launch.py --out "$OUT/sweep" --write --budget-s "${SWEEP_BUDGET_S:-240}" ${SWEEP_ARGS:-}
}

# 4. host time of small calls, layer by layer (seconds; SKIP_HOST=1 leaves it out)
run_host() {
  [ "${SKIP_HOST:-0}" != 1 ] || return 0
  step host $PY scripts/host_overhead.py --json "$OUT/host_overhead.json"
  mkdir -p "$OUT/host"
  step host-bench $PY -m layernorm bench --host-time-only --op all --out "$OUT/host" ${HOST_ARGS:-}
}

# 5. bench
judge_bar() {  # the bar, judged once all steps ran, from the host-time and bench results written
  local bar_inputs=()
  for f in "$OUT/host/results.json" "$OUT/bench/results.json"; do [ -f "$f" ] && bar_inputs+=("$f"); done
  [ ${#bar_inputs[@]} -eq 0 ] || step bar $PY scripts/bench_bar.py "${bar_inputs[@]}"
}
run_bench() {
  local bench_ops=()
  for op in ${BENCH_OPS-layer_norm}; do bench_ops+=(--op "$op"); done
  [ ${#bench_ops[@]} -gt 0 ] || return 0
  mkdir -p "$OUT/bench"
  step bench $PY -m layernorm bench "${bench_ops[@]}" --out "$OUT/bench" ${BENCH_ARGS:-}
}

# 6. the experiments on the GPU (EXPERIMENTS="transformer small-batch ..."; EXPERIMENT_SIZE quick by
#    default): their --device cuda paths, and the transformer's tokens/s with torch's LayerNorm
#    against our kernels
case "${EXPERIMENT_SIZE:-quick}" in
  smoke) size_flag=(--smoke) ;; default) size_flag=() ;; *) size_flag=(--quick) ;;
esac
run_experiments() {
  for name in ${EXPERIMENTS-}; do
    step "exp:$name" $PY -m layernorm experiment "$name" --device cuda "${size_flag[@]}" --out "$OUT/experiments/$name"
  done
}

# 7. a whole model's training step, its own norms against layernorm.patch (MODEL_STEP="gpt2 encoder llama");
#    PROFILE=1 also traces one step of each variant and lists its host synchronizations
run_models() {
  for model in ${MODEL_STEP-}; do
    local profile=()
    [ "${PROFILE:-0}" = 1 ] && profile=(--profile "$OUT/profile_$model")
    step "step:$model" $PY scripts/gpt2_step.py --model "$model" --out "$OUT/step_$model.json" "${profile[@]}"
  done
}

# 8. the tour's GPU branch (layernorm tour on cuda: check, the experiments at TOUR_SIZE, smoke by
#    default; TOUR_ARGS passed through, "--skip bench" by default: the tour's bench is the full
#    `layernorm bench`, longer than one call)
run_tour() {
  step tour $PY -m layernorm tour --device cuda --out "$OUT/tour" --experiment-size "${TOUR_SIZE:-smoke}" \
    ${TOUR_ARGS---skip bench}
}

ALL_STEPS="tests memcheck sweep host bench experiments models tour"
for name in ${STEPS:-$ALL_STEPS}; do
  if ! declare -F "run_$name" >/dev/null; then
    echo "STEPS: no step '$name' ($ALL_STEPS)" | tee -a "$LOG"
    status=1
    continue
  fi
  "run_$name"
done
judge_bar

echo "=== summary" | tee -a "$LOG"
printf '%s\n' "${summary[@]}" | tee -a "$LOG"
bundle
exit $status
