#!/usr/bin/env bash
# Pre-trains a mini-world T5 1.1 (gin/models/t5_1_1_mini_<size>.gin) from scratch on the
# mini-world corpus, T5 1.1 LM-adapted style: span corruption, then LM adaptation (prefix LM)
# from its checkpoint, with the same trainer (gin/runs/pretrain.gin).
#   ./scripts/pretrain_mini.sh SIZE [SPAN_CORRUPTION_STEPS] [LM_ADAPTATION_STEPS] [ptjax.main flags]
# The shipped model (ptjax/assets/mini_t5_1_1_large) is `./scripts/pretrain_mini.sh large`
# (defaults 1500 + 500 steps), copied from $OUT/lm_adaptation/checkpoint_2000 (steps are
# absolute, as in T5X: LM adaptation continues from span corruption's step 1500).
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:?usage: pretrain_mini.sh small|base|large|xl [span_steps] [lm_steps] [flags]}"
span_steps="${2:-1500}"
lm_steps="${3:-500}"
shift $(( $# < 3 ? $# : 3 ))
out="${OUT:-/tmp/ptjax_pretrain/mini_${size}}"
source scripts/venv.sh
run() { .venv/bin/python -m ptjax.main --gin_file="gin/models/t5_1_1_mini_${size}.gin" \
          --gin_file=gin/runs/pretrain.gin "$@"; }
start=$(date +%s)
run --gin.MODEL_DIR="'$out/span_corruption'" --gin.TRAIN_STEPS_RELATIVE="$span_steps" "$@"
run --gin.MODEL_DIR="'$out/lm_adaptation'" --gin.TRAIN_STEPS_RELATIVE="$lm_steps" \
    --gin.MIXTURE_OR_TASK_NAME="'pt_mini_corpus_prefix_lm'" \
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 96, 'targets': 64}" \
    --gin.INITIAL_CHECKPOINT_PATH="'$out/span_corruption/checkpoint_$span_steps'" "$@"
.venv/bin/python scripts/pretraining_curve.py "$out" > "$out/curve.tsv"
echo "pre-trained mini_${size} in $(( $(date +%s) - start )) s: $out/lm_adaptation/checkpoint_$(( span_steps + lm_steps ))"
echo "curve: $out/curve.tsv"
