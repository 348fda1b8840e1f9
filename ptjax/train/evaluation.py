"""Validation during training, and the `evaluate` / `infer` entry points.

An eval pass over a split: summed loss (jitted eval step) and, when asked, greedy
decodes scored with the task's metric functions. Every pass writes
`<out>/<task>/step_<n>.jsonl` (input, target, prediction) and `step_<n>.metrics.json`.
"""

import functools
import json
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from ptjax import prompts
from ptjax.data import pipeline
from ptjax.model import T5Config, inference
from ptjax.train import optim, partitioning
from ptjax.train.state import TrainState
from ptjax.train.step import LossConfig, build_steps


def _pad_rows(batch: dict, rows: int) -> dict:
  """Pads a short final batch with all-zero rows (zero loss weight, ignored in decoding)."""
  n = next(iter(batch.values())).shape[0]
  return {k: np.concatenate([v, np.zeros((rows - n,) + v.shape[1:], v.dtype)]) for k, v in
          batch.items()} if n < rows else batch


class Evaluator:
  """One eval pass = loss over the split (+ greedy decodes and task metrics)."""

  def __init__(self, run, steps, state_shardings: TrainState, task_name: str,
               feature_lengths: Mapping[str, int], batch_size: int, split: str,
               max_batches: Optional[int], decode: bool):
    self.setup, self.steps, self.task = run, steps, pipeline.get_task(task_name)
    self.feature_lengths, self.batch_size, self.split = feature_lengths, batch_size, split
    self.max_batches, self.decode = max_batches, decode
    self.vocabulary = self.task.output_features["targets"].vocabulary
    self.sharding = partitioning.batch_sharding(run.mesh)
    self.generate = jax.jit(functools.partial(
        inference.generate, run.model, max_decode_length=feature_lengths["targets"]))

  def _local_batches(self):
    local = self.batch_size // jax.process_count()
    data = pipeline.batches(self.task.name, self.feature_lengths, self.split, self.batch_size,
                            shuffle=False, repeat=False, drop_remainder=False,
                            host_index=jax.process_index(), host_count=jax.process_count())
    for i, batch in enumerate(data):
      if self.max_batches is not None and i >= self.max_batches:
        return
      yield _pad_rows(batch, local)

  def _text(self, tokens: np.ndarray) -> list[str]:
    return [self.vocabulary.decode([int(t) for t in row if t > 0]) for row in tokens]

  def run_pass(self, state: TrainState, step: int, out_dir: str) -> dict[str, float]:
    loss = tokens = 0.0
    rows = []
    variables = optim.merge(state.trainable, self.setup.frozen)
    for local in self._local_batches():
      batch = {k: jax.make_array_from_process_local_data(self.sharding, v)
               for k, v in local.items()}
      m = self.steps.eval(state, self.setup.frozen, batch)
      loss, tokens = loss + float(m["loss"]), tokens + float(m["tokens"])
      if self.decode:
        decoded, _ = self.generate(variables, batch["encoder_input_tokens"])
        gathered = multihost_utils.process_allgather(
            {"inputs": batch["encoder_input_tokens"], "targets": batch["decoder_target_tokens"],
             "predictions": decoded}, tiled=True)
        real = np.asarray(gathered["inputs"]).sum(-1) > 0
        for name in ("inputs", "targets", "predictions"):
          gathered[name] = self._text(np.asarray(gathered[name])[real])
        rows += [dict(zip(("input", "target", "prediction"), r)) for r in
                 zip(gathered["inputs"], gathered["targets"], gathered["predictions"])]
    metrics = {"loss": loss / max(tokens, 1.0)}
    if self.decode and rows:
      post = self.task.postprocess_fn or (lambda x, **_: x)
      targets = [post(r["target"], is_target=True) for r in rows]
      predictions = [post(r["prediction"], is_target=False) for r in rows]
      for fn in self.task.predict_metric_fns:
        metrics.update({k: float(v) for k, v in fn(targets, predictions).items()})
    if jax.process_index() == 0:
      folder = os.path.join(out_dir, self.task.name)
      os.makedirs(folder, exist_ok=True)
      with open(os.path.join(folder, f"step_{step}.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
      with open(os.path.join(folder, f"step_{step}.metrics.json"), "w") as f:
        json.dump({"step": step, "split": self.split, **metrics}, f)
    return metrics

  def run(self, state: TrainState, step: int, model_dir: str) -> dict[str, float]:
    return self.run_pass(state, step, os.path.join(model_dir, "eval"))


def _frozen_run(model_config, initial_checkpoint_path, prompt_length, prompt_file, model_dir,
                num_partitions, mesh_shape):
  from ptjax.train import trainer  # Shares setup_run; imported late to avoid a cycle.
  mesh = partitioning.make_mesh(num_partitions, mesh_shape)
  prompt_init = prompts.from_file(prompt_file or model_dir) if prompt_length else None
  trainable = optim.PROMPT_ONLY if prompt_length else optim.EVERYTHING
  run = trainer.setup_run(model_config, initial_checkpoint_path, prompt_length, prompt_init,
                          trainable, mesh)
  scalar = partitioning.replicated(mesh)
  state = TrainState(step=jnp.zeros((), jnp.int32), trainable=run.trainable, opt_state=None,
                     rng=jax.random.PRNGKey(0))
  shardings = TrainState(step=scalar, trainable=run.trainable_shardings, opt_state=None,
                         rng=scalar)
  steps = build_steps(run.model, None, mesh, shardings, run.frozen_shardings, LossConfig(),
                      dropout=False)
  return run, state, shardings, steps


def evaluate(*, model_dir: str, mixture_or_task_name: str,
             task_feature_lengths: Mapping[str, int], batch_size: int, model_config: T5Config,
             initial_checkpoint_path: str, prompt_length: int = 100,
             prompt_file: Optional[str] = None, num_partitions: int = 1,
             mesh_shape: Optional[Sequence[int]] = None, eval_split: str = "validation",
             eval_batches: Optional[int] = None, decode: bool = True,
             output_subdir: str = "eval") -> dict[str, float]:
  """Evaluates a frozen model + prompt (PROMPT_FILE: .npy, PEFT adapter or a run; default:
  the newest checkpoint in MODEL_DIR) on a task split; writes predictions and metrics."""
  run, state, shardings, steps = _frozen_run(model_config, initial_checkpoint_path,
                                             prompt_length, prompt_file, model_dir,
                                             num_partitions, mesh_shape)
  evaluator = Evaluator(run, steps, shardings, mixture_or_task_name, task_feature_lengths,
                        batch_size, eval_split, eval_batches, decode)
  metrics = evaluator.run_pass(state, 0, os.path.join(model_dir, output_subdir))
  if jax.process_index() == 0:
    print(json.dumps({"task": mixture_or_task_name, "split": eval_split, **metrics}), flush=True)
  return metrics


def infer(**kwargs) -> dict[str, float]:
  """Greedy predictions for a split, written to MODEL_DIR/infer/<task>/step_0.jsonl."""
  return evaluate(output_subdir="infer", **kwargs)
