#!/usr/bin/env bash
# The main job on the embedded default, offline: creates .venv if missing, installs ptjax,
# then prompt-tunes a tiny frozen T5 on examples/quickstart (gin/runs/quickstart.gin).
# Extra arguments go to `python -m ptjax.main`, e.g. --gin.TRAIN_STEPS=100.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
exec .venv/bin/python -m ptjax.main --gin_file=gin/runs/quickstart.gin \
  --gin.MODEL_DIR="'${MODEL_DIR:-/tmp/ptjax_quickstart}'" "$@"
