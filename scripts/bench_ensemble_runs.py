"""A prompt ensemble as users run it: one `ensemble` run vs N separate `eval` runs.

  python scripts/bench_ensemble_runs.py --task pt_mini_rte_taskless \
      --prompt_files RUN_0 RUN_1 RUN_2 RUN_3 RUN_4 [--checkpoint DIR] [--inputs 160]

Each run is a fresh `python -m ptjax.main` process (start-up, checkpoint, input pipeline,
compilation and the validation split decoded greedily), as a researcher would launch it:
N runs of gin/runs/eval.gin (one per prompt, RANK_CLASSIFICATION=False) against one run
of gin/runs/ensemble.gin (N prompts per forward pass; unlike `eval` it computes no
validation loss, only the decoded answers and their metrics). Prints JSON: each run's wall time,
their sum, the ensemble's, their ratio, and whether each member's accuracy in the
ensemble equals its own run's. scripts/bench_ensemble.py times the forward passes alone.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from ptjax import assets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(gin_files, model_dir, bindings):
  """Runs ptjax.main to the end; returns its wall time in seconds."""
  command = [sys.executable, "-m", "ptjax.main", f"--gin.MODEL_DIR={model_dir!r}"]
  command += [f"--gin_file={g}" for g in gin_files]
  command += [f"--gin.{k}={v}" for k, v in bindings.items()]
  start = time.perf_counter()
  subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", required=True)
  parser.add_argument("--prompt_files", nargs="+", required=True)
  parser.add_argument("--model_gin", default="models/t5_1_1_mini_large.gin")
  parser.add_argument("--checkpoint", default=assets.MINI_T5_CHECKPOINT)
  parser.add_argument("--inputs", type=int, default=160)
  parser.add_argument("--targets", type=int, default=4)
  parser.add_argument("--prompt_length", type=int, default=20)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--max_eval_examples", type=int, default=240)
  args = parser.parse_args()
  common = {"MIXTURE_OR_TASK_NAME": repr(args.task),
            "INITIAL_CHECKPOINT_PATH": repr(args.checkpoint),
            "TASK_FEATURE_LENGTHS": repr({"inputs": args.inputs, "targets": args.targets}),
            "BATCH_SIZE": args.batch, "MAX_EVAL_EXAMPLES": args.max_eval_examples}
  with tempfile.TemporaryDirectory() as tmp:
    separate = [launch((args.model_gin, "runs/eval.gin"), os.path.join(tmp, f"eval_{k}"),
                       {**common, "PROMPT_FILE": repr(p), "PROMPT_LENGTH": args.prompt_length,
                        "RANK_CLASSIFICATION": False})
                for k, p in enumerate(args.prompt_files)]
    together = launch((args.model_gin, "runs/ensemble.gin"), os.path.join(tmp, "ensemble"),
                      {**common, "PROMPT_FILES": repr(list(args.prompt_files))})
    with open(os.path.join(tmp, "ensemble", "ensemble.json")) as f:
      members = [m["accuracy"] for m in json.load(f)["members"]]
    alone = []
    for k in range(len(args.prompt_files)):
      with open(os.path.join(tmp, f"eval_{k}", "metrics.jsonl")) as f:
        alone.append([json.loads(line) for line in f][-1]["accuracy"])
  print(json.dumps({"task": args.task, "prompts": len(args.prompt_files),
                    "separate_runs_s": [round(s, 1) for s in separate],
                    "separate_total_s": round(sum(separate), 1),
                    "ensemble_run_s": round(together, 1),
                    "ensemble_over_separate": round(together / sum(separate), 3),
                    "member_accuracy_alone": alone, "member_accuracy_in_ensemble": members,
                    "members_equal": alone == members}, indent=1))


if __name__ == "__main__":
  main()
