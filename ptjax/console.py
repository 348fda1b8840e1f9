r"""A quiet, familiar console: startup without CUDA / oneDNN / absl noise, a tqdm bar, T5X-style
step lines.

What a plain `python -m ptjax.main ...` printed before its first own line on a CPU-only Linux
machine (TensorFlow 2.21, jax 0.10, seqio 0.0.20), and what this module does about each:

  WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
  I... port.cc:153] oneDNN custom operations are on. You may see slightly different
      numerical results ... To turn them off, set the environment variable
      `TF_ENABLE_ONEDNN_OPTS=0`.
  I... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
      (these three come twice: two of TensorFlow's shared libraries each carry a copy of absl
      and log from static initializers while `import tensorflow` runs, *before* TensorFlow
      reads TF_CPP_MIN_LOG_LEVEL, so that variable alone does not hide them)
  I... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU
      instructions ...                        (hidden by TF_CPP_MIN_LOG_LEVEL >= 1)
  E... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to
      cuInit: UNKNOWN ERROR (303)             (TensorFlow probing for a GPU when it first
      lists devices; hidden by TF_CPP_MIN_LOG_LEVEL = 3)
  W... dataset_providers.py:462] Using an uncached FunctionDataset for training is not
      recommended since it often results in insufficient shuffling on restarts ...
      (seqio, through absl logging: `HarmlessWarningFilter`)

`quiet_startup()` (first thing in ptjax.main, before TensorFlow or JAX is imported):

* TF_CPP_MIN_LOG_LEVEL=3 unless the user set it: TensorFlow's (and XLA's: jaxlib reads the
  same variable; JAX itself defaults it to 1) C++ INFO, WARNING and ERROR logs are hidden
  (FATAL still prints). Harmless here: TensorFlow only feeds tf.data / TFDS / TensorBoard,
  and a failure that matters raises a Python exception (tf.errors.*, XlaRuntimeError) with
  its message. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything, unfiltered.
* The lines TensorFlow's libraries log while `import tensorflow` runs, before that variable
  is read (oneDNN banner, cudart stub, on GPU hosts also "Unable to register cuDNN/cuFFT/
  cuBLAS factory" and "computation placer already registered", see tensorflow/tensorflow
  #62075), get the same treatment after the fact: a one-shot import hook sends the native
  stderr of that import through `native_line_dropped`, which drops an absl/TensorFlow log line
  exactly when TF_CPP_MIN_LOG_LEVEL would have (I >= 1, W >= 2, E >= 3, never F), plus absl's
  "All log messages before absl::InitializeLog() ..." notice. Every other line (Python
  warnings, tracebacks, anything unrecognised) passes through unchanged.
* TF_ENABLE_ONEDNN_OPTS is left alone. The banner's own advice (=0) would also silence it,
  but it swaps TensorFlow's CPU kernels; none of ptjax's numerics run in TensorFlow, yet
  there is no reason to change TensorFlow's behaviour to hide one line the hook drops.
* JAX_PLATFORMS is left alone, so a GPU/TPU is used wherever one exists. On a CPU-only
  machine no supported JAX (0.4.30 .. 0.10) prints a GPU-probe warning (the old "No GPU/TPU
  found, falling back to CPU" is gone); the two it still has, "An NVIDIA GPU may be present
  on this machine, but a CUDA-enabled jaxlib is not installed" and "A Google TPU may be
  present on this machine ...", fire only when accelerator device files exist, i.e. a
  machine whose accelerator would sit idle. They are kept on purpose: that is actionable
  (`pip install -U "jax[cuda12]"`), and JAX_PLATFORMS=cpu silences them for someone who
  means to run on the CPU.

`hide_tf_gpus()` (after quiet_startup, before any TensorFlow op runs): TensorFlow sees no GPU,
so tf.data never claims GPU memory JAX needs (T5X's train.py does the same). JAX is not
affected.

`HarmlessWarningFilter` / `install_log_filter()`: drops, below ERROR only, the seqio warnings
that every normal ptjax run triggers and that do not apply to it (see HARMLESS_WARNINGS).
ptjax.main should install it only when the user did not pass --verbosity.

`Progress`: a tqdm bar on an interactive terminal, nothing elsewhere. `step_log_line` and
`run_span_line`: the T5X-style lines of the run log.
"""

import argparse
import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from typing import Callable, Iterator, Mapping, MutableMapping, Optional, TextIO

# --------------------------------------------------------------------------------------------
# Startup.

TF_LOG_LEVEL_DEFAULT = "3"

_ABSL_PREINIT_NOTICE = ("WARNING: All log messages before absl::InitializeLog() is called are "
                        "written to STDERR")
# absl C++:   "I0000 00:00:1796049424.692979    3360 port.cc:153] ..."
# TF (older): "2023-10-09 13:36:23.355516: E tensorflow/.../cuda_dnn.cc:9342] ..."
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\] ")
_TF_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+: ([IWEF]) \S+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def tf_min_log_level(environ: Mapping[str, str] = os.environ) -> int:
  """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (0 when unset or not a number)."""
  try:
    return int(environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
  except ValueError:
    return 0


def native_line_dropped(line: str, min_log_level: int) -> bool:
  """Whether TF_CPP_MIN_LOG_LEVEL=`min_log_level` would have hidden this stderr line.

  Only absl/TensorFlow-formatted log lines of severity below `min_log_level` (I=0, W=1, E=2;
  FATAL never) and absl's pre-InitializeLog notice (when something is hidden at all) are
  dropped; continuation lines, Python output and anything else are kept.
  """
  if min_log_level <= 0:
    return False
  text = line.rstrip("\r\n")
  if text == _ABSL_PREINIT_NOTICE:
    return True
  match = _ABSL_LINE.match(text) or _TF_LINE.match(text)
  return bool(match) and _SEVERITY[match.group(1)] < min(min_log_level, 3)


@contextlib.contextmanager
def filtered_native_stderr(drop: Callable[[str], bool]) -> Iterator[None]:
  """Within the block, file descriptor 2 (what C++ libraries write to) goes to a temporary
  file; after it, every line for which `drop` is false is written to the real stderr, in
  order. A file, not a pipe: a library that logs a lot while holding the GIL cannot block.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      try:
        sys.stderr.flush()
      finally:
        os.dup2(saved, 2)
        os.close(saved)
      capture.seek(0)
      kept = [line for line in capture.read().splitlines(keepends=True)
              if not drop(line.decode("utf-8", "replace"))]
      if kept:
        os.write(2, b"".join(kept))


class _QuietLoader(importlib.abc.Loader):
  """Runs the wrapped loader's exec_module with the native stderr filtered."""

  def __init__(self, loader: importlib.abc.Loader, min_log_level: int):
    self._loader = loader
    self._min_log_level = min_log_level

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    # The module keeps its real loader (importlib already holds this one for the call).
    module.__loader__ = self._loader
    if module.__spec__ is not None:
      module.__spec__.loader = self._loader
    level = self._min_log_level
    with filtered_native_stderr(lambda line: native_line_dropped(line, level)):
      self._loader.exec_module(module)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
  """One-shot sys.meta_path hook: the first `import tensorflow` runs under _QuietLoader."""

  def __init__(self, name: str, min_log_level: int):
    self.name = name
    self.min_log_level = min_log_level

  def find_spec(self, fullname, path=None, target=None):
    if fullname != self.name:
      return None
    uninstall_import_filter()  # One shot; also keeps the lookup below from recursing.
    spec = importlib.util.find_spec(fullname)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
      return spec
    spec.loader = _QuietLoader(spec.loader, self.min_log_level)
    return spec


def install_import_filter(min_log_level: int, name: str = "tensorflow") -> bool:
  """Filters the native stderr of the first `import <name>` (see native_line_dropped).

  Does nothing (returns False) when `name` is already imported or nothing would be dropped.
  """
  uninstall_import_filter()
  if name in sys.modules or min_log_level <= 0:
    return False
  sys.meta_path.insert(0, _QuietImportFinder(name, min_log_level))
  return True


def uninstall_import_filter():
  sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietImportFinder)]


def quiet_startup(environ: MutableMapping[str, str] = os.environ, *,
                  filter_tensorflow_import: bool = True) -> dict[str, str]:
  """Call first, before TensorFlow or JAX is imported. Returns the variables it set.

  Sets TF_CPP_MIN_LOG_LEVEL=3 unless `environ` has it (whatever the user set wins), and,
  with `filter_tensorflow_import`, installs the one-shot hook that applies that level to the
  lines TensorFlow's libraries log during `import tensorflow` (see the module docstring).
  Touches neither JAX_PLATFORMS nor TF_ENABLE_ONEDNN_OPTS.
  """
  changed = {}
  if "TF_CPP_MIN_LOG_LEVEL" not in environ:
    environ["TF_CPP_MIN_LOG_LEVEL"] = changed["TF_CPP_MIN_LOG_LEVEL"] = TF_LOG_LEVEL_DEFAULT
  if filter_tensorflow_import:
    install_import_filter(tf_min_log_level(environ))
  return changed


def hide_tf_gpus() -> bool:
  """Makes TensorFlow (tf.data, TFDS, TensorBoard here) see no GPU; JAX still sees them all.

  Without it TensorFlow, on a GPU host, reserves most of each GPU's memory as soon as its
  runtime starts, memory JAX then lacks. Call after quiet_startup (it imports TensorFlow)
  and before any TensorFlow op runs; returns False when TensorFlow's devices were already
  initialized (too late to change; harmless on a CPU-only machine).
  """
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # "Visible devices cannot be modified after being initialized".
    return False
  return True


# --------------------------------------------------------------------------------------------
# Python logging.

# (logger-independent message template prefix, why it does not apply to ptjax). Matched
# against `record.msg` (the template before %-formatting), only below ERROR.
HARMLESS_WARNINGS = (
    ("Using an uncached FunctionDataset for training is not recommended",
     "seqio (dataset_providers.py) says this of every in-memory/function task it shuffles: "
     "on a restart the shuffle could replay or repeat data. ptjax seeds the shuffle and, on "
     "resume, skips exactly the batches already trained on (pipeline.batches(seed=, "
     "skip_batches=)), so a restart continues the same stream; caching is not needed."),
)


def silence_storage_retries() -> None:
  """gcsfs / fsspec log each failed retry with a traceback before ptjax.files raises its
  one-line StorageError (naming the path) from the same failure: those logs are hidden."""
  for name in ("gcsfs", "fsspec"):
    logging.getLogger(name).setLevel(logging.CRITICAL)


class HarmlessWarningFilter(logging.Filter):
  """Drops the records in HARMLESS_WARNINGS; passes everything else and every ERROR+."""

  def __init__(self, prefixes: Optional[tuple[str, ...]] = None):
    super().__init__()
    self.prefixes = tuple(p for p, _ in HARMLESS_WARNINGS) if prefixes is None else prefixes

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      return True
    return not (isinstance(record.msg, str) and record.msg.startswith(self.prefixes))


_LOG_FILTER = HarmlessWarningFilter()


def install_log_filter(logger_names: tuple[str, ...] = ("absl",)) -> Callable[[], None]:
  """Adds a HarmlessWarningFilter to these loggers ('absl': seqio, orbax and absl.logging
  create their records there). Returns a function that removes it again. Idempotent: one
  filter per logger however often it is called (ptjax.main, run in-process again, adds no
  second copy)."""
  log_filter = _LOG_FILTER
  loggers = [logging.getLogger(name) for name in logger_names]
  for logger in loggers:
    logger.addFilter(log_filter)  # logging.Filterer skips a filter it already has.

  def remove():
    for logger in loggers:
      logger.removeFilter(log_filter)
  return remove


# --------------------------------------------------------------------------------------------
# Progress and step lines.


class Progress:
  """The train loop's progress bar: tqdm on an interactive terminal, nothing anywhere else.

  Off when `enabled` is false (pass `jax.process_index() == 0`) or `stream` (default
  sys.stderr) is not a TTY. To a file or pipe (nohup, SLURM, `| tee`) tqdm would write a
  carriage-return-separated redraw every update: unreadable in a log, and redundant there,
  because the step lines (`step_log_line`) already carry step, loss and throughput.
  """

  def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True,
               stream: Optional[TextIO] = None):
    self.total_steps = total_steps
    self._stream = sys.stderr if stream is None else stream
    self._bar = None
    if enabled and _isatty(self._stream):
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, file=self._stream,
                       unit="step", dynamic_ncols=True, leave=True)

  @property
  def active(self) -> bool:
    return self._bar is not None

  def update(self, step: int, **postfix: float):
    """Moves the bar to `step` (absolute); `postfix` (e.g. loss=0.42) is shown beside it."""
    if self._bar is None:
      return
    if postfix:
      self._bar.set_postfix({k: _short(v) for k, v in postfix.items()}, refresh=False)
    delta = step - self._bar.n
    if delta:
      self._bar.update(delta)
    elif postfix:
      self._bar.refresh()

  def write(self, text: str, file: Optional[TextIO] = None):
    """Prints a line (default: stdout) without tearing the bar: tqdm clears it, prints and
    redraws. A plain print when no bar is shown."""
    file = sys.stdout if file is None else file
    if self._bar is None:
      print(text, file=file, flush=True)
    else:
      self._bar.write(text, file=file)
      file.flush()

  def close(self):
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc):
    self.close()


def _isatty(stream) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):  # No isatty, or a closed stream.
    return False


def _short(value: float) -> str:
  return f"{value:.4f}" if isinstance(value, float) else str(value)


_RATE_KEYS = ("examples_per_second", "steps_per_second")


def step_log_line(step: int, metrics: Mapping[str, float], examples_per_second: float,
                  steps_per_second: Optional[float] = None) -> str:
  """'step 1,100,100: loss 0.4213, z_loss 0.0001, examples/s 52.1' (T5X-style).

  Metrics with 4 decimals, `loss` first and the others by name, whatever the mapping's
  order; then examples/s with 1 decimal and, when given, steps/s with 2. Keys
  `examples_per_second` / `steps_per_second` in `metrics` (the TensorBoard scalars' names for
  the same rates) are not repeated: the arguments are what the line shows.
  """
  names = sorted((name for name in metrics if name not in _RATE_KEYS),
                 key=lambda name: (name != "loss", name))
  parts = [f"{name} {float(metrics[name]):.4f}" for name in names]
  parts.append(f"examples/s {examples_per_second:.1f}")
  if steps_per_second is not None:
    parts.append(f"steps/s {steps_per_second:.2f}")
  return f"step {step:,}: " + ", ".join(parts)


def run_span_line(start_step: int, end_step: int) -> str:
  """'steps 1,100,000 -> 1,150,000 (50,000 to go)': where a run starts (0, or the resumed
  checkpoint's step) and the TRAIN_STEPS it ends at (T5X's absolute step count)."""
  if start_step < 0 or end_step < 0:
    raise ValueError(f"steps must be >= 0, got {start_step} -> {end_step}")
  span = f"steps {start_step:,} -> {end_step:,}"
  if start_step == end_step:
    return f"{span} (nothing to go: already at TRAIN_STEPS)"
  if start_step > end_step:
    return f"{span} (nothing to go: already past TRAIN_STEPS)"
  return f"{span} ({end_step - start_step:,} to go)"


class ArgumentParser(argparse.ArgumentParser):
  """argparse with ptjax's error convention: a bad flag is one line on stderr, exit 2.

  argparse's own `error` prints the whole usage block first, and the line that says what is
  wrong comes last; here it is the only line (`--help` still prints the usage)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


__all__ = ["quiet_startup", "hide_tf_gpus", "tf_min_log_level", "native_line_dropped",
           "filtered_native_stderr", "install_import_filter", "uninstall_import_filter",
           "HARMLESS_WARNINGS", "HarmlessWarningFilter", "install_log_filter", "Progress",
           "step_log_line", "run_span_line", "silence_storage_retries", "ArgumentParser"]
