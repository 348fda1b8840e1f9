#!/usr/bin/env bash
# The miniature reproduction in docs/results/ (offline, 2-core CPU): pre-trains the mini
# ladder sizes that are not shipped, runs the paper's grids with --family=mini, and writes
# their tables and figures to docs/results/. Finished runs are skipped on a rerun.
#   ./scripts/mini_reproduction.sh [SEEDS]      (default 0; the paper uses 0,1,2)
set -euo pipefail
cd "$(dirname "$0")/.."
PTJAX_EXTRAS="[plots]"
source scripts/venv.sh
seeds="${1:-0}"
export PTJAX_PRETRAIN_ROOT="${PTJAX_PRETRAIN_ROOT:-/tmp/ptjax_pretrain}"
root="${ROOT:-/tmp/ptjax_mini_experiments}"
for size in small base; do
  if [ ! -e "$PTJAX_PRETRAIN_ROOT/mini_$size/lm_adaptation/checkpoint_500/checkpoint" ]; then
    OUT="$PTJAX_PRETRAIN_ROOT/mini_$size" ./scripts/pretrain_mini.sh "$size"
  fi
done
grid() { .venv/bin/python -m ptjax.experiments "$@" --family=mini --seeds="$seeds" --root="$root"; }
# What docs/results/ holds so far (one seed; mini RTE, now with mini CB); the other grids
# run the same way.
tasks=pt_mini_cb_taskless,pt_mini_rte_taskless
grid run fig1_scale --sizes=small,base,large --tasks=$tasks
grid table fig1_scale --sizes=small,base,large --tasks=$tasks --out=docs/results
