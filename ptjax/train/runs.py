"""Setting up a run: the frozen model loaded and the prompt initialised, variables split
into trainable / frozen and placed on the mesh, the sharded train state, metric logs.
Shared by training (`trainer`) and evaluation (`evaluation`)."""

import dataclasses
import io
import json
import os
import re
import socket
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
import optax
from flax import traverse_util
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer import record_writer

from ptjax import files, prompts
from ptjax.checkpoints import load_checkpoint
from ptjax.checkpoints.validate import resolve_dtype
from ptjax.model import T5, T5Config, init_params, param_axes, param_shapes
from ptjax.prompts.initializers import needs_embedding
from ptjax.train import optim, partitioning
from ptjax.train.state import TrainState


@dataclasses.dataclass
class Run:
  """A model with its variables placed on the mesh, split into what trains and what not."""
  model: T5
  config: T5Config
  mesh: jax.sharding.Mesh
  frozen: Any
  frozen_shardings: Any
  trainable: Any
  trainable_shardings: Any


def _global(tree: Any, shardings: Any) -> Any:
  """Host arrays (identical on every process) -> global jax.Arrays with `shardings`."""
  return jax.tree.map(
      lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx: np.asarray(x)[idx]),
      tree, shardings)


EMBEDDING = "token_embedder/embedding"


def _shardings(model_config: T5Config, mesh: jax.sharding.Mesh, prompt_length: int) -> dict:
  shardings = {"params": partitioning.logical_sharding(mesh, param_axes(model_config),
                                                      param_shapes(model_config))}
  if prompt_length:
    shardings["prompt"] = {"prompt": partitioning.logical_sharding(
        mesh, jax.sharding.PartitionSpec(*prompts.PROMPT_AXES))}
  return shardings


def param_dtypes(model_config: T5Config, trainable: Sequence[str], dtype: str,
                 trainable_dtype: str = "float32") -> dict:
  """{param name: dtype}: `dtype` for the frozen parameters, `trainable_dtype` (float32:
  ptjax trains float32 weights whatever the restore dtype; T5X would train in it) for the
  trainable ones."""
  names = traverse_util.flatten_dict(param_axes(model_config), sep="/")
  patterns = [re.compile(p) for p in trainable]
  return {name: trainable_dtype if any(p.fullmatch(f"params/{name}") for p in patterns)
          else dtype for name in names}


def _prompt(model_config: T5Config, prompt_length: int, prompt_init: Optional[Callable],
            seed: int, embedding: Callable[[], Any]) -> np.ndarray:
  """The initial prompt [P, embed] float32; `embedding()` is called only by initialisers
  that use it (`initializers.needs_embedding`). Every process computes the same (same seed)."""
  init = prompt_init or prompts.random_uniform()
  shape = (prompt_length, model_config.emb_dim)
  table = embedding() if needs_embedding(init) else None
  return np.asarray(init(jax.random.PRNGKey(seed), shape, table), np.float32)


def setup_run(model_config: T5Config, initial_checkpoint_path: Optional[str],
              prompt_length: int, prompt_init: Optional[Callable], trainable: Sequence[str],
              mesh: jax.sharding.Mesh, seed: int = 0, dtype: str = "float32",
              trainable_dtype: str = "float32") -> Run:
  """Loads the frozen checkpoint straight into the run's shardings (each process reads only
  the blocks its devices hold, one parameter at a time: `load_checkpoint(shardings=...)`),
  or builds a seeded random model (None: smoke runs only), and initialises the prompt.

  `dtype` ('float32' or 'bfloat16', T5X's RestoreCheckpointConfig.dtype) is the dtype of
  the FROZEN parameters on the devices; trainable parameters (TRAINABLE regexes, e.g. model
  tuning) are always float32, whatever `dtype`. The prompt is float32. A prompt initialiser
  that uses the embedding (sampled vocab, class labels, text) gets it read alone from the
  checkpoint, in its parameter's dtype, as the model sees it; others read nothing more.
  `trainable_dtype`: evaluation, where nothing trains, passes `dtype` (a bare model's
  weights sit in the "trainable" slot of its state).
  """
  shardings = _shardings(model_config, mesh, prompt_length)
  train_sh, frozen_sh = optim.split_trainable(shardings, trainable)  # Fails before reading.
  dtypes = param_dtypes(model_config, trainable, dtype, trainable_dtype)
  if initial_checkpoint_path is None:
    print("INITIAL_CHECKPOINT_PATH is None: the frozen model is randomly initialised.",
          flush=True)
    host = traverse_util.flatten_dict(init_params(model_config, jax.random.PRNGKey(seed)),
                                      sep="/")
    host = {k: np.asarray(v).astype(resolve_dtype(dtypes[k])) for k, v in host.items()}
    params = _global(traverse_util.unflatten_dict(host, sep="/"), shardings["params"])
    embedding = lambda: host[EMBEDDING]
  else:
    _, params = load_checkpoint(initial_checkpoint_path, model_config, dtype=dtypes,
                                shardings=shardings["params"])
    embedding = lambda: load_checkpoint(initial_checkpoint_path, model_config,
                                        dtype={EMBEDDING: dtypes[EMBEDDING]},
                                        names=[EMBEDDING])[1]["token_embedder"]["embedding"]
  variables = {"params": params}
  if prompt_length:
    prompt = _prompt(model_config, prompt_length, prompt_init, seed, embedding)
    variables["prompt"] = _global({"prompt": prompt}, shardings["prompt"])
    model = prompts.PromptT5(model_config, prompt_length=prompt_length)
  else:
    model = T5(model_config)
  train_vars, frozen_vars = optim.split_trainable(variables, trainable)
  return Run(model, model_config, mesh, frozen_vars, frozen_sh, train_vars, train_sh)


def build_run(model_config: T5Config, params: Any, prompt_length: int,
              prompt_init: Optional[Callable], trainable: Sequence[str],
              mesh: jax.sharding.Mesh, seed: int = 0) -> Run:
  """Initialises the prompt (from the given frozen host params), splits and shards
  variables: params already on the host (benchmarks, tests); `setup_run` loads a
  checkpoint without ever holding it whole."""
  shardings = _shardings(model_config, mesh, prompt_length)
  variables = {"params": params}
  if prompt_length:
    model = prompts.PromptT5(model_config, prompt_length=prompt_length)
    variables["prompt"] = {"prompt": _prompt(
        model_config, prompt_length, prompt_init, seed,
        lambda: params["token_embedder"]["embedding"])}
  else:
    model = T5(model_config)
  train_vars, frozen_vars = optim.split_trainable(variables, trainable)
  train_sh, frozen_sh = optim.split_trainable(shardings, trainable)
  return Run(model, model_config, mesh, _global(frozen_vars, frozen_sh), frozen_sh,
             _global(train_vars, train_sh), train_sh)


def init_state(run: Run, optimizer: optax.GradientTransformation,
               seed: int = 0, step: int = 0) -> tuple[TrainState, TrainState]:
  """(state, state_shardings); the optimizer state is created already sharded; the step
  counter starts at `step` (the initial checkpoint's, as T5X)."""
  create = lambda t: TrainState.create(t, optimizer, seed, step)
  abstract = jax.eval_shape(create, run.trainable)
  scalar = partitioning.replicated(run.mesh)
  shardings = TrainState(
      step=scalar, trainable=run.trainable_shardings,
      opt_state=optim.opt_state_shardings(abstract.opt_state, abstract.trainable,
                                          run.trainable_shardings, scalar),
      rng=scalar)
  return jax.jit(create, out_shardings=shardings)(run.trainable), shardings


class MetricLog:
  """Progress lines on stdout and JSONL + TensorBoard scalars in MODEL_DIR (host 0 only).

  TensorBoard events are framed by TensorBoard's own record writer and written through
  `ptjax.files` (so a gs:// MODEL_DIR on an emulator gets them too; TensorFlow's writer
  only talks to Google): one event file per kind (`train/`, `eval/`), appended one record
  batch at a time (gs://: the object rewritten whole).
  """

  def __init__(self, model_dir: str, path: Optional[str] = None):
    """`path`: the JSONL file (default MODEL_DIR/metrics.jsonl; a standalone eval keeps its
    own, so it never adds rows to a training run's)."""
    self.enabled = jax.process_index() == 0
    self.path = path or files.join(model_dir, "metrics.jsonl")
    self._events = {}
    self._model_dir = model_dir

  def scalars(self, kind: str, step: int, values: Mapping[str, float]):
    if not self.enabled:
      return
    files.append_line(self.path, json.dumps({"kind": kind, "step": step, **values}))
    # Metric names with '/' (mixture tasks) are TensorBoard groups; JSONL keeps them as is.
    events = [event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=name, simple_value=float(value))]))
              for name, value in values.items()]
    if kind not in self._events:
      self._events[kind] = files.join(self._model_dir, kind, f"events.out.tfevents."
                                      f"{time.time():.0f}.{socket.gethostname()}.{os.getpid()}.v2")
      events.insert(0, event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    buffer = io.BytesIO()
    writer = record_writer.RecordWriter(buffer)
    for event in events:
      writer.write(event.SerializeToString())
    files.append_bytes(self._events[kind], buffer.getvalue())

  def line(self, text: str, progress=None):
    """Prints `text` on host 0; through `progress` (a console.Progress) when a bar is shown,
    so the bar is redrawn below it."""
    if self.enabled:
      if progress is not None:
        progress.write(text)
      else:
        print(text, flush=True)
