"""Evaluation of the paper's tasks through the CLI (in-process, TFDS mock data)."""

import json
import os

import gin
import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds
from absl import flags

from conftest import INLINE_CKPT, ROOT, shared_fixture
from ptjax import main as cli


@pytest.fixture(scope="module")
def t5_tasks():
  import ptjax.data.tasks as tasks
  vocab_path = shared_fixture("t5_vocab/sentencepiece.model")
  tasks.register_all(seqio.SentencePieceVocabulary(vocab_path, 100))
  return vocab_path


def run_cli(argv):
  """`python -m ptjax.main ARGV` in this process (so TFDS mock data applies)."""
  gin.clear_config()
  flags.FLAGS.unparse_flags()
  flags.FLAGS(cli.rewrite_gin_args(["ptjax.main", *argv]))
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    cli.main([])
  finally:
    os.chdir(cwd)


def common(model_dir, vocab_path, task):
  return ["--gin_file=gin/models/t5_1_1_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{shared_fixture(INLINE_CKPT)}'",
          "--gin.BATCH_SIZE=4", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 6}"]


def test_eval_cli_on_mocked_superglue_writes_predictions_metrics_and_illegal_count(
    t5_tasks, tmp_path):
  prompt = np.random.default_rng(0).uniform(-0.5, 0.5, (5, 8)).astype(np.float32)
  np.save(tmp_path / "prompt.npy", prompt)
  model_dir = tmp_path / "eval_cb"
  with tfds.testing.mock_data(num_examples=6):
    run_cli(common(model_dir, t5_tasks, "pt_super_glue_cb_v102_taskless") + [
        "--gin_file=gin/runs/eval.gin", "--gin.PROMPT_LENGTH=5",
        f"--gin.PROMPT_FILE='{tmp_path}/prompt.npy'"])
  folder = model_dir / "eval" / "pt_super_glue_cb_v102_taskless"
  rows = [json.loads(l) for l in open(folder / "step_0.jsonl")]
  assert len(rows) == 6 and rows[0]["input"].startswith("hypothesis: ")
  metrics = json.load(open(folder / "step_0.metrics.json"))
  assert set(metrics) >= {"loss", "accuracy", "macro_f1", "illegal_predictions"}
  labels = {"entailment", "contradiction", "neutral"}
  illegal = sum(r["prediction"] not in labels for r in rows)
  assert metrics["illegal_predictions"] == illegal  # A random tiny model: mostly illegal.
  assert metrics["accuracy"] == pytest.approx(
      100 * sum(r["prediction"] == r["target"] for r in rows) / 6)
  # A standalone eval writes only its own files: no best.json, its own metrics.jsonl.
  assert not (folder / "best.json").exists() and not (model_dir / "metrics.jsonl").exists()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(model_dir / "eval"))
  logged = [json.loads(l) for l in open(model_dir / "eval" / "metrics.jsonl")]
  assert logged[-1]["kind"] == "eval" and logged[-1]["accuracy"] == metrics["accuracy"]


def test_rank_classification_never_predicts_an_illegal_label(t5_tasks, tmp_path):
  model_dir = tmp_path / "rank"
  with tfds.testing.mock_data(num_examples=6):
    run_cli(common(model_dir, t5_tasks, "pt_super_glue_rte_v102_taskless") + [
        "--gin_file=gin/runs/eval.gin", "--gin.PROMPT_LENGTH=0",
        "--gin.RANK_CLASSIFICATION=True"])
  folder = model_dir / "eval" / "pt_super_glue_rte_v102_taskless"
  rows = [json.loads(l) for l in open(folder / "step_0.jsonl")]
  assert {r["prediction"] for r in rows} <= {"entailment", "not_entailment"}
  assert json.load(open(folder / "step_0.metrics.json"))["illegal_predictions"] == 0


def test_rank_classification_refuses_labels_longer_than_the_targets(t5_tasks, tmp_path,
                                                                    capsys):
  # `entailment` is 4 T5 pieces + EOS, `not_entailment` 5 + EOS: with 4 target tokens
  # ranking would score prefixes.
  with tfds.testing.mock_data(num_examples=6), pytest.raises(SystemExit):
    run_cli(common(tmp_path / "short", t5_tasks, "pt_super_glue_rte_v102_taskless") + [
        "--gin_file=gin/runs/eval.gin", "--gin.PROMPT_LENGTH=0",
        "--gin.RANK_CLASSIFICATION=True",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}"])
  err = capsys.readouterr().err
  assert ("Label 'entailment' of pt_super_glue_rte_v102_taskless is 5 target tokens with EOS, "
          "more than TASK_FEATURE_LENGTHS['targets'] = 4") in err
  assert "--gin.TASK_FEATURE_LENGTHS=\"{'inputs': 32, 'targets': 6}\"" in err
  assert not (tmp_path / "short" / "eval").exists()  # Refused before evaluating anything.


def test_prompt_design_prepends_instruction_and_shots(t5_tasks, tmp_path):
  model_dir = tmp_path / "design"
  with tfds.testing.mock_data(num_examples=6):
    run_cli(common(model_dir, t5_tasks, "pt_super_glue_boolq_v102_taskless") + [
        "--gin_file=gin/runs/prompt_design.gin", "--gin.INSTRUCTION='Answer True or False.'",
        "--gin.NUM_SHOTS=2", "--gin.TASK_FEATURE_LENGTHS={'inputs': 256, 'targets': 4}"])
  folder = model_dir / "eval" / "pt_super_glue_boolq_v102_taskless"
  rows = [json.loads(l) for l in open(folder / "step_0.jsonl")]
  first = rows[0]["input"].split(" ;; ")  # PromptDesign's separator survives tokenisation.
  assert first[0] == "Answer True or False." and len(first) == 4
  assert first[1].startswith("passage: ") and first[1].endswith((" True", " False"))
  assert first[3].startswith("passage: ")


def test_eval_on_a_mixture_scores_each_task_and_the_average(t5_tasks, tmp_path, capsys):
  model_dir = tmp_path / "mix"
  with tfds.testing.mock_data(num_examples=4):
    run_cli(common(model_dir, t5_tasks, "pt_glue_mrpc_from_qqp_zeroshot_v002_taskless") + [
        "--gin_file=gin/runs/eval.gin", "--gin.PROMPT_LENGTH=0",
        "--gin.RANK_CLASSIFICATION=True"])
  for task in ("pt_glue_qqp_v002_taskless", "pt_glue_mrpc_from_qqp_v002_taskless"):
    metrics = json.load(open(model_dir / "eval" / task / "step_0.metrics.json"))
    assert {"f1", "accuracy"} <= set(metrics)
  qqp = json.load(open(model_dir / "eval" / "pt_glue_qqp_v002_taskless" / "step_0.metrics.json"))
  mrpc = json.load(open(model_dir / "eval" / "pt_glue_mrpc_from_qqp_v002_taskless" /
                        "step_0.metrics.json"))
  rows = [json.loads(l) for l in open(model_dir / "eval" / "pt_glue_mrpc_from_qqp_v002_taskless"
                                      / "step_0.jsonl")]
  # Rank classification picks among QQP's label words (what a QQP prompt says), scored as
  # MRPC's: `duplicate` reads `equivalent`.
  assert {r["prediction"] for r in rows} <= {"not_duplicate", "duplicate"}
  read = [r["prediction"].replace("duplicate", "equivalent") == r["target"] for r in rows]
  assert mrpc["accuracy"] == pytest.approx(100 * np.mean(read))
  assert mrpc["illegal_predictions"] == 0
  want = ((qqp["f1"] + qqp["accuracy"]) / 2 + (mrpc["f1"] + mrpc["accuracy"]) / 2) / 2
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed["average_score"] == pytest.approx(want)
  assert printed["pt_glue_qqp_v002_taskless/accuracy"] == pytest.approx(qqp["accuracy"])
