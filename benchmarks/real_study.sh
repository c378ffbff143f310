#!/usr/bin/env bash
# The real-data study of issue 6: all four schemes x both architectures on pelvis + spine with the
# paper's protocol, then the comparison report. Usage:
#   benchmarks/real_study.sh cpu     # the CPU configuration recorded in RESULTS.md (about 1 h, 2 cores)
#   benchmarks/real_study.sh paper   # the paper's configuration (256x256, width 32, 30 epochs, LOO); GPU
# The cpu mode trains with --seg-loss dice-ce (cross-entropy + soft Dice, not the paper's loss): with
# cross-entropy alone the small bones are still at Dice ~0 after the ~2,000 steps an hour allows.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PEDSEG_SHARED_DATA:-../shared/data}
MODE=${1:-cpu}
OUT=${2:-study-$MODE}
COMMON=(--domains pelvis spine --data "pelvis=$DATA/pelvis" --data "spine=$DATA/spine"
        --schemes baseline joint dsl dsl-contrastive --archs unet attention-unet --seed 0 -q)
case "$MODE" in
  cpu)
    pedseg crossval "${COMMON[@]}" --folds 3 --max-folds 1 --epochs 12 --steps-per-epoch 150 \
      --batch-size 16 --image-size 96 --base-width 8 --depth 4 --lr 1e-3 --seg-loss dice-ce \
      --device cpu --out "$OUT" ;;
  paper)
    pedseg crossval "${COMMON[@]}" --folds loo --epochs 30 --batch-size 32 --image-size 256 \
      --base-width 32 --depth 5 --lr 1e-4 --device cuda --out "$OUT" ;;
  *) echo "unknown mode $MODE (cpu | paper)" >&2; exit 2 ;;
esac
pedseg compare "$OUT" --out "$OUT/report"
