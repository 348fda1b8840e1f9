#!/usr/bin/env bash
# The miniature reproduction in docs/results/ (offline, 2-core CPU): pre-trains the mini
# ladder's checkpoints that are not shipped, runs the paper's grids with --family=mini,
# and writes their tables and figures to docs/results/. Finished runs are skipped on a
# rerun, and points shared by grids run once.
#   ./scripts/mini_reproduction.sh [SEEDS] [FLAGS]   (default 0; the paper uses 0,1,2)
# FLAGS go to every `python -m ptjax.experiments` call (e.g. --set=TRAIN_STEPS=2). With
# --dry_run nothing runs: missing pre-training is printed, each grid prints its plan, and
# the tables and the neighbour report (they need finished runs) are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
PTJAX_EXTRAS="[plots]"
source scripts/venv.sh
seeds=0
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then seeds="${1:-0}"; shift; fi
flags=("$@")
dry_run=""
case " $* " in *" --dry_run "*) dry_run=1 ;; esac
export PTJAX_PRETRAIN_ROOT="${PTJAX_PRETRAIN_ROOT:-/tmp/ptjax_pretrain}"
root="${ROOT:-/tmp/ptjax_mini_experiments}"
# small and base for Figure 1; large's own span-corruption checkpoint for Figure 3c (the
# shipped model is that run's LM-adapted end, ~30 min to redo).
for size in small base large; do
  if [ ! -e "$PTJAX_PRETRAIN_ROOT/mini_$size/span_corruption/checkpoint_1500/checkpoint" ] ||
     [ ! -e "$PTJAX_PRETRAIN_ROOT/mini_$size/lm_adaptation/checkpoint_2000/checkpoint" ]; then
    if [ -n "$dry_run" ]; then
      echo "# would pre-train: OUT=$PTJAX_PRETRAIN_ROOT/mini_$size ./scripts/pretrain_mini.sh $size"
    else
      OUT="$PTJAX_PRETRAIN_ROOT/mini_$size" ./scripts/pretrain_mini.sh "$size"
    fi
  fi
done
# grid COMMAND GRID [ARGS]: the defaults first, so a call's own --seeds=0,1,2 wins (argparse
# keeps the last value).
grid() { local command="$1" name="$2"; shift 2
         .venv/bin/python -m ptjax.experiments "$command" "$name" --family=mini \
           --seeds="$seeds" --root="$root" "$@" ${flags[@]+"${flags[@]}"}; }
# Mini CB and RTE; Figure 1 over three sizes, the other grids on the shipped large model
# (Tables 1-2 on their own tasks); points shared between grids run once.
tasks=pt_mini_cb_taskless,pt_mini_rte_taskless
large_grids="table3_ensemble fig3b_init fig3c_objective fig3a_prompt_length
             fig3d_lm_adaptation_steps table1_squad_to_mrqa table2_qqp_mrpc"
grid run fig1_scale --sizes=small,base,large --tasks=$tasks
for g in $large_grids; do
  grid run $g --sizes=large --tasks=$tasks
done
# Figure 1's largest size and Figure 3b over seeds 0-2 too (prompt tuning with class-label
# init, seeds 1-2: Table 3's members, reused).
grid run fig1_scale --sizes=large --tasks=$tasks --seeds=0,1,2
grid run fig3b_init --sizes=large --tasks=$tasks --seeds=0,1,2
[ -z "$dry_run" ] || exit 0   # tables and the neighbour report need finished runs
grid table fig1_scale --sizes=small,base,large --tasks=$tasks --seeds=0,1,2 --out=docs/results
for g in $large_grids; do
  grid table $g --sizes=large --tasks=$tasks --out=docs/results
done
grid table fig3b_init --sizes=large --tasks=$tasks --seeds=0,1,2 --out=docs/results
# Section 7: nearest vocabulary neighbours of class-label- and random-initialised prompts.
cells="$root/fig3b_init/size=large/task=pt_mini_cb_taskless"
.venv/bin/python -m ptjax.main --gin_file=models/t5_1_1_mini_large.gin \
  --gin_file=runs/neighbours.gin --gin.MODEL_DIR="'docs/results/neighbours'" \
  --gin.INITIAL_CHECKPOINT_PATH="'ptjax/assets/mini_t5_1_1_large'" \
  --gin.PROMPT_FILES="{'cb_class_label': '$cells/init=class_label/seed_0',
    'cb_random_uniform': '$cells/init=random_uniform/seed_0',
    'cb_sampled_vocab': '$cells/init=sampled_vocab/seed_0'}"
