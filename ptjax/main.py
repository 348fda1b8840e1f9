r"""ptjax entry point: gin files pick the run (train | eval | infer) and configure it.

  python -m ptjax.main --gin_file=gin/models/t5_1_1_lm100k_base.gin \
      --gin_file=gin/runs/prompt_tune.gin --gin_file=gin/prompts/class_labels.gin \
      --gin.MODEL_DIR="'/tmp/rte'" --gin.MIXTURE_OR_TASK_NAME="'my_task'"

`--gin.NAME=VALUE` is T5X's shorthand for `--gin_bindings='NAME = VALUE'`. Multi-host:
pass --coordinator_address, --num_processes and --process_id on every host, or
--initialize_distributed where JAX detects the cluster (Cloud TPU pod slices).
"""

import sys
from typing import Sequence

from absl import app, flags, logging

from ptjax import console  # Imports only the standard library.

_GIN_FILE = flags.DEFINE_multi_string(
    "gin_file", [], "Gin files, in any order: a path, or a name of ptjax's "
    "(runs/prompt_tune.gin, gin/models/t5_1_1_base.gin); see ptjax.train.gin_utils.")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Individual gin bindings.")
_GIN_IF_READ = flags.DEFINE_multi_string(
    "gin_bindings_if_read", [], "Bindings that a run which does not read them leaves alone "
    "(python -m ptjax.experiments run --set: one setting for a whole grid); every other "
    "binding the run does not read is an error.")
_GIN_SEARCH_PATHS = flags.DEFINE_list("gin_search_paths", [], "Folders for your own gin "
                                      "files' names (ptjax's files need none).")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data folder (local or "
                                     "gs://), as T5X's flag; default: TFDS_DATA_DIR or TFDS's.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, "
                                   "for multi-host runs (jax.distributed.initialize).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_TASK_MODULES = flags.DEFINE_multi_string(
    "task_module", ["ptjax.data.tasks", "ptjax.data.mini_tasks"],
    "Modules imported before gin parsing, to register "
    "seqio tasks (T5X's MIXTURE_OR_TASK_MODULE).")
_INITIALIZE_DISTRIBUTED = flags.DEFINE_bool(
    "initialize_distributed", False, "Multi-host without addresses: jax.distributed."
    "initialize() detects the cluster (Cloud TPU pod slices, SLURM, ...). Every host runs "
    "the same command (python -m ptjax.experiments launch writes such scripts).")
_NUM_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", None, "Simulated CPU devices (tests "
                                        "and laptops); with multi-host CPU runs, uses gloo.")

def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE` (T5X's convention)."""
  out = []
  for arg in argv:
    if arg.startswith("--gin."):
      name, _, value = arg[len("--gin."):].partition("=")
      out.append(f"--gin_bindings={name} = {value}")
    else:
      out.append(arg)
  return out


def _init_jax():
  import jax
  if _NUM_CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _NUM_CPU_DEVICES.value)
  if _COORDINATOR.value:
    if _NUM_CPU_DEVICES.value:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _INITIALIZE_DISTRIBUTED.value:
    jax.distributed.initialize()


def _parse_gin():
  import importlib

  from ptjax.train import gin_utils
  for module in _TASK_MODULES.value:
    importlib.import_module(module)
  gin_utils.parse(_GIN_FILE.value, _GIN_BINDINGS.value, _GIN_SEARCH_PATHS.value,
                  _GIN_IF_READ.value)


def main(argv: Sequence[str]):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax/seqio INFO chatter hides the progress.
    console.install_log_filter()  # An explicit --verbosity shows everything.
    console.silence_storage_retries()
  _init_jax()
  console.hide_tf_gpus()  # tf.data must not take the GPU memory JAX needs (as T5X).
  if _TFDS_DATA_DIR.value:
    import seqio
    seqio.set_tfds_data_dir_override(_TFDS_DATA_DIR.value)
  import gin
  from ptjax import files
  from ptjax.checkpoints import CheckpointError
  from ptjax.prompts import PromptFileError
  try:
    _parse_gin()
  except Exception as e:  # Any gin parse failure is a config problem: report it in a line.
    message = " ".join(str(e).split())
    kind = "" if type(e).__name__ == "GinConfigError" else f"{type(e).__name__}: "
    print(f"error: gin config: {kind}{message}", file=sys.stderr, flush=True)
    sys.exit(2)
  try:
    # Each run writes its config.gin itself, once its setup succeeded (a failed or
    # mistaken command never overwrites a finished run's files).
    from ptjax.train import entry
    gin.get_configurable(entry.execute)()  # With the gin files' bindings.
  except files.StorageError as e:  # Cloud storage unreachable: the path, the cause, the fix.
    message = str(e).split("\n  In call to configurable")[0].strip()  # gin's location.
    print(f"error: {message.rstrip('.')}; a rerun resumes training from its last checkpoint.",
          file=sys.stderr, flush=True)
    sys.exit(2)
  except OSError as e:  # Disk full, read-only or not a folder: the path and the cause.
    message = str(e).split("\n  In call to configurable")[0].strip()  # gin's location.
    print(f"error: cannot write or read a file: {message} (free space, or choose a "
          f"MODEL_DIR you can write)", file=sys.stderr, flush=True)
    sys.exit(2)
  except (ValueError, SyntaxError, CheckpointError, PromptFileError) as e:
    # One actionable line instead of a traceback; gin wraps errors with its location.
    message = str(e).split("\n  In call to configurable")[0].strip()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def run():
  console.quiet_startup()  # Before TensorFlow or JAX is imported.
  app.run(main, argv=rewrite_gin_args(sys.argv))


if __name__ == "__main__":
  run()
