#!/usr/bin/env bash
# The real-data studies on pelvis + spine (issue 10). Every fold's test cases play no part in its
# training or model selection (validation cases come from the training side of the fold). Usage:
#   benchmarks/real_study.sh budget [OUT] [BUDGET]   # proposed scheme, 3-fold over all cases, each
#                                                    # fold planned and trained for BUDGET (default 1h)
#   benchmarks/real_study.sh compare [OUT] [BUDGET]  # baseline / dsl / proposed at equal budget, 3-fold
#   benchmarks/real_study.sh paper [OUT]             # the paper's recipe (CE, Adam 1e-4, 256², width 32,
#                                                    # 30 epochs), leave-one-out; meant for a GPU
# Each ends with `pedseg compare OUT` (tables, paired tests, plots in OUT/report). Flip test-time
# augmentation is measured on the same test cases afterwards by benchmarks/bench_tta.py OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PEDSEG_SHARED_DATA:-../shared/data}
MODE=${1:-budget}
OUT=${2:-study-$MODE}
BUDGET=${3:-1h}
SEED=${PEDSEG_SEED:-0}  # seeds the fold split and training; the recorded studies used 0
COMMON=(--domains pelvis spine --data "pelvis=$DATA/pelvis" --data "spine=$DATA/spine" --seed "$SEED" -q)
case "$MODE" in
  budget)
    pedseg crossval "${COMMON[@]}" --folds 3 --budget "$BUDGET" --schemes dsl-contrastive \
      --device cpu --out "$OUT" ;;
  compare)
    pedseg crossval "${COMMON[@]}" --folds 3 --budget "$BUDGET" \
      --schemes baseline dsl dsl-contrastive --device cpu --out "$OUT" ;;
  paper)
    pedseg crossval "${COMMON[@]}" --folds loo --recipe paper --schemes baseline joint dsl \
      dsl-contrastive --device cuda --out "$OUT" ;;
  *) echo "unknown mode $MODE (budget | compare | paper)" >&2; exit 2 ;;
esac
pedseg compare "$OUT" --out "$OUT/report"
