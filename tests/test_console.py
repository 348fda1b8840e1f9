"""ptjax.console: quiet startup, the harmless-warning filter, Progress and the step lines."""

import fcntl
import io
import logging
import os
import struct
import subprocess
import sys
import termios

import pytest

from ptjax import console

# --------------------------------------------------------------------------------------------
# Step lines.


def test_step_log_line_is_t5x_style():
  line = console.step_log_line(1100100, {"z_loss": 0.00012, "loss": 0.42131}, 52.14)
  assert line == "step 1,100,100: loss 0.4213, z_loss 0.0001, examples/s 52.1"


def test_step_log_line_orders_loss_first_then_by_name_and_adds_steps_per_second():
  line = console.step_log_line(7, {"z_loss": 0.5, "accuracy": 1.0, "loss": 2.0}, 3.0, 1.234)
  assert line == ("step 7: loss 2.0000, accuracy 1.0000, z_loss 0.5000, examples/s 3.0, "
                  "steps/s 1.23")


def test_step_log_line_does_not_repeat_rates_given_as_scalars():
  scalars = {"loss": 0.5, "z_loss": 0.0, "steps_per_second": 1.5,
             "examples_per_second": 48.0}
  assert (console.step_log_line(1000, scalars, 48.0, 1.5)
          == "step 1,000: loss 0.5000, z_loss 0.0000, examples/s 48.0, steps/s 1.50")


def test_run_span_line():
  assert (console.run_span_line(1_100_000, 1_150_000)
          == "steps 1,100,000 -> 1,150,000 (50,000 to go)")
  assert console.run_span_line(0, 300) == "steps 0 -> 300 (300 to go)"
  assert (console.run_span_line(1_150_000, 1_150_000)
          == "steps 1,150,000 -> 1,150,000 (nothing to go: already at TRAIN_STEPS)")
  assert (console.run_span_line(1_200, 1_000)
          == "steps 1,200 -> 1,000 (nothing to go: already past TRAIN_STEPS)")
  with pytest.raises(ValueError):
    console.run_span_line(-1, 10)


# --------------------------------------------------------------------------------------------
# Environment.


def test_quiet_startup_sets_the_default_when_unset():
  environ = {"PATH": "/bin"}
  assert console.quiet_startup(environ, filter_tensorflow_import=False) == {
      "TF_CPP_MIN_LOG_LEVEL": "3"}
  assert environ == {"PATH": "/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.mark.parametrize("value", ["0", "1", "2", ""])
def test_quiet_startup_keeps_what_the_user_set(value):
  environ = {"TF_CPP_MIN_LOG_LEVEL": value, "JAX_PLATFORMS": "cuda",
             "TF_ENABLE_ONEDNN_OPTS": "1"}
  assert console.quiet_startup(environ, filter_tensorflow_import=False) == {}
  assert environ == {"TF_CPP_MIN_LOG_LEVEL": value, "JAX_PLATFORMS": "cuda",
                     "TF_ENABLE_ONEDNN_OPTS": "1"}


def test_quiet_startup_forces_no_platform_and_keeps_onednn():
  environ = {}
  console.quiet_startup(environ, filter_tensorflow_import=False)
  assert "JAX_PLATFORMS" not in environ and "TF_ENABLE_ONEDNN_OPTS" not in environ


def test_tf_min_log_level():
  assert console.tf_min_log_level({}) == 0
  assert console.tf_min_log_level({"TF_CPP_MIN_LOG_LEVEL": "2"}) == 2
  assert console.tf_min_log_level({"TF_CPP_MIN_LOG_LEVEL": "x"}) == 0


# --------------------------------------------------------------------------------------------
# Native (C++) stderr lines.

ONEDNN = ("I0000 00:00:1796049424.692979    3360 port.cc:153] oneDNN custom operations are "
          "on. You may see slightly different numerical results.\n")
CUDART = ("I0000 00:00:1796049424.694058    3360 cudart_stub.cc:31] Could not find cuda "
          "drivers on your machine, GPU will not be used.\n")
WARN = "W0000 00:00:1751448151.003754   10148 computation_placer.cc:177] placer registered\n"
CUINIT = ("E0000 00:00:1796049425.621813    3360 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error\n")
FATAL = "F0000 00:00:1796049425.621813    3360 foo.cc:1] Check failed: x\n"
TF_STYLE_ERROR = ("2023-10-09 13:36:23.355516: E tensorflow/compiler/xla/stream_executor/cuda/"
                  "cuda_dnn.cc:9342] Unable to register cuDNN factory\n")
NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"


@pytest.mark.parametrize("line,lowest_level_dropping_it", [
    (ONEDNN, 1), (CUDART, 1), (NOTICE, 1), (WARN, 2), (CUINIT, 3), (TF_STYLE_ERROR, 3),
    (FATAL, None),
    ("To enable the following instructions: AVX2 FMA, in other operations, rebuild.\n", None),
    ("Traceback (most recent call last):\n", None),
    ("UserWarning: cuda is mentioned here but this is Python output\n", None),
])
def test_native_line_dropped_follows_tf_cpp_min_log_level(line, lowest_level_dropping_it):
  for level in range(0, 5):
    expected = lowest_level_dropping_it is not None and level >= lowest_level_dropping_it
    assert console.native_line_dropped(line, level) == expected, (line, level)


def test_filtered_native_stderr_keeps_the_rest_in_order(capfd):
  drop = lambda line: console.native_line_dropped(line, 3)
  with console.filtered_native_stderr(drop):
    os.write(2, (NOTICE + ONEDNN + "kept 1\n" + CUINIT + FATAL + "kept 2").encode())
  assert capfd.readouterr().err == "kept 1\n" + FATAL + "kept 2"


def test_import_filter_applies_to_the_first_import_only(tmp_path, monkeypatch, capfd):
  package = tmp_path / "noisy_native_pkg"
  package.mkdir()
  (package / "__init__.py").write_text(
      "import os\n"
      f"os.write(2, {(NOTICE + ONEDNN + WARN + 'python says hi' + chr(10)).encode()!r})\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  assert console.install_import_filter(1, name="noisy_native_pkg")
  try:
    import noisy_native_pkg  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  finally:
    console.uninstall_import_filter()
    sys.modules.pop("noisy_native_pkg", None)
  assert capfd.readouterr().err == WARN + "python says hi\n"
  assert not isinstance(noisy_native_pkg.__loader__, console._QuietLoader)
  assert not isinstance(noisy_native_pkg.__spec__.loader, console._QuietLoader)
  assert not any(isinstance(f, console._QuietImportFinder) for f in sys.meta_path)
  assert not console.install_import_filter(0, name="noisy_native_pkg")  # Nothing to drop.
  assert not console.install_import_filter(3, name="os")  # Already imported.


def test_a_failing_import_still_restores_stderr_and_shows_its_output(tmp_path, monkeypatch,
                                                                    capfd):
  noise = (ONEDNN + "libfoo.so: cannot open shared object file\n").encode()
  (tmp_path / "broken_native_pkg.py").write_text(
      f"import os\nos.write(2, {noise!r})\nraise ImportError('broken')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  console.install_import_filter(3, name="broken_native_pkg")
  try:
    with pytest.raises(ImportError, match="broken"):
      import broken_native_pkg  # pylint: disable=import-outside-toplevel,unused-import
  finally:
    console.uninstall_import_filter()
  os.write(2, b"after\n")
  assert capfd.readouterr().err == "libfoo.so: cannot open shared object file\nafter\n"


_NOISE = ("cuinit", "onednn", "cuda")
_SNIPPET = "import tensorflow, jax; jax.numpy.zeros(1); tensorflow.config.list_physical_devices()"


def _run(code: str, **env_overrides) -> str:
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  env.update(env_overrides)
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=300, check=True)
  return proc.stdout + proc.stderr


def test_tensorflow_and_jax_start_quietly():
  output = _run("import ptjax.console as c; c.quiet_startup(); " + _SNIPPET
                + "; assert c.hide_tf_gpus() in (True, False); print('ok')")
  assert output.strip() == "ok", output
  assert not [word for word in _NOISE if word in output.lower()], output


def test_without_quiet_startup_this_machine_is_noisy():
  """The control: on this machine the same imports do print what the test above forbids
  (skipped where TensorFlow has nothing to say, e.g. a tensorflow-cpu build)."""
  output = _run(_SNIPPET)
  if not any(word in output.lower() for word in _NOISE):
    pytest.skip("this TensorFlow prints no CUDA/oneDNN lines here")
  # And the user's explicit TF_CPP_MIN_LOG_LEVEL=0 wins over quiet_startup.
  user_wins = _run("import ptjax.console as c; c.quiet_startup(); " + _SNIPPET,
                   TF_CPP_MIN_LOG_LEVEL="0")
  assert any(word in user_wins.lower() for word in _NOISE), user_wins


# --------------------------------------------------------------------------------------------
# Python log filter.


def _record(msg: str, level: int = logging.WARNING, args=()) -> logging.LogRecord:
  return logging.LogRecord("absl", level, "dataset_providers.py", 462, msg, args, None)


SEQIO_UNCACHED = ("Using an uncached FunctionDataset for training is not recommended since it "
                  "often results in insufficient shuffling on restarts, resulting in "
                  "overfitting.")


def test_log_filter_drops_the_named_warning_only():
  log_filter = console.HarmlessWarningFilter()
  assert not log_filter.filter(_record(SEQIO_UNCACHED))
  assert not log_filter.filter(_record(SEQIO_UNCACHED, logging.INFO))
  assert log_filter.filter(_record("Task %s has no '%s' split, skipping.", args=("t", "x")))
  assert log_filter.filter(_record("Something about " + SEQIO_UNCACHED))
  for level in (logging.ERROR, logging.CRITICAL):
    assert log_filter.filter(_record(SEQIO_UNCACHED, level))


def test_install_log_filter_on_the_absl_logger():
  seen = []

  class Collect(logging.Handler):

    def emit(self, record):
      seen.append(record.getMessage())

  logger = logging.getLogger("absl")
  handler, old_level = Collect(), logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  remove = console.install_log_filter()
  try:
    logger.warning(SEQIO_UNCACHED)
    logger.warning("a warning that matters")
    logger.error(SEQIO_UNCACHED)
    remove()
    logger.warning(SEQIO_UNCACHED)
  finally:
    remove()
    logger.removeHandler(handler)
    logger.setLevel(old_level)
  assert seen == ["a warning that matters", SEQIO_UNCACHED, SEQIO_UNCACHED]


# --------------------------------------------------------------------------------------------
# Progress.


class _TTYStringIO(io.StringIO):

  def isatty(self):
    return True


def test_progress_disabled_writes_nothing():
  stream = _TTYStringIO()
  with console.Progress(10, 0, enabled=False, stream=stream) as progress:
    assert not progress.active
    progress.update(5, loss=0.5)
  assert stream.getvalue() == ""


def test_progress_to_a_non_tty_writes_nothing():
  stream = io.StringIO()
  progress = console.Progress(10, 2, enabled=True, stream=stream)
  assert not progress.active
  progress.update(5, loss=0.5)
  progress.close()
  assert stream.getvalue() == ""


def test_progress_write_without_a_bar_is_a_plain_line(capsys):
  console.Progress(10, enabled=False).write("step 5: loss 0.5000, examples/s 1.0")
  assert capsys.readouterr().out == "step 5: loss 0.5000, examples/s 1.0\n"


def test_progress_on_a_terminal_is_a_tqdm_bar():
  master, slave = os.openpty()
  fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
  try:
    with os.fdopen(slave, "w") as stream:
      progress = console.Progress(10, 2, enabled=True, stream=stream)
      assert progress.active
      progress.update(5, loss=0.5)
      progress.update(10)
      progress.close()
      progress.update(11)  # After close: ignored.
    output = b""
    os.set_blocking(master, False)
    while True:
      try:
        chunk = os.read(master, 65536)
      except (BlockingIOError, OSError):
        break
      if not chunk:
        break
      output += chunk
  finally:
    os.close(master)
  text = output.decode()
  # tqdm redraws at most every 0.1 s: the start and the end, not necessarily step 5.
  assert "2/10" in text and "10/10" in text, text
  assert "loss=0.5000" in text and "step" in text, text
