"""Inference without targets (gin/runs/infer.gin on an inputs-only file or a test split:
predictions alone, no metrics), and rank classification on a user's own task (CLASS_LABELS,
or a one-line error when its label words are unknown)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from conftest import ROOT
from ptjax.data import text_tasks, vocabularies
from ptjax.model import inference
from test_decoding_gin import (BATCH, FILES, LENGTHS, _model, encode, expected_generate,
                               rows_of, run_cli, task_args, world)  # noqa: F401 (fixture)

INPUTS = ["is apple sweet?", "is lemon sweet?", "is mango\tsweet?", "is plum sweet?",
          "is grape sweet?", "is peach sweet?"]
LABELS = ["yes", "no", "maybe"]


def write_inputs(path, texts):
  """An inputs-only file: JSONL objects with 'inputs', or TSV lines after an `inputs` header
  (a TSV input holds no tab)."""
  with open(path, "w") as f:
    if str(path).endswith(".jsonl"):
      f.write("".join(json.dumps({"inputs": t, "id": k}) + "\n" for k, t in enumerate(texts)))
    else:
      f.write("inputs\n" + "".join(t.replace("\t", " ") + "\n" for t in texts))


def infer_args(world, model_dir, infer_file, *extra, run="infer"):
  return task_args(world, model_dir, run, "--gin_file=gin/tasks/infer_file.gin",
                   f"--gin.INFER_FILE='{infer_file}'", *extra, task=False)


@pytest.mark.parametrize("suffix", ["jsonl", "tsv"])
def test_infer_on_an_inputs_only_file_writes_one_prediction_per_input(suffix, world, tmp_path):
  infer_file = tmp_path / f"unlabeled.{suffix}"
  write_inputs(infer_file, INPUTS)
  texts = INPUTS if suffix == "jsonl" else [t.replace("\t", " ") for t in INPUTS]
  model_dir = tmp_path / "run"
  run_cli(infer_args(world, model_dir, infer_file, "--gin_file=gin/decoding/beam_search.gin"))
  rows = rows_of(model_dir, "infer")
  assert len(rows) == len(texts)
  assert all(set(r) == {"input", "prediction", "score"} for r in rows)  # No target.
  assert [r["input"] for r in rows] == texts
  predictions, scores = expected_generate(world, texts, FILES["beam_search"][0])
  assert [r["prediction"] for r in rows] == predictions
  np.testing.assert_allclose([r["score"] for r in rows], scores, rtol=1e-5, atol=1e-5)
  # Predictions only: no metrics, no loss, no metric log.
  assert sorted(os.listdir(model_dir / "infer" / "ptjax_text_task")) == ["step_0.jsonl"]
  assert not (model_dir / "infer" / "metrics.jsonl").exists()


def test_infer_on_a_test_split_with_placeholder_targets(tmp_path, capsys, world):
  import ptjax.data.tasks as tasks
  tasks.register_all(seqio.SentencePieceVocabulary(world["vocab"], 100))
  model_dir = tmp_path / "test_split"
  task = "pt_super_glue_rte_v102_taskless"
  with tfds.testing.mock_data(num_examples=5):
    run_cli(task_args(world, model_dir, "infer", f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
                      "--gin.EVAL_SPLIT='test'", "--gin.RANK_CLASSIFICATION=True",
                      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 6}", task=False,
                      vocab=False))
  rows = rows_of(model_dir, "infer", task)
  assert len(rows) == 5 and all(set(r) == {"input", "prediction", "score"} for r in rows)
  assert {r["prediction"] for r in rows} <= {"entailment", "not_entailment"}
  assert not (model_dir / "infer" / task / "step_0.metrics.json").exists()
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed["split"] == "test" and printed["predictions"] == 5


def test_evaluating_or_training_on_an_inputs_only_file_fails_naming_it(world, tmp_path, capsys):
  infer_file = tmp_path / "unlabeled.jsonl"
  write_inputs(infer_file, INPUTS)
  for run, extra in (("eval", []), ("prompt_tune", ["--gin.TRAIN_STEPS=2"])):
    with pytest.raises(SystemExit) as exit_:
      run_cli(infer_args(world, tmp_path / run, infer_file, *extra, run=run))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2, run
    assert last == (f"error: Task file {infer_file} has inputs only (no targets): it can be "
                    f"inferred (gin/runs/infer.gin), not evaluated or trained on; give every "
                    f"line its targets."), run
  # The training and validation files of gin/tasks/text_files.gin still need targets.
  with pytest.raises(SystemExit):
    run_cli(task_args(world, tmp_path / "train", "prompt_tune", "--gin.TRAIN_STEPS=2",
                      f"--gin.TRAIN_FILE='{infer_file}'"))
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert last == f"error: {infer_file}:1: expected a JSON object with 'inputs' and 'targets'."


def test_read_examples_takes_inputs_alone_only_for_inference(tmp_path):
  tsv = tmp_path / "a.tsv"
  tsv.write_text("inputs\none\ntwo\tthree\n")
  assert text_tasks.read_examples(str(tsv), targets=False) == [
      {"inputs": "one"}, {"inputs": "two", "targets": "three"}]
  with pytest.raises(ValueError, match=r"a\.tsv:2: expected 2 tab-separated columns \(inputs, "
                                       r"targets\), found 1\.$"):
    text_tasks.read_examples(str(tsv))
  vocab = seqio.ByteVocabulary()
  text_tasks.inputs_task("ptjax_test_inputs_only", str(tsv), vocab)
  assert text_tasks.inputs_only_file("ptjax_test_inputs_only", "infer") == str(tsv)
  labelled = tmp_path / "b.jsonl"
  labelled.write_text('{"inputs": "x", "targets": "y"}\n')
  text_tasks.inputs_task("ptjax_test_inputs_only", str(labelled), vocab)  # Re-registered.
  assert text_tasks.inputs_only_file("ptjax_test_inputs_only", "infer") is None


# --- Rank classification on the user's task ----------------------------------------------

def expected_rank(world, texts, labels):
  """(best label, its score) per input from `inference.score` of every label, computed here."""
  model, variables = _model(world["checkpoint"], world["prompt"])
  vocab = vocabularies.t5_vocabulary(world["vocab"])
  options = np.zeros((len(labels), LENGTHS["targets"]), np.int32)
  for i, label in enumerate(labels):
    ids = list(vocab.encode(label)) + [1]
    options[i, :len(ids)] = ids
  scores = []
  for start in range(0, len(texts), BATCH):
    chunk = texts[start:start + BATCH]
    tokens = encode(world, chunk)
    per_label = [np.asarray(inference.score(model, variables, np.tile(option, (BATCH, 1)),
                                            tokens)) for option in options]
    scores.append(np.stack(per_label, axis=1)[:len(chunk)])
  scores = np.concatenate(scores)
  assert not np.allclose(scores, scores[:, :1])  # The labels score differently.
  return [labels[k] for k in scores.argmax(axis=1)], scores.max(axis=1)


@pytest.mark.parametrize("run", ["eval", "infer"])
def test_rank_classification_with_class_labels_picks_the_best_scored_label(run, world,
                                                                          tmp_path):
  model_dir = tmp_path / run
  run_cli(task_args(world, model_dir, run, "--gin.RANK_CLASSIFICATION=True",
                    f"--gin.CLASS_LABELS={LABELS!r}"))
  rows = rows_of(model_dir, run)
  labels, scores = expected_rank(world, world["inputs"], LABELS)
  assert [r["prediction"] for r in rows] == labels
  np.testing.assert_allclose([r["score"] for r in rows], scores, rtol=1e-5, atol=1e-5)
  if run == "eval":
    metrics = json.load(open(model_dir / "eval" / "ptjax_text_task" / "step_0.metrics.json"))
    assert metrics["illegal_predictions"] == 0
    targets = [r["target"] for r in rows]
    assert metrics["accuracy"] == pytest.approx(100 * np.mean(np.array(labels) ==
                                                              np.array(targets)))


def test_rank_classification_of_an_inputs_only_file(world, tmp_path):
  infer_file = tmp_path / "unlabeled.jsonl"
  write_inputs(infer_file, INPUTS)
  run_cli(infer_args(world, tmp_path / "run", infer_file, "--gin.RANK_CLASSIFICATION=True",
                     f"--gin.CLASS_LABELS={LABELS!r}"))
  rows = rows_of(tmp_path / "run", "infer")
  labels, scores = expected_rank(world, INPUTS, LABELS)
  assert [r["prediction"] for r in rows] == labels
  np.testing.assert_allclose([r["score"] for r in rows], scores, rtol=1e-5, atol=1e-5)


def test_decoded_predictions_outside_class_labels_are_counted(world, tmp_path):
  model_dir = tmp_path / "free"
  run_cli(task_args(world, model_dir, "eval", f"--gin.CLASS_LABELS={LABELS!r}"))
  rows = rows_of(model_dir, "eval")
  metrics = json.load(open(model_dir / "eval" / "ptjax_text_task" / "step_0.metrics.json"))
  assert metrics["illegal_predictions"] == sum(r["prediction"] not in LABELS for r in rows)


def test_rank_classification_without_label_words_fails_in_one_line(world, tmp_path):
  args = [sys.executable, "-m", "ptjax.main",
          *task_args(world, tmp_path / "run", "eval", "--gin.RANK_CLASSIFICATION=True")]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: RANK_CLASSIFICATION=True but task ptjax_text_task has no known label words: set "
      "CLASS_LABELS=[...] (the words its targets use), or RANK_CLASSIFICATION=False to decode.")
  assert not (tmp_path / "run" / "eval").exists()  # Refused before any weights load.
