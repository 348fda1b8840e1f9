"""gin/runs/pretrain.gin: span corruption from a random init, then LM adaptation from its
T5X checkpoint, with the same trainer (a few steps of the smallest mini T5)."""

import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT
from ptjax.checkpoints import checkpoint_step, load_checkpoint
from ptjax.model import preset


def pretrain(model_dir, *flags):
  args = [sys.executable, "-m", "ptjax.main", "--gin_file=gin/models/t5_1_1_mini_small.gin",
          "--gin_file=gin/runs/pretrain.gin", f"--gin.MODEL_DIR='{model_dir}'",
          "--gin.TRAIN_STEPS_RELATIVE=3", "--gin.BATCH_SIZE=4", "--gin.MAX_EVAL_EXAMPLES=8",
          "--gin.EVAL_PERIOD=3", "--gin.SAVING_PERIOD=3", *flags]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_span_corruption_then_lm_adaptation(tmp_path):
  span, lm = str(tmp_path / "span"), str(tmp_path / "lm")
  out = pretrain(span)
  assert "randomly initialised" in out and "Trainable parameters: 240,448 of 240,448" in out
  first = os.path.join(span, "checkpoint_3")
  out = pretrain(lm, "--gin.MIXTURE_OR_TASK_NAME='pt_mini_corpus_prefix_lm'",
           f"--gin.INITIAL_CHECKPOINT_PATH='{first}'",
           "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}")
  assert "randomly initialised" not in out  # Started from the span-corruption weights.
  config = preset("mini_small")
  _, a = load_checkpoint(first, config)
  # Steps are absolute, as in T5X: LM adaptation goes on from span corruption's step 3.
  _, b = load_checkpoint(os.path.join(lm, "checkpoint_6"), config)
  assert checkpoint_step(os.path.join(lm, "checkpoint_6")) == 6
  assert "steps 3 -> 6 (3 to go)" in out
  assert not np.array_equal(a["encoder"]["encoder_norm"]["scale"],
                            b["encoder"]["encoder_norm"]["scale"])  # LM adaptation trained.
  evals = [json.loads(l) for l in open(os.path.join(lm, "metrics.jsonl"))
           if '"eval"' in l]
  assert evals and np.isfinite(evals[-1]["loss"])
  assert set(evals[-1]) == {"kind", "step", "loss"}  # Loss only: no decoding, no metrics.
