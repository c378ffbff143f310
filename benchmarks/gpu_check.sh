#!/usr/bin/env bash
# The GPU path, proven in one go (at most ~8 minutes on one GPU): the gpu-marked tests, training
# throughput (fp32 vs bf16, NCHW vs channels_last, torch.compile), and `predict` end to end with the
# onnxruntime CUDA execution provider (fp32 and fp16, I/O binding) and with torch, including a
# 256x256x200 volume read -> label map written with the default model (target < 1 s).
#
#   benchmarks/gpu_check.sh                 # writes benchmarks/results/gpu.md
#   benchmarks/gpu_check.sh /tmp/gpu.md     # elsewhere
#
# Every section has its own time limit; a failing section is recorded as failed and the others
# still run, so one report shows everything that works and everything that does not.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu.md}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PEDSEG_HOME="$WORK/home"
PY=${PYTHON:-python3}

section() {  # section TITLE SECONDS COMMAND...
  local title=$1 limit=$2
  shift 2
  echo "## $title" >> "$OUT.tmp"
  echo >> "$OUT.tmp"
  echo '```' >> "$OUT.tmp"
  echo "\$ $*" >> "$OUT.tmp"
  local start=$SECONDS
  if timeout "$limit" "$@" > "$WORK/section.log" 2>&1; then
    status="ok"
  else
    status="FAILED (exit $?)"
  fi
  tail -n 60 "$WORK/section.log" >> "$OUT.tmp"
  echo '```' >> "$OUT.tmp"
  echo "$title: $status in $((SECONDS - start)) s" | tee -a "$WORK/summary"
  echo >> "$OUT.tmp"
}

{
  echo "# GPU check ($(date -u +%Y-%m-%d))"
  echo
  echo '- command: `benchmarks/gpu_check.sh`'
  echo "- machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi'); CPU $(lscpu | sed -n 's/^Model name: *//p')"
  echo "- versions: $($PY -c 'import torch, onnxruntime as o; print("torch", torch.__version__, "cuda", torch.version.cuda, "| onnxruntime", o.__version__, o.get_available_providers())' 2>&1)"
  echo "- load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} > "$OUT.tmp"

section "gpu-marked tests" 150 $PY -m pytest -m gpu -q -p no:cacheprovider
section "training throughput (256², width 32, batch 32: fp32/bf16 x NCHW/channels_last, compile)" 180 \
  $PY benchmarks/bench_train.py --device cuda --compile --steps 10 --warmup 3
section "predict: onnxruntime CUDA EP fp32 and torch, 256x256x200" 120 \
  $PY benchmarks/bench_predict.py --device cuda --slices 200
section "predict: onnxruntime CUDA EP fp16 (I/O binding), 256x256x200" 120 \
  $PY benchmarks/bench_predict.py --device cuda --fp16 --slices 200

{
  echo "## Summary"
  echo
  sed 's/^/- /' "$WORK/summary"
  echo "- load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} >> "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"
