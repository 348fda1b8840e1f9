"""Pre-training curve of scripts/pretrain_mini.sh as TSV: one row per logged step of both
phases (global step, phase, train loss per target token, eval loss when evaluated).

  python scripts/pretraining_curve.py /tmp/ptjax_pretrain/mini_large > curve.tsv
"""

import json
import os
import sys


def curve(out_dir: str) -> list[tuple]:
  """Steps are absolute already (T5X's convention: LM adaptation continues from span
  corruption's last step)."""
  rows = []
  for phase in ("span_corruption", "lm_adaptation"):
    path = os.path.join(out_dir, phase, "metrics.jsonl")
    records = [json.loads(line) for line in open(path)]
    evals = {r["step"]: r["loss"] for r in records if r["kind"] == "eval"}
    for r in records:
      if r["kind"] == "train":
        rows.append((r["step"], phase, r["loss"], evals.get(r["step"])))
  return rows


def main():
  print("step\tphase\ttrain_loss\teval_loss")
  for step, phase, train, evaluation in curve(sys.argv[1]):
    print(f"{step}\t{phase}\t{train:.4f}\t{'' if evaluation is None else f'{evaluation:.4f}'}")


if __name__ == "__main__":
  main()
