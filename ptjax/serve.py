"""Mixed-task serving (the paper's Figure 2): one frozen model loaded once, any number of
named prompts, and batches whose rows belong to different tasks answered in one forward
pass each (`prompts.MultiPromptT5`).

Python:
  server = PromptServer(config, "ptjax/assets/...", {"boolq": "/runs/boolq",
                        "rte": "rte.npy"}, vocabulary)
  server.answer([{"task": "boolq", "inputs": "..."}, {"task": "rte", "inputs": "..."}])
CLI (gin/runs/serve.gin): JSONL requests {"task": ..., "inputs": ...} in, the same
objects with "prediction" and "score" added out.
"""

import contextlib
import functools
import json
import sys
from typing import Any, Mapping, Optional, Sequence, Union

import jax
import numpy as np
import seqio

from ptjax import prompts
from ptjax.checkpoints import load_checkpoint
from ptjax.model import T5Config, inference

PromptSource = Union[str, np.ndarray]


class PromptServer:
  """Answers requests of many tasks with one frozen model and a prompt per task.

  Inputs are tokenized with `vocabulary`, given EOS and padded to `max_input_length`
  (one compiled program for every batch); batches have `batch_size` rows.
  """

  def __init__(self, model_config: T5Config, checkpoint: str,
               task_prompts: Mapping[str, PromptSource], vocabulary: seqio.Vocabulary, *,
               batch_size: int = 32, max_input_length: int = 512,
               max_decode_length: int = 16, params: Optional[Any] = None):
    if not task_prompts:
      raise ValueError("PromptServer needs at least one prompt: {task name: .npy, PEFT "
                       "adapter folder, ptjax run folder or [P, embed] array}.")
    self.params = params if params is not None else load_checkpoint(
        checkpoint, model_config, dtype="float32")[1]
    self.tasks = list(task_prompts)
    arrays = [prompts.load_prompt(p) if isinstance(p, str) else np.asarray(p, np.float32)
              for p in task_prompts.values()]
    for task, array in zip(self.tasks, arrays):
      if array.shape[-1] != model_config.emb_dim:
        raise ValueError(f"Prompt for {task!r} is {array.shape}; the model's embed size is "
                         f"{model_config.emb_dim}.")
    self.prompt_table = prompts.stack_prompts(arrays)
    self.vocabulary = vocabulary
    self.batch_size, self.max_input_length = batch_size, max_input_length
    self.model = prompts.MultiPromptT5(model_config)
    self._generate = jax.jit(functools.partial(inference.generate, self.model,
                                               max_decode_length=max_decode_length))

  def _tokens(self, text: str) -> np.ndarray:
    return np.asarray(list(self.vocabulary.encode(text))[:self.max_input_length - 1] + [1],
                      np.int32)  # EOS.

  def answer(self, requests: Sequence[Mapping[str, str]]) -> list[dict]:
    """[{'task', 'inputs', ...}] -> the same dicts with 'prediction' and 'score' (the
    greedy answer's log-likelihood); rows of any tasks share each forward pass."""
    for i, r in enumerate(requests):
      if r.get("task") not in self.tasks:
        raise ValueError(f"Request {i} asks for task {r.get('task')!r}; this server has "
                         f"prompts for {self.tasks}.")
      if not isinstance(r.get("inputs"), str):
        raise ValueError(f"Request {i} has no 'inputs' string: {dict(r)}.")
    texts, scores = self.decode([self._tokens(r["inputs"]) for r in requests],
                                [r["task"] for r in requests])
    return [{**r, "prediction": t, "score": s} for r, t, s in zip(requests, texts, scores)]

  def decode(self, token_rows: Sequence[np.ndarray],
             tasks: Sequence[str]) -> tuple[list[str], list[float]]:
    """Already tokenized inputs (each [length] ids ending in EOS, length <=
    max_input_length), row i under the prompt of tasks[i] -> (greedy texts, their
    log-likelihoods). For a task's own preprocessed examples (sentinels, task indices)."""
    texts, scores = [], []
    for start in range(0, len(token_rows), self.batch_size):
      chunk = token_rows[start:start + self.batch_size]
      tokens = np.zeros((self.batch_size, self.max_input_length), np.int32)
      ids = np.zeros((self.batch_size,), np.int32)
      for row, (x, task) in enumerate(zip(chunk, tasks[start:start + self.batch_size])):
        if len(x) > self.max_input_length:
          raise ValueError(f"Input row {start + row} has {len(x)} tokens; this server takes "
                           f"at most max_input_length={self.max_input_length}.")
        tokens[row, :len(x)], ids[row] = x, self.tasks.index(task)
      variables = prompts.variables_for(self.params, self.prompt_table, ids)
      decoded, logp = jax.device_get(self._generate(variables, tokens))
      texts += [self.vocabulary.decode([int(t) for t in decoded[row] if t > 1])
                for row in range(len(chunk))]
      scores += [float(logp[row]) for row in range(len(chunk))]
    return texts, scores


def serve(*, model_config: T5Config, vocabulary: seqio.Vocabulary,
          initial_checkpoint_path: str, task_prompts: Mapping[str, str],
          requests: str = "-", output: str = "-", batch_size: int = 32,
          max_input_length: int = 512, max_decode_length: int = 16) -> int:
  """Reads JSONL requests (a path, or '-' for stdin) and writes JSONL answers (a path, or
  '-' for stdout). Returns the number answered."""
  server = PromptServer(model_config, initial_checkpoint_path, task_prompts, vocabulary,
                        batch_size=batch_size, max_input_length=max_input_length,
                        max_decode_length=max_decode_length)
  with contextlib.ExitStack() as files:
    source = sys.stdin if requests == "-" else files.enter_context(open(requests))
    rows = []
    for n, line in enumerate(source, 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f"{requests}:{n}: not a JSON object ({e.msg}); each line must be "
                           f'{{"task": ..., "inputs": ...}}.') from None
    answers = server.answer(rows)
    sink = sys.stdout if output == "-" else files.enter_context(open(output, "w"))
    sink.writelines(json.dumps(a) + "\n" for a in answers)
    sink.flush()
  return len(answers)
