#!/usr/bin/env bash
# The accelerator half of the prompt-ensemble timing (issue 6), as one device call: one pass
# of N prompts vs N separate passes, bfloat16 activations, on the shipped mini T5 and on a
# random T5 1.1 base at the paper's input length. The device image has jax, flax and
# tensorstore; ptjax runs from the tree. JSON lands in $OUT.
#   run(command="bash scripts/device_benchmarks.sh", timeout_s=480)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/ptjax_device}"
mkdir -p "$out"
nvidia-smi -L || true
python3 scripts/bench_ensemble.py --dtype bfloat16 --batch 1 8 32 128 --repeats 10 \
  | tee "$out/ensemble_mini_large_bf16.json"
python3 scripts/bench_ensemble.py --config base --random --dtype bfloat16 --inputs 512 \
  --targets 16 --batch 1 8 32 --repeats 10 | tee "$out/ensemble_base_bf16.json"
