"""The comparison table of the main job (gin/runs/demo.gin): the majority-class baseline
against the task's own examples, the table, and the demo end to end on the shipped model."""

import collections
import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT
from ptjax import assets
from ptjax.data import mini_tasks, mini_world
from ptjax.model import count_params, preset
from ptjax.train import comparison


def test_majority_class_is_the_most_frequent_train_label_scored_on_validation():
  world = mini_world.default_world()
  train = [e["label"] for e in mini_tasks.boolq_examples(world, "train")][:1000]
  guess = collections.Counter(train).most_common(1)[0][0]
  validation = [e["label"] for e in mini_tasks.boolq_examples(world, "validation")]
  expected = 100 * np.mean([label == guess for label in validation])
  assert comparison.majority_class("pt_mini_boolq", "accuracy") == expected
  # Three classes: RTE's macro-F1 of a constant guess is F1(guess) / 3.
  rte = [e["label"] for e in mini_tasks.rte_examples(world, "validation")]
  rte_guess = collections.Counter(
      [e["label"] for e in mini_tasks.rte_examples(world, "train")][:1000]).most_common(1)[0][0]
  share = np.mean([label == rte_guess for label in rte])
  assert np.isclose(comparison.majority_class("pt_mini_rte", "macro_f1"),
                    100 * (2 * share / (1 + share)) / 3)


def test_majority_class_names_the_metrics_when_asked_for_another():
  try:
    comparison.majority_class("pt_mini_boolq", "f1")
  except ValueError as e:
    assert "'f1'" in str(e) and "accuracy" in str(e)
  else:
    raise AssertionError("no error")


def test_table():
  rows = [comparison.Row("majority class", 50.0, 0, 1.2),
          comparison.Row("prompt tuning", 81.25, 2560, 123.4)]
  assert comparison.format_table(rows, "accuracy") == (
      "| method | accuracy | trainable parameters | wall time (s) |\n"
      "|---|---:|---:|---:|\n"
      "| majority class | 50.0 | 0 | 1 |\n"
      "| prompt tuning | 81.2 | 2,560 | 123 |")


def test_demo_gin_runs_end_to_end_on_the_shipped_model(tmp_path):
  """README command 1's job, a few steps of each method: the table's rows, trainable
  parameters and scores agree with what each run wrote."""
  model_dir = str(tmp_path / "demo")
  args = [sys.executable, "-m", "ptjax.main", "--gin_file=gin/runs/demo.gin",
          f"--gin.MODEL_DIR='{model_dir}'", "--gin.TRAIN_STEPS_RELATIVE=3", "--gin.EVAL_PERIOD=3",
          "--gin.SAVING_PERIOD=3", "--gin.BATCH_SIZE=8", "--gin.MAX_EVAL_EXAMPLES=16",
          "--gin.trainer.Trainer.log_every=1", "--gin.model_tuning/trainer.train.relative_steps=2",
          "--gin.model_tuning/trainer.train.eval_period=2",
          "--gin.model_tuning/utils.SaveCheckpointConfig.period=2",
          "--gin.evaluation.PromptDesign.num_shots=1"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "\nstep 503: loss " in proc.stdout  # T5X-style step lines, absolute steps.
  result = json.load(open(os.path.join(model_dir, "comparison.json")))
  rows = {r["method"]: r for r in result["rows"]}
  assert list(rows) == ["majority class", "prompt design", "prompt tuning", "model tuning"]
  assert result["metric"] == "accuracy"
  assert rows["majority class"]["score"] == comparison.majority_class(
      "pt_mini_rte", "accuracy", max_examples=16)
  assert rows["prompt design"]["trainable_parameters"] == 0
  assert rows["prompt tuning"]["trainable_parameters"] == 20 * 128
  assert rows["model tuning"]["trainable_parameters"] == count_params(preset("mini_large"))
  # Steps are absolute: the shipped checkpoint is at step 500 (T5X's convention).
  for method, step in (("prompt_design", 0), ("prompt_tuning", 503), ("model_tuning", 502)):
    written = json.load(open(os.path.join(model_dir, method, "eval", "pt_mini_rte",
                                          f"step_{step}.metrics.json")))
    assert written["accuracy"] == rows[method.replace("_", " ")]["score"]
  assert os.path.isdir(os.path.join(model_dir, "model_tuning", "checkpoint_502"))  # T5X.
  table = open(os.path.join(model_dir, "comparison.md")).read().split("\n\n", 1)[1].strip()
  assert table.startswith("| method | accuracy | trainable parameters | wall time (s) |")
  assert table in proc.stdout  # Printed as written.
