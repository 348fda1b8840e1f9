"""`train`: the plain function gin files configure for prompt and model tuning (as T5X).

Load the frozen model (T5X or HF checkpoint), add the prompt collection, split the
variables into trainable / frozen by TRAINABLE regexes, shard both over a ('data',
'model') mesh (`runs`), then loop: batch -> jitted step -> periodic eval, orbax
checkpoint, metrics. Resumes automatically from the newest checkpoint in MODEL_DIR.
"""

import json
import os
import time
from typing import Callable, Mapping, Optional, Sequence

import jax
import numpy as np
import optax

from ptjax import prompts
from ptjax.checkpoints.t5x import save_t5x
from ptjax.checkpoints.train_state import RunCheckpoints
from ptjax.data import metrics as metrics_lib, pipeline
from ptjax.model import T5Config
from ptjax.train import evaluation, optim, partitioning
from ptjax.train.runs import MetricLog, Run, init_state, setup_run
from ptjax.train.state import TrainState
from ptjax.train.step import LossConfig, build_steps


def _improved(metric: str, value: float, best: Optional[float]) -> bool:
  lower = metrics_lib.lower_is_better(metric)
  return best is None or (value < best if lower else value > best)


def train(*, model_dir: str, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
          batch_size: int, train_steps: int, model_config: T5Config,
          initial_checkpoint_path: str, prompt_length: int = 100,
          prompt_init: Optional[Callable] = None, trainable: Sequence[str] = optim.PROMPT_ONLY,
          optimizer: Optional[optax.GradientTransformation] = None,
          loss: LossConfig = LossConfig(), num_partitions: int = 1,
          mesh_shape: Optional[Sequence[int]] = None, save_every: int = 1000,
          keep_checkpoints: int = 3, eval_every: int = 1000, eval_split: str = "validation",
          max_eval_examples: Optional[int] = None, decode_in_eval: bool = True,
          rank_classification: bool = False,
          best_metric: str = "loss", log_every: int = 100, seed: int = 0,
          shuffle: bool = True, pack: bool = False,
          eval_mixture_or_task_name: Optional[str] = None) -> dict:
  """Prompt-tunes (or, with TRAINABLE=['.*'] and prompt_length=0, model-tunes) a frozen T5.

  Returns the last evaluation's metrics and `trainable_parameters`. Checkpoints hold only
  trained variables, optimizer state, step, RNG and data position; the frozen model is
  reloaded from `initial_checkpoint_path` on resume. When model weights train, the final
  model is also written as a T5X checkpoint, `MODEL_DIR/checkpoint_<train_steps>`.
  Evaluation uses `eval_mixture_or_task_name` when given (T5X's train_eval dataset: e.g.
  train on SQuAD, evaluate zero-shot on the MRQA sets), else the training mixture.
  """
  pipeline.refuse_packing(pack)  # Bad settings fail before any weights load.
  pipeline.get_task(mixture_or_task_name)
  eval_name = eval_mixture_or_task_name or mixture_or_task_name
  pipeline.get_task(eval_name)
  optimizer = optimizer or optim.paper_adafactor()
  mesh = partitioning.make_mesh(num_partitions, mesh_shape)
  run = setup_run(model_config, initial_checkpoint_path, prompt_length, prompt_init, trainable,
                  mesh, seed)
  state, state_shardings = init_state(run, optimizer, seed)
  steps = build_steps(run.model, optimizer, mesh, state_shardings, run.frozen_shardings, loss,
                      dropout=model_config.dropout_rate > 0)
  log = MetricLog(model_dir)
  trainable_parameters = sum(x.size for x in jax.tree.leaves(run.trainable))
  total = trainable_parameters + sum(x.size for x in jax.tree.leaves(run.frozen))
  log.line(f"Trainable parameters: {trainable_parameters:,} of {total:,} "
           f"({100 * trainable_parameters / total:.3g}%).")
  checkpoints = RunCheckpoints(os.path.join(model_dir, "checkpoints"), save_every,
                               keep_checkpoints)
  start = checkpoints.latest_step() or 0
  if start:
    restored = checkpoints.restore(start, _saved(state))
    state = TrainState(**{k: restored[k] for k in ("step", "trainable", "opt_state", "rng")})
    log.line(f"Resumed from {model_dir}/checkpoints/{start}.")
  evaluator = evaluation.Evaluator(run, steps, eval_name, task_feature_lengths,
                                   batch_size, eval_split, max_eval_examples, decode_in_eval,
                                   rank_classification)
  data = pipeline.batches(mixture_or_task_name, task_feature_lengths, "train", batch_size,
                          shuffle=shuffle, seed=seed, skip_batches=start,
                          host_index=jax.process_index(), host_count=jax.process_count())
  batch_sharding = partitioning.batch_sharding(mesh)
  best = _read_best(model_dir)
  metrics, tic, tic_step = {}, time.perf_counter(), start
  for step in range(start + 1, train_steps + 1):
    batch = {k: jax.make_array_from_process_local_data(batch_sharding, v)
             for k, v in next(data).items()}
    state, train_metrics = steps.train(state, run.frozen, batch)
    if step % log_every == 0 or step == train_steps:
      values = {k: float(v) for k, v in train_metrics.items()}  # The only sync point.
      elapsed = time.perf_counter() - tic
      rate = (step - tic_step) / max(elapsed, 1e-9)
      scalars = {"loss": values["loss"] / max(values["tokens"], 1.0),
                 "z_loss": values["z_loss"] / max(values["tokens"], 1.0),
                 "steps_per_second": rate, "examples_per_second": rate * batch_size}
      log.scalars("train", step, scalars)
      log.line(f"{progress_bar(step, train_steps)} step {step}/{train_steps}  "
               f"{rate:.2f} steps/s  {rate * batch_size:.1f} examples/s  "
               f"loss {scalars['loss']:.4f}  eta {(train_steps - step) / max(rate, 1e-9):.0f}s")
      tic, tic_step = time.perf_counter(), step
    if step % eval_every == 0 or step == train_steps:
      metrics = evaluator.run(state, step, model_dir)
      log.scalars("eval", step, metrics)
      log.line(f"eval step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
      if best_metric in metrics and _improved(best_metric, metrics[best_metric],
                                              best and best["value"]):
        best = {"step": step, "metric": best_metric, "value": metrics[best_metric]}
        _export(run, state, os.path.join(model_dir, "best"), best)
    if step % save_every == 0 or step == train_steps:
      checkpoints.save(step, _saved(state), force=True)
  checkpoints.close()
  _export(run, state, model_dir, None)
  _export_params(run, state, model_dir, train_steps)
  return {**metrics, "trainable_parameters": trainable_parameters}


def progress_bar(step: int, total: int, width: int = 20) -> str:
  """'[#######.............]  35%' for step of total."""
  done = width * step // max(total, 1)
  return f"[{'#' * done}{'.' * (width - done)}] {100 * step // max(total, 1):3d}%"


def _saved(state: TrainState) -> dict:
  return {"step": state.step, "trainable": state.trainable, "opt_state": state.opt_state,
          "rng": state.rng, "data_position": state.step}


def _read_best(model_dir: str) -> Optional[dict]:
  path = os.path.join(model_dir, "best", "best.json")
  return json.load(open(path)) if os.path.exists(path) else None


def _export_params(run: Run, state: TrainState, model_dir: str, step: int):
  """When model weights trained (model tuning, pre-training): the whole model as a T5X
  checkpoint `MODEL_DIR/checkpoint_<step>`, as T5X names it, so it can be the
  INITIAL_CHECKPOINT_PATH of the next run (e.g. LM adaptation after span corruption)."""
  if "params" not in state.trainable:
    return
  params = optim.merge(state.trainable, run.frozen)["params"]
  params = jax.tree.map(lambda x: np.asarray(
      jax.experimental.multihost_utils.process_allgather(x, tiled=True)), params)
  if jax.process_index() == 0:
    path = save_t5x(params, os.path.join(model_dir, f"checkpoint_{step}"), step=step)
    print(f"Model weights (T5X checkpoint): {path}", flush=True)


def _export(run: Run, state: TrainState, folder: str, record: Optional[dict]):
  """prompt.npy + a PEFT adapter (+ best.json) of the current prompt, from host 0."""
  prompt = state.trainable.get("prompt", {}).get("prompt")
  if prompt is None:
    return
  value = np.asarray(jax.experimental.multihost_utils.process_allgather(prompt, tiled=True))
  if jax.process_index() != 0:
    return
  os.makedirs(folder, exist_ok=True)
  prompts.save_npy(value, os.path.join(folder, "prompt.npy"))
  prompts.save_peft(value, os.path.join(folder, "peft_adapter"),
                    num_layers=run.config.num_encoder_layers, num_heads=run.config.num_heads)
  if record is not None:
    with open(os.path.join(folder, "best.json"), "w") as f:
      json.dump(record, f)
