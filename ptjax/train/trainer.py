"""`train`: the plain function gin files configure for prompt and model tuning (as T5X).

Load the frozen model (T5X or HF checkpoint), add the prompt collection, split the
variables into trainable / frozen by TRAINABLE regexes, shard both over a ('data',
'model') mesh (`runs`), then loop: batch -> jitted step -> periodic eval, orbax
checkpoint, metrics. Resumes automatically from the newest checkpoint in MODEL_DIR.
"""

import dataclasses
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np
import optax

from ptjax import console, files, prompts
from ptjax.checkpoints import checkpoint_step, layout, validate
from ptjax.checkpoints.t5x import save_t5x
from ptjax.checkpoints.train_state import RunCheckpoints
from ptjax.data import metrics as metrics_lib, pipeline
from ptjax.model import T5Config, param_shapes
from ptjax.train import evaluation, gin_utils, optim, partitioning, utils
from ptjax.train.runs import MetricLog, Run, init_state, setup_run
from ptjax.train.state import TrainState
from ptjax.train.step import LossConfig, build_steps


def _improved(metric: str, value: float, best: Optional[float]) -> bool:
  lower = metrics_lib.lower_is_better(metric)
  return best is None or (value < best if lower else value > best)


@dataclasses.dataclass(frozen=True)
class Trainer:
  """How one optimisation step is taken (T5X's `trainer.Trainer`).

  Attributes:
    num_microbatches: split each global batch into this many microbatches and sum their
      gradients inside the one jitted step before one update (T5X's meaning; how XXL fits
      a small slice). None or 1: the whole batch at once. BATCH_SIZE must divide by it.
    learning_rate: constant learning rate (LEARNING_RATE); None = the paper's for the
      method: 0.3 for prompt tuning, 0.001 (T5X's fine-tuning rate) for model tuning.
    optimizer: factory `(learning_rate=...) -> optax.GradientTransformation`; default
      the paper's Adafactor (`optim.paper_adafactor`).
    loss: summed cross-entropy + z-loss (Z_LOSS, LABEL_SMOOTHING).
    log_every: steps between train metric lines (T5X's stats period).
  """
  num_microbatches: Optional[int] = None
  learning_rate: Optional[float] = None
  optimizer: Callable[..., optax.GradientTransformation] = optim.paper_adafactor
  loss: LossConfig = LossConfig()
  log_every: int = 100

  def __post_init__(self):
    if self.num_microbatches is not None and (not isinstance(self.num_microbatches, int)
                                              or self.num_microbatches <= 0):
      raise ValueError(f"trainer.Trainer.num_microbatches={self.num_microbatches!r} must be "
                       f"a positive integer or None.")
    if self.learning_rate is not None and not self.learning_rate > 0:
      raise ValueError(f"LEARNING_RATE={self.learning_rate!r} must be > 0.")
    if not isinstance(self.log_every, int) or self.log_every <= 0:
      raise ValueError(f"trainer.Trainer.log_every={self.log_every!r} must be > 0.")


def resolve_steps(start: int, total_steps: Optional[int],
                  relative_steps: Optional[int]) -> int:
  """The last step of the run, absolute (T5X's TRAIN_STEPS).

  `start`: the initial checkpoint's step. `total_steps` (TRAIN_STEPS) is absolute, as in
  T5X: checkpoint_1100000 with TRAIN_STEPS=1_150_000 trains 50,000 steps.
  `relative_steps` (TRAIN_STEPS_RELATIVE) counts from the initial checkpoint's step. ptjax
  differs from T5X here: T5X counts from the step the run (re)started at, so a preempted
  run trains longer; ptjax's end step never moves. Exactly one of the two must be given.
  """
  if (total_steps is None) == (relative_steps is None):
    raise ValueError("Set exactly one of TRAIN_STEPS (absolute, T5X: the initial "
                     "checkpoint's step included) and TRAIN_STEPS_RELATIVE (steps after the "
                     f"initial checkpoint's step {start:,}).")
  if relative_steps is not None:
    if not isinstance(relative_steps, int) or relative_steps <= 0:
      raise ValueError(f"TRAIN_STEPS_RELATIVE={relative_steps!r} must be a positive integer.")
    return start + relative_steps
  if not isinstance(total_steps, int) or total_steps <= start:
    raise ValueError(
        f"TRAIN_STEPS={total_steps!r} is not after the initial checkpoint's step {start:,}: "
        f"TRAIN_STEPS is absolute, as in T5X (e.g. --gin.TRAIN_STEPS={start + 1000} for "
        f"1,000 steps), or use TRAIN_STEPS_RELATIVE.")
  return total_steps


def _check_frozen_dtype(model_config: T5Config, dtype: str,
                       prompt: Optional[utils.PromptConfig], trainable: Sequence[str]):
  """FROZEN_DTYPE applies to the frozen weights only: refused when nothing is frozen (it
  would be a setting nobody reads). From shapes alone, before any weights load."""
  if dtype == "float32":
    return
  variables = {"params": param_shapes(model_config)}
  if prompt is not None:
    variables["prompt"] = {"prompt": 0}
  if not jax.tree.leaves(optim.split_trainable(variables, trainable)[1]):
    raise ValueError(f"FROZEN_DTYPE={dtype!r} (utils.RestoreCheckpointConfig.dtype), but "
                     f"TRAINABLE={list(trainable)} trains every weight, so nothing is frozen "
                     f"and what trains stays float32 in ptjax (T5X would train in {dtype}); "
                     f"remove FROZEN_DTYPE.")


def train(*, model_dir: str, model_config: T5Config,
          train_dataset_cfg: utils.DatasetConfig,
          train_eval_dataset_cfg: Optional[utils.DatasetConfig] = None,
          checkpoint_cfg: utils.CheckpointConfig = utils.CheckpointConfig(),
          partitioner: partitioning.PjitPartitioner = partitioning.PjitPartitioner(),
          trainer: Trainer = Trainer(),
          total_steps: Optional[int] = None, relative_steps: Optional[int] = None,
          eval_period: int = 1000, random_seed: Optional[int] = 0,
          prompt: Optional[utils.PromptConfig] = utils.PromptConfig(),
          trainable: Optional[Sequence[str]] = None,
          evaluator: evaluation.EvalConfig = evaluation.EvalConfig(),
          best_metric: str = "loss") -> dict:
  """Prompt-tunes a frozen T5 (Lester et al., 2021), or model-tunes it (`prompt=None`).

  T5X's `train` in shape: datasets, checkpoints, partitioner and trainer are grouped
  configs (`utils`); steps are absolute (see `resolve_steps`). Only the variables matching
  `trainable` (regexes over 'collection/path'; None: the prompt, or everything when there
  is no prompt) get gradients and optimizer state. Evaluates `train_eval_dataset_cfg` every
  `eval_period` steps and at the end; the best evaluation by `best_metric` is exported to
  MODEL_DIR/best (the paper's early stopping). Resumes from the newest checkpoint in
  MODEL_DIR/checkpoints. When model weights train, the final model is also written as a T5X
  checkpoint `MODEL_DIR/checkpoint_<last step>`.

  Returns the last evaluation's metrics and `trainable_parameters`.
  Raises ValueError (one line) for a bad setting, before any weights load.
  """
  if not isinstance(eval_period, int) or eval_period <= 0:
    raise ValueError(f"EVAL_PERIOD={eval_period!r} must be a positive integer.")
  if checkpoint_cfg.save.period is None or checkpoint_cfg.save.period <= 0:
    raise ValueError(f"SAVING_PERIOD={checkpoint_cfg.save.period!r} must be a positive "
                     f"integer (utils.SaveCheckpointConfig.period).")
  data_cfg = train_dataset_cfg
  eval_cfg = train_eval_dataset_cfg or dataclasses.replace(data_cfg, split="validation",
                                                           shuffle=False)
  pipeline.refuse_packing(data_cfg.pack)  # Bad settings fail before any weights load.
  if trainer.num_microbatches and data_cfg.batch_size % trainer.num_microbatches:
    raise ValueError(f"trainer.Trainer.num_microbatches={trainer.num_microbatches} does not "
                     f"divide BATCH_SIZE={data_cfg.batch_size}.")
  pipeline.get_task(data_cfg.mixture_or_task_name)
  pipeline.get_task(eval_cfg.mixture_or_task_name)
  if random_seed is None:
    random_seed = int(np.random.SeedSequence().entropy % 2**31)
    print(f"RANDOM_SEED=None: this run's seed is {random_seed}.", flush=True)
  if prompt is not None and prompt.length == 0:  # Would train every weight instead.
    raise ValueError("PROMPT_LENGTH=0 in a prompt-tuning run trains no prompt: give the "
                     "prompt's length (>= 1), or use gin/runs/model_tune.gin to tune the "
                     "model.")
  prompt = utils.prompt_or_none(prompt)
  restore = checkpoint_cfg.restore
  start_step = checkpoint_step(restore.path)
  last_step = resolve_steps(start_step, total_steps, relative_steps)
  if trainable is None:
    trainable = optim.PROMPT_ONLY if prompt is not None else optim.EVERYTHING
  _check_frozen_dtype(model_config, restore.dtype, prompt, trainable)
  learning_rate = trainer.learning_rate or (0.3 if prompt is not None else 0.001)
  optimizer = trainer.optimizer(learning_rate=learning_rate)
  prompt_init = _prompt_init(prompt)
  mesh = partitioner.mesh()
  run = setup_run(model_config, restore.path, prompt.length if prompt else 0, prompt_init,
                  trainable, mesh, random_seed, dtype=restore.dtype)
  state, state_shardings = init_state(run, optimizer, random_seed, start_step)
  steps = build_steps(run.model, optimizer, mesh, state_shardings, run.frozen_shardings,
                      trainer.loss, dropout=model_config.dropout_rate > 0,
                      num_microbatches=trainer.num_microbatches)
  log = MetricLog(model_dir)
  trainable_parameters = sum(x.size for x in jax.tree.leaves(run.trainable))
  total = trainable_parameters + sum(x.size for x in jax.tree.leaves(run.frozen))
  log.line(f"Trainable parameters: {trainable_parameters:,} of {total:,} "
           f"({100 * trainable_parameters / total:.3g}%).")
  checkpoints = RunCheckpoints(files.join(model_dir, "checkpoints"),
                               checkpoint_cfg.save.period, checkpoint_cfg.save.keep)
  latest = checkpoints.latest_step()
  if latest is not None and latest > last_step:
    checkpoints.close()
    raise ValueError(f"{model_dir}/checkpoints/{latest} is past TRAIN_STEPS ({last_step:,}): "
                     f"raise TRAIN_STEPS or use a new MODEL_DIR.")
  base_model = _real(restore.path)  # The frozen model, named in exported PEFT adapters.
  identity = {"mixture_or_task_name": data_cfg.mixture_or_task_name,
              "initial_checkpoint_path": base_model,
              "prompt_length": prompt.length if prompt else 0, "trainable": list(trainable)}
  if layout.has_layers(validate.flat(run.trainable.get("params", {}))):
    # Trained layer weights (and their optimizer state) are saved in the run's layout; a
    # prompt is the same in both, so a prompt run may resume with either.
    identity["scan_layers"] = model_config.scan_layers
  _check_same_run(model_dir, identity, resuming=latest is not None)
  # The newest readable checkpoint: an unreadable one (a torn write) is skipped with a line.
  saved_step, restored = checkpoints.restore_latest(_saved(state, start_step), log=log.line)
  current = saved_step or start_step
  if current > start_step:
    state = TrainState(**{k: restored[k] for k in ("step", "trainable", "opt_state", "rng")})
    log.line(f"Resumed from {model_dir}/checkpoints/{current}.")
  log.line(console.run_span_line(current, last_step))
  evaluator_ = evaluation.Evaluator(run, steps, eval_cfg, evaluator)
  known = evaluator_.metric_names()
  if best_metric not in known:
    checkpoints.close()
    raise ValueError(f"BEST_METRIC={best_metric!r} is not a metric of "
                     f"{eval_cfg.mixture_or_task_name}; it has {sorted(known)}.")
  if jax.process_index() == 0:  # Setup succeeded: now the run's config is worth keeping.
    gin_utils.write_config(files.join(model_dir, "config.gin"))
  data = pipeline.batches(data_cfg.mixture_or_task_name, data_cfg.task_feature_lengths,
                          data_cfg.split, data_cfg.batch_size, shuffle=data_cfg.shuffle,
                          seed=random_seed if data_cfg.seed is None else data_cfg.seed,
                          use_cached=data_cfg.use_cached, skip_batches=current - start_step,
                          host_index=jax.process_index(), host_count=jax.process_count())
  batch_sharding = partitioning.batch_sharding(mesh)
  best = _read_best(model_dir)
  metrics = _last_eval(log.path, last_step) if current == last_step else {}
  batch_size = data_cfg.batch_size
  progress = console.Progress(last_step - start_step, current - start_step,
                              enabled=jax.process_index() == 0)
  guard = FiniteGuard(model_dir, checkpoints, learning_rate, model_config.dtype)
  tic, tic_step = time.perf_counter(), current
  for step in range(current + 1, last_step + 1):
    batch = {k: jax.make_array_from_process_local_data(batch_sharding, v)
             for k, v in next(data).items()}
    state, train_metrics = steps.train(state, run.frozen, batch)
    guard.add(step, train_metrics["nonfinite"])  # Checked at the next sync point.
    progress.update(step - start_step)  # Host-side only: no sync with the device.
    syncs = [step % n == 0 for n in (trainer.log_every, eval_period,
                                     checkpoint_cfg.save.period)]
    if any(syncs) or step == last_step:
      guard.check(progress)  # Nothing non-finite is logged, evaluated, saved or exported.
    if step % trainer.log_every == 0 or step == last_step:
      values = {k: float(v) for k, v in train_metrics.items()}  # The only sync point.
      elapsed = time.perf_counter() - tic
      rate = (step - tic_step) / max(elapsed, 1e-9)
      scalars = {"loss": values["loss"] / max(values["tokens"], 1.0),
                 "z_loss": values["z_loss"] / max(values["tokens"], 1.0),
                 "steps_per_second": rate, "examples_per_second": rate * batch_size}
      log.scalars("train", step, scalars)
      progress.update(step - start_step, loss=scalars["loss"])
      log.line(console.step_log_line(step, scalars, rate * batch_size), progress)
      tic, tic_step = time.perf_counter(), step
    if step % eval_period == 0 or step == last_step:
      metrics = evaluator_.run(state, step, model_dir)  # Refuses non-finite metrics.
      log.scalars("eval", step, metrics)
      log.line(f"eval step {step:,}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
               progress)
      if best_metric in metrics and _improved(best_metric, metrics[best_metric],
                                              best and best["value"]):
        best = {"step": step, "metric": best_metric, "value": metrics[best_metric]}
        _export(run, state, files.join(model_dir, "best"), best, base_model)
    if step % checkpoint_cfg.save.period == 0 or step == last_step:
      _save_numpy_prompt(state, model_dir, step)  # First, as the official Checkpointer.
      checkpoints.save(step, _saved(state, start_step), force=True)
  progress.close()
  checkpoints.close()
  _export(run, state, model_dir, None, base_model)
  _export_params(run, state, model_dir, last_step)
  return {**metrics, "trainable_parameters": trainable_parameters}


def _prompt_init(prompt: Optional[utils.PromptConfig]) -> Optional[Callable]:
  if prompt is None:
    return None
  if prompt.file is not None:
    if prompt.init is not None and getattr(prompt.init, "path", None) != prompt.file:
      raise ValueError("PROMPT_FILE and another prompt initialiser (PROMPT_INIT, "
                       "gin/prompts/*.gin) are both set: training starts from one; drop the "
                       "other.")
    return prompt.init or prompts.from_file(prompt.file)
  return prompt.init


class NonFiniteError(ValueError):
  """A non-finite loss or update: the run stops before saving anything from that step on."""


class FiniteGuard:
  """Stops the run at the first non-finite train step, without a host sync per step.

  The jitted step never applies a non-finite update (it keeps the previous variables and
  optimizer state and returns `nonfinite` = 1), so the state stays finite; the flags are
  read at the loop's existing sync points (log, eval, save, end), before anything is
  written, and the first bad step is reported with the likely causes and the last good
  checkpoint (which a rerun resumes from)."""

  def __init__(self, model_dir: str, checkpoints: RunCheckpoints, learning_rate: float,
               dtype: str):
    self._pending, self._dir, self._checkpoints = [], model_dir, checkpoints
    self._learning_rate, self._dtype = learning_rate, dtype

  def add(self, step: int, flag: jax.Array):
    self._pending.append((step, flag))

  def check(self, progress=None):
    if not self._pending:
      return
    flags = np.asarray(jax.device_get([flag for _, flag in self._pending]))
    steps = [step for step, _ in self._pending]
    self._pending.clear()
    if not flags.any():
      return
    bad = steps[int(np.argmax(flags))]
    if progress is not None:
      progress.close()
    last = self._checkpoints.latest_step()
    self._checkpoints.close()
    where = (f"the last good checkpoint is {self._dir}/checkpoints/{last} (a rerun "
             f"resumes from it)" if last is not None else "no checkpoint was saved")
    raise NonFiniteError(
        f"training stopped: the loss or the update is not finite at step {bad:,} (nothing "
        f"from that step on was saved; {where}). Likely causes: a learning rate too high "
        f"(LEARNING_RATE={self._learning_rate:g}) or half precision "
        f"(ACTIVATION_DTYPE={self._dtype!r}).")


def _real(path: Optional[str]) -> Optional[str]:
  """A local path with links resolved (the same checkpoint reached through another clone or
  link is the same run); gs:// and None as they are."""
  return path if path is None else files.abspath(path)


_IDENTITY_DEFAULTS = {"scan_layers": False}  # run.json from before SCAN_LAYERS: unscanned.


def _check_same_run(model_dir: str, identity: dict, resuming: bool) -> None:
  """MODEL_DIR/run.json names the experiment its checkpoints belong to. Resuming another
  experiment's checkpoints (another task, frozen model, prompt length or TRAINABLE) would
  report their results as this one's: refused in one line."""
  path = files.join(model_dir, "run.json")
  if files.exists(path):
    earlier = files.read_json(path)
    changed = sorted(k for k in identity
                     if earlier.get(k, _IDENTITY_DEFAULTS.get(k)) != identity[k])
    if resuming and changed == ["scan_layers"]:
      raise ValueError(
          f"{model_dir}/checkpoints hold trained layers saved with SCAN_LAYERS "
          f"(T5Config.scan_layers)={not identity['scan_layers']}; this run has "
          f"{identity['scan_layers']}: set it back to resume, or use a new MODEL_DIR.")
    if resuming and changed:
      raise ValueError(
          f"{model_dir} holds checkpoints of another run ({', '.join(f'{k}={earlier.get(k)!r}' for k in changed)}; "
          f"this one has {', '.join(f'{k}={identity[k]!r}' for k in changed)}): use a new "
          f"MODEL_DIR.")
    if not changed:
      return
  if jax.process_index() == 0:
    files.write_json(path, identity, indent=1)


def _last_eval(metrics_path: str, step: int) -> dict:
  """The finished run's last evaluation (metrics.jsonl), reported when there is nothing left
  to train: running a finished command again gives its result."""
  found = {}
  if files.exists(metrics_path):
    for record in files.read_jsonl(metrics_path):
      if record.get("kind") == "eval" and record.get("step") == step:
        found = {k: v for k, v in record.items() if k not in ("kind", "step")}
  return found


def _saved(state: TrainState, start_step: int) -> dict:
  # data_position: batches consumed, counted from the initial checkpoint's step.
  return {"step": state.step, "trainable": state.trainable, "opt_state": state.opt_state,
          "rng": state.rng, "data_position": state.step - start_step}


def _read_best(model_dir: str) -> Optional[dict]:
  path = files.join(model_dir, "best", "best.json")
  return files.read_json(path) if files.exists(path) else None


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
    path = save_t5x(params, files.join(model_dir, f"checkpoint_{step}"), step=step)
    print(f"Model weights (T5X checkpoint): {path}", flush=True)


def _gathered_prompt(state: TrainState) -> Optional[np.ndarray]:
  """The whole prompt on every process (a collective: every process calls it); None in a
  run without one."""
  prompt = state.trainable.get("prompt", {}).get("prompt")
  if prompt is None:
    return None
  return np.asarray(jax.experimental.multihost_utils.process_allgather(prompt, tiled=True))


def _save_numpy_prompt(state: TrainState, model_dir: str, step: int):
  """The prompt at `step` in prompt-tuning's official numpy layout,
  MODEL_DIR/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt (np.save
  format, no extension; `step` absolute, as T5X's), written whole by process 0. Kept for
  every save, whatever checkpoint_cfg.save.keep: as the official code's."""
  value = _gathered_prompt(state)
  if value is not None and jax.process_index() == 0:
    prompts.save_numpy_checkpoint(value, model_dir, step)


def _export(run: Run, state: TrainState, folder: str, record: Optional[dict],
            base_model: Optional[str] = None):
  """prompt.npy + a PEFT adapter (+ best.json) of the current prompt, from host 0.
  `base_model`: the frozen model (INITIAL_CHECKPOINT_PATH), the adapter's
  base_model_name_or_path."""
  value = _gathered_prompt(state)
  if value is None or jax.process_index() != 0:
    return
  prompts.save_npy(value, files.join(folder, "prompt.npy"))
  prompts.save_peft(value, files.join(folder, "peft_adapter"),
                    num_layers=run.config.num_encoder_layers, num_heads=run.config.num_heads,
                    base_model=base_model)
  if record is not None:
    files.write_json(files.join(folder, "best.json"), record)
