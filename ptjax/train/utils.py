"""The run's settings as a few grouped objects, under T5X's names (`t5x.utils`).

gin binds these once (ptjax/gin/defaults.gin wires the T5X macros into them), the run
functions (`trainer.train`, `evaluation.evaluate`) take them as arguments:

  utils.DatasetConfig            one dataset: task, lengths, split, batch, shuffle, seed
                                 (T5X's scopes: train/, train_eval/; eval and infer unscoped)
  utils.CheckpointConfig         save = utils.SaveCheckpointConfig (period, keep, dtype)
                                 restore = utils.RestoreCheckpointConfig (path, mode, dtype)
  utils.PromptConfig             ptjax's prompt group: length, initialiser, file
                                 (model tuning is prompt tuning without it)

Where a field has T5X's name it has T5X's meaning; where ptjax differs the docstring says so.
"""

import dataclasses
import importlib
from typing import Callable, Mapping, Optional


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """One dataset of a run (T5X's `utils.DatasetConfig`).

  Attributes:
    mixture_or_task_name: a registered seqio task or mixture (MIXTURE_OR_TASK_NAME).
    task_feature_lengths: {'inputs': int, 'targets': int} in tokens, EOS included
      (TASK_FEATURE_LENGTHS); the prompt's positions come on top of 'inputs'.
    split: the split read ('train', 'validation', 'test', ...).
    batch_size: global batch size in examples (BATCH_SIZE), over all hosts.
    shuffle: shuffle the examples (train only; evaluation reads in order).
    seed: the shuffle seed; None = the run's RANDOM_SEED. ptjax differs from T5X here:
      T5X's None is a new seed at every (re)start; ptjax keeps one seed so a resumed run
      sees exactly the batches an uninterrupted one would.
    use_cached: read seqio's offline-cached version of the task (USE_CACHED_TASKS;
      the cache's directory is seqio's `--seqio_additional_cache_dirs` / the task's
      registration). Every task ptjax registers is uncached, so True fails for them.
    pack: example packing; refused (a prompt is prepended to every example).
    module: a module to import before the task is looked up (MIXTURE_OR_TASK_MODULE):
      how a user's own tasks get registered without a gin file.
  """
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str
  batch_size: int
  shuffle: bool = True
  seed: Optional[int] = None
  use_cached: bool = False
  pack: bool = False
  module: Optional[str] = None

  def __post_init__(self):
    lengths = self.task_feature_lengths
    if (not isinstance(lengths, Mapping) or set(lengths) != {"inputs", "targets"}
        or not all(isinstance(v, int) and v > 0 for v in lengths.values())):
      raise ValueError(f"TASK_FEATURE_LENGTHS={lengths!r}: expected {{'inputs': int > 0, "
                       f"'targets': int > 0}} (tokens, EOS included).")
    if not isinstance(self.batch_size, int) or self.batch_size <= 0:
      raise ValueError(f"BATCH_SIZE={self.batch_size!r} must be a positive integer.")
    import_task_module(self.module)


def import_task_module(module: Optional[str]) -> None:
  """Imports MIXTURE_OR_TASK_MODULE (its tasks register with seqio); ptjax's built-in tasks
  stay registered. One line if it cannot be imported."""
  if not module:
    return
  try:
    importlib.import_module(module)
  except ImportError as e:
    if module.split(".")[:2] in (["prompt_tuning", "data"], ["t5", "data"]):
      # The official task modules (not installable with current JAX): their task names
      # resolve to ptjax's built-in tasks (ptjax.data.tasks' official aliases).
      print(f"MIXTURE_OR_TASK_MODULE={module!r} is not installed; its task names resolve to "
            f"ptjax's built-in tasks (docs/coming_from_t5x.md, 'Official task names').",
            flush=True)
      return
    raise ValueError(f"MIXTURE_OR_TASK_MODULE={module!r} cannot be imported ({e}); put its "
                     f"folder on PYTHONPATH or install it.") from None


@dataclasses.dataclass(frozen=True)
class SaveCheckpointConfig:
  """When run checkpoints are written (T5X's `utils.SaveCheckpointConfig`).

  Attributes:
    period: save every `period` steps (absolute step numbers, as T5X) and at the last
      step (SAVING_PERIOD). Must be > 0.
    keep: how many run checkpoints to keep; None = all (T5X's default). ptjax's run
      checkpoints hold only what trains (the prompt, its optimizer state), never the
      frozen model.
    dtype: the saved dtype; ptjax saves float32 only (what trains is float32).
  """
  period: int = 1000
  keep: Optional[int] = 3
  dtype: str = "float32"

  def __post_init__(self):
    if self.dtype != "float32":
      raise ValueError(f"utils.SaveCheckpointConfig.dtype={self.dtype!r}: ptjax saves what "
                       f"trains in float32 only; remove the binding.")


@dataclasses.dataclass(frozen=True)
class RestoreCheckpointConfig:
  """The frozen model to start from (T5X's `utils.RestoreCheckpointConfig`).

  Attributes:
    path: a T5X checkpoint (`checkpoint_<step>` folder or file, local or gs://) or a
      Hugging Face folder (INITIAL_CHECKPOINT_PATH); None = a seeded random model (smoke
      runs only, said at start).
    mode: 'specific' (this checkpoint), the only mode ptjax has; T5X's 'latest' / 'all'
      scan a folder of checkpoints, which a frozen model never needs.
    dtype: dtype of the frozen weights once read; 'float32' (default) or 'bfloat16'.
  """
  path: Optional[str] = None
  mode: str = "specific"
  dtype: str = "float32"

  def __post_init__(self):
    if self.mode != "specific":
      raise ValueError(f"utils.RestoreCheckpointConfig.mode={self.mode!r}: ptjax restores "
                       f"one named checkpoint ('specific'); set INITIAL_CHECKPOINT_PATH to "
                       f"it.")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"FROZEN_DTYPE (utils.RestoreCheckpointConfig.dtype)={self.dtype!r}: use 'float32' "
                       f"or 'bfloat16'.")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """T5X's `utils.CheckpointConfig`: what is saved, and what the run starts from."""
  save: SaveCheckpointConfig = SaveCheckpointConfig()
  restore: RestoreCheckpointConfig = RestoreCheckpointConfig()


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  """The soft prompt (Lester et al., 2021, section 2): `length` vectors of the model's
  width prepended to the encoder input.

  Attributes:
    length: prompt positions P (PROMPT_LENGTH; the paper's default 100). 0 = no prompt (the
      bare model: evaluating a model-tuned checkpoint). Training refuses 0: model tuning
      is gin/runs/model_tune.gin, never a prompt run with its prompt set to nothing.
    init: initialiser `(rng, [P, d] shape, embedding [V, d]) -> [P, d]` (PROMPT_INIT, set
      by gin/prompts/*.gin); None = random uniform in [-0.5, 0.5] (the paper's default).
    file: a trained prompt to use (PROMPT_FILE: .npy [P, d], PEFT adapter folder, ptjax run
      folder or run checkpoint). Evaluation and inference read it (None: the newest
      checkpoint in MODEL_DIR); training refuses it with `init` also set, and otherwise
      starts from it (as gin/prompts/from_file.gin).
  """
  length: int = 100
  init: Optional[Callable] = None
  file: Optional[str] = None

  def __post_init__(self):
    if not isinstance(self.length, int) or self.length < 0:
      raise ValueError(f"PROMPT_LENGTH={self.length!r} must be an integer >= 0.")
    if self.length == 0 and (self.init is not None or self.file is not None):
      raise ValueError("PROMPT_LENGTH=0 (no prompt) with a prompt initialiser or PROMPT_FILE: "
                       "set PROMPT_LENGTH to the prompt's length, or drop the prompt settings.")


def prompt_or_none(prompt: Optional[PromptConfig]) -> Optional[PromptConfig]:
  """None for no prompt (None, or PROMPT_LENGTH=0)."""
  return None if prompt is None or prompt.length == 0 else prompt


def required():
  """Value of a macro the run needs and nobody set: evaluated only when read (gin's
  `%gin.REQUIRED` fails even for macros a run never reads)."""
  import gin
  name = gin.current_scope_str().split("/")[-1]
  raise ValueError(f"{name} is not set: pass --gin.{name}=... (or set it in a gin file).")
