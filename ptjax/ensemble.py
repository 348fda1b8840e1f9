"""Prompt ensembles (the paper's Table 3): N prompts of one task on one frozen model,
every example answered under every prompt in the same forward passes (the inputs
replicated, prompts [N, P, embed], `prompts.MultiPromptT5`), then a majority vote.

gin/runs/ensemble.gin: PROMPT_FILES (prompt runs, .npy files or PEFT adapters) on
MIXTURE_OR_TASK_NAME's validation split -> MODEL_DIR/ensemble.json with each prompt's
metrics, their average and best, and the ensemble's.
"""

import json
from typing import Mapping, Optional, Sequence

import numpy as np
import seqio

from ptjax import files
from ptjax.data import pipeline
from ptjax.model import T5Config, inference
from ptjax.prompts import multi
from ptjax.serve import PromptServer
from ptjax.train import evaluation


def evaluate(*, model_dir: str, mixture_or_task_name: str, prompt_files: Sequence[str],
             model_config: T5Config, initial_checkpoint_path: str,
             task_feature_lengths: Mapping[str, int], batch_size: int = 32,
             eval_split: str = "validation",
             max_eval_examples: Optional[int] = None,
             decoding: inference.DecodingConfig = inference.DecodingConfig()) -> dict:
  """Scores each prompt alone and their majority vote; writes and returns
  {'members': [metrics], 'average': {...}, 'best': {...}, 'ensemble': {...},
   'predictions': [{'members': [text per prompt], 'vote': text} per example]}.

  Per batch, `batch_size` examples x N prompts rows run through the frozen model at once;
  every member decodes as `decoding` says (DECODING_METHOD, gin/decoding/*.gin).
  """
  if len(prompt_files) < 2:
    raise ValueError(f"An ensemble needs at least 2 prompts; PROMPT_FILES has "
                     f"{len(prompt_files)}.")
  task = pipeline.get_task(mixture_or_task_name)
  if isinstance(task, seqio.Mixture):
    raise ValueError(f"{mixture_or_task_name} is a mixture; ensembles are scored per task.")
  examples = pipeline.eval_examples(mixture_or_task_name, task_feature_lengths, eval_split,
                                    max_eval_examples)
  names = [f"prompt_{k}" for k in range(len(prompt_files))]
  server = PromptServer(model_config, initial_checkpoint_path, dict(zip(names, prompt_files)),
                        task.output_features["inputs"].vocabulary,
                        batch_size=batch_size * len(names),
                        max_input_length=task_feature_lengths["inputs"],
                        max_decode_length=task_feature_lengths["targets"],
                        decoding=decoding)
  # The task's own token ids (a sentinel or task index included), example-major: each
  # batch holds whole examples under all N prompts.
  answers, _ = server.decode([ex["inputs"] for ex in examples for _ in names],
                             [n for _ in examples for n in names])
  texts = [answers[k::len(names)] for k in range(len(names))]
  members = [evaluation.score_texts(task, examples, t) for t in texts]
  votes = multi.majority_vote(texts)
  ensemble = evaluation.score_texts(task, examples, votes)
  metrics = [m for m in ensemble if m != "illegal_predictions"]
  results = {
      "task": mixture_or_task_name, "split": eval_split, "examples": len(examples),
      "prompt_files": list(prompt_files), "members": members,
      "average": {m: float(np.mean([x[m] for x in members])) for m in metrics},
      "best": {m: float(max(x[m] for x in members)) for m in metrics},
      "ensemble": ensemble,
      "predictions": [{"members": [t[i] for t in texts], "vote": vote}
                      for i, vote in enumerate(votes)]}
  files.write_json(files.join(model_dir, "ensemble.json"), results, indent=1)
  print(json.dumps({k: results[k] for k in ("task", "average", "best", "ensemble")}),
        flush=True)
  return results
