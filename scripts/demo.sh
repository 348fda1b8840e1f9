#!/usr/bin/env bash
# README command 1, offline: creates .venv if missing, installs ptjax, then runs the main
# job (gin/runs/demo.gin): majority class vs prompt design vs prompt tuning vs model tuning
# of the shipped pre-trained mini T5 on a mini-world task, as one table.
# Extra arguments go to `python -m ptjax.main`, e.g. --gin.MIXTURE_OR_TASK_NAME="'pt_mini_rte'".
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
exec .venv/bin/python -m ptjax.main --gin_file=gin/runs/demo.gin \
  --gin.MODEL_DIR="'${MODEL_DIR:-/tmp/ptjax_demo}'" "$@"
