"""Table 3's ensemble run: each member scores what its own evaluation run scores, and the
ensemble is the majority vote of the members' predictions."""

import json

import numpy as np
import pytest

from ptjax import assets, ensemble
from ptjax.data import mini_tasks  # noqa: F401 (registers the mini tasks)
from ptjax.model import config as presets
from ptjax.prompts import multi
from ptjax.train import evaluation, utils

LENGTHS = {"inputs": 160, "targets": 4}


# The sentinel variant adds <extra_id_0> after tokenizing: members must read the task's
# token ids, not its re-tokenized text, to score what their own runs score.
@pytest.mark.parametrize("TASK", ["pt_mini_rte", "pt_mini_rte_taskless_sentinel"])
def test_ensemble_members_equal_separate_evaluations_and_vote(tmp_path, TASK):
  config = presets.preset("mini_large")
  rng = np.random.default_rng(0)
  files = []
  for k in range(3):
    path = tmp_path / f"p{k}.npy"
    np.save(path, rng.uniform(-0.5, 0.5, (4, config.emb_dim)).astype(np.float32))
    files.append(str(path))
  out = ensemble.evaluate(model_dir=str(tmp_path / "ens"), mixture_or_task_name=TASK,
                          prompt_files=files, model_config=config,
                          initial_checkpoint_path=assets.MINI_T5_CHECKPOINT,
                          task_feature_lengths=LENGTHS, batch_size=4, max_eval_examples=12)
  predictions = []
  for k, path in enumerate(files):
    alone = evaluation.evaluate(
        model_dir=str(tmp_path / f"alone{k}"), model_config=config,
        dataset_cfg=utils.DatasetConfig(TASK, LENGTHS, "validation", 4, shuffle=False),
        restore_checkpoint_cfg=utils.RestoreCheckpointConfig(assets.MINI_T5_CHECKPOINT),
        prompt=utils.PromptConfig(length=4, file=path),
        evaluator=evaluation.EvalConfig(max_examples=12))
    for metric in ("accuracy", "macro_f1"):
      assert out["members"][k][metric] == pytest.approx(alone[metric])
    rows = [json.loads(l) for l in open(tmp_path / f"alone{k}" / "eval" / TASK / "step_0.jsonl")]
    predictions.append([r["prediction"] for r in rows])
    assert [p["members"][k] for p in out["predictions"]] == predictions[-1]
  assert len({tuple(p) for p in predictions}) > 1  # The prompts disagree somewhere.
  votes = multi.majority_vote(predictions)
  assert [p["vote"] for p in out["predictions"]] == votes
  targets = [r["target"] for r in rows]
  assert out["ensemble"]["accuracy"] == pytest.approx(
      100 * np.mean([v == t for v, t in zip(votes, targets)]))
  assert out["average"]["accuracy"] == pytest.approx(
      np.mean([m["accuracy"] for m in out["members"]]))
  assert out["best"]["accuracy"] == max(m["accuracy"] for m in out["members"])
  assert json.load(open(tmp_path / "ens" / "ensemble.json"))["ensemble"] == out["ensemble"]
  with pytest.raises(ValueError, match="at least 2 prompts"):
    ensemble.evaluate(model_dir=str(tmp_path / "one"), mixture_or_task_name=TASK,
                      prompt_files=files[:1], model_config=config,
                      initial_checkpoint_path=assets.MINI_T5_CHECKPOINT,
                      task_feature_lengths=LENGTHS)
