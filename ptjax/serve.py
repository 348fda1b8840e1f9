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
    ids = list(self.vocabulary.encode(text))[:self.max_input_length - 1] + [1]  # EOS.
    return np.pad(np.asarray(ids, np.int32), (0, self.max_input_length - len(ids)))

  def answer(self, requests: Sequence[Mapping[str, str]]) -> list[dict]:
    """[{'task', 'inputs', ...}] -> the same dicts with 'prediction' and 'score' (the
    greedy answer's log-likelihood); rows of any tasks share each forward pass."""
    for i, r in enumerate(requests):
      if r.get("task") not in self.tasks:
        raise ValueError(f"Request {i} asks for task {r.get('task')!r}; this server has "
                         f"prompts for {self.tasks}.")
      if not isinstance(r.get("inputs"), str):
        raise ValueError(f"Request {i} has no 'inputs' string: {dict(r)}.")
    out = []
    for start in range(0, len(requests), self.batch_size):
      chunk = requests[start:start + self.batch_size]
      tokens = np.zeros((self.batch_size, self.max_input_length), np.int32)
      ids = np.zeros((self.batch_size,), np.int32)
      for row, r in enumerate(chunk):
        tokens[row], ids[row] = self._tokens(r["inputs"]), self.tasks.index(r["task"])
      variables = prompts.variables_for(self.params, self.prompt_table, ids)
      decoded, scores = jax.device_get(self._generate(variables, tokens))
      for row, r in enumerate(chunk):
        text = self.vocabulary.decode([int(t) for t in decoded[row] if t > 1])
        out.append({**r, "prediction": text, "score": float(scores[row])})
    return out


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
