"""Orbax checkpoints of a training run: only what trains (prompt, optimizer state, step,
RNG, data position), never the frozen model, which is reloaded from its own checkpoint.

A step folder that cannot be read (a file truncated or deleted by a full disk, a copy cut
short) is skipped for the previous one, newest first, with one line saying so; nothing is
ever deleted. When training then saves over that step range again, the unreadable folder
is moved aside to `<step>.unreadable` (kept for inspection; orbax ignores that name).
"""

import sys
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import orbax.checkpoint as ocp
from etils import epath

from ptjax.checkpoints.validate import CheckpointError

ITEM = "default"  # The item folder orbax writes inside each step folder.
UNREADABLE_SUFFIX = ".unreadable"
# Orbax's words for a saved tree whose structure differs from the one asked for: a
# different run's checkpoint, not a damaged one, so no fallback to an older step.
_MISMATCH = ("Structure mismatch", "tree structures do not match")


class CheckpointMismatchError(CheckpointError):
  """A readable run checkpoint whose saved tree differs from the tree asked for."""


class UnreadableCheckpointError(CheckpointError):
  """A run checkpoint folder that cannot be read: `folder` and a one-line `reason`."""

  def __init__(self, folder: str, reason: str):
    super().__init__(f"checkpoint {folder} cannot be read ({reason}).")
    self.folder, self.reason = folder, reason


def _reason(error: BaseException, folder: str = "", limit: int = 300) -> str:
  """A library error as one short line (TensorStore's spec dump and status dropped; paths
  inside `folder`, which the line names anyway, relative to it)."""
  message = str(error) or type(error).__name__
  if folder:
    message = message.replace(folder.rstrip("/") + "/", "")
  message = message.split(" [tensorstore_spec=")[0].split(" [source locations=")[0]
  message = " ".join(message.split())
  for status in ("NOT_FOUND: ", "FAILED_PRECONDITION: ", "DATA_LOSS: ", "OUT_OF_RANGE: ",
                 "INVALID_ARGUMENT: "):
    message = message.removeprefix(status)
  return message if len(message) <= limit else message[:limit - 3] + "..."


def _missing_piece(step_dir: epath.Path) -> Optional[str]:
  """What orbax would trip over with an unhelpful message, named before it tries."""
  if not step_dir.is_dir():
    return "the folder does not exist"
  if not (step_dir / ITEM).is_dir():
    return f"no {ITEM}/ folder"
  if not (step_dir / ITEM / "_METADATA").exists():
    return f"{ITEM}/_METADATA is missing"
  return None


def _innermost_function(traceback) -> Optional[str]:
  name = None
  while traceback is not None:
    name, traceback = traceback.tb_frame.f_code.co_name, traceback.tb_next
  return name


def _quiet_orbax_read_failures() -> None:
  """Silences orbax's leftover reads of a failed restore: each pending
  `_read_array_index_and_device_put` coroutine re-raises on close (its `except
  BaseException` catches GeneratorExit), printing a TensorStore spec dump at exit;
  unstarted ones warn 'never awaited'; TensorStore callbacks of the abandoned reads find
  asyncio's loop closed. Installed only once a restore has failed, and only those are
  filtered: every other unraisable exception reaches the previous hook."""
  warnings.filterwarnings(
      "ignore", category=RuntimeWarning,
      message=r"coroutine '(_read_array_index_and_device_put|Store\._get_array_metadatas)' "
              r"was never awaited")
  previous = sys.unraisablehook
  if getattr(previous, "_ptjax_filter", False):
    return

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if (code is not None and code.co_name == "_read_array_index_and_device_put"
        and str(unraisable.exc_value).startswith("Encountered error while reading array")):
      return
    if (unraisable.object is None and isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"
        and _innermost_function(unraisable.exc_traceback) == "_check_closed"):
      return  # A leftover read's TensorStore callback, after orbax's loop closed.
    previous(unraisable)
  hook._ptjax_filter = True
  sys.unraisablehook = hook


def _restoring(step_dir: str, restore: Callable[[], Any]) -> Any:
  """restore(), with any failure turned into one CheckpointError naming `step_dir`."""
  missing = _missing_piece(epath.Path(step_dir))
  if missing:
    raise UnreadableCheckpointError(step_dir, missing)
  try:
    return restore()
  except Exception as e:  # pylint: disable=broad-except  (orbax, TensorStore, JSON, OS)
    _quiet_orbax_read_failures()
    if any(m in str(e) for m in _MISMATCH):
      raise CheckpointMismatchError(
          f"checkpoint {step_dir} holds a different tree than this run saves "
          f"({_reason(e, step_dir)}); it belongs to another run: use a new MODEL_DIR."
      ) from None
    raise UnreadableCheckpointError(step_dir, _reason(e, step_dir)) from None


def _abstract(like: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, like)


def restore_step_folder(step_dir: str, like: Any = None) -> Any:
  """The tree saved in one run checkpoint folder `<dir>/<step>` (into `like`'s structure,
  arrays or ShapeDtypeStructs, when given); CheckpointError naming it when unreadable."""
  item = epath.Path(step_dir) / ITEM
  checkpointer = ocp.StandardCheckpointer()
  if like is None:
    return _restoring(step_dir, lambda: checkpointer.restore(item))
  return _restoring(step_dir, lambda: checkpointer.restore(item, _abstract(like)))


def _step_folders(directory: str) -> list[int]:
  path = epath.Path(directory)
  if not path.is_dir():
    return []
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and p.is_dir())


def _log_once(line: str) -> None:
  if jax.process_index() == 0:
    print(line, flush=True)


def restore_newest(directory: str, restore: Callable[[str], Any],
                   steps: Optional[Sequence[int]] = None,
                   log: Optional[Callable[[str], None]] = None,
                   then: str = "resuming from") -> tuple[int, Any]:
  """(step, restore(step folder)) of the newest readable step of `directory`, newest first.

  `restore(step_dir)` raises CheckpointError for an unreadable folder (see
  `restore_step_folder`); each such folder newer than the one used is reported in one line
  "checkpoint <dir>/<step> cannot be read (<reason>); resuming from <dir>/<prev>" (through
  `log`, default print on process 0). CheckpointError naming `directory` when no step can
  be read. CheckpointMismatchError (a different run's tree) is raised at once. Never
  deletes anything."""
  steps = sorted(_step_folders(directory) if steps is None else steps, reverse=True)
  if not steps:
    raise CheckpointError(f"{directory} holds no run checkpoint (no <step> folder).")
  log = log or _log_once
  failures = []
  for step in steps:
    step_dir = str(epath.Path(directory) / str(step))
    try:
      tree = restore(step_dir)
    except CheckpointMismatchError:
      raise
    except CheckpointError as e:
      failures.append((step_dir, getattr(e, "reason", None) or str(e)))
      continue
    for failed, reason in failures:
      log(f"checkpoint {failed} cannot be read ({reason}); {then} {step_dir}")
    return step, tree
  reasons = "; ".join(f"{epath.Path(d).name} ({r})" for d, r in failures)
  raise CheckpointError(f"no checkpoint in {directory} can be read: {reasons}. Nothing was "
                        f"deleted; restore the folder from a copy or use a new MODEL_DIR.")


class RunCheckpoints:
  """`MODEL_DIR/checkpoints/<step>/`, every `save_every` steps, keeping the newest `keep`."""

  def __init__(self, directory: str, save_every: int, keep: int = 3):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every,
                                           create=True, enable_async_checkpointing=False)
    self._directory = str(directory)
    self._manager = ocp.CheckpointManager(directory, options=options)
    self._unreadable: list[int] = []  # Steps skipped by restore_latest, newest first.
    self._log: Callable[[str], None] = _log_once

  def latest_step(self) -> Optional[int]:
    """The newest step folder, readable or not (see `restore_latest`)."""
    return self._manager.latest_step()

  def save(self, step: int, tree: Any, force: bool = False) -> bool:
    if self._unreadable:
      self._move_unreadable_aside()
    return self._manager.save(step, args=ocp.args.StandardSave(tree), force=force)

  def restore(self, step: int, like: Any) -> Any:
    """`like`: a tree of arrays or ShapeDtypeStructs (with shardings) to restore into.
    CheckpointError naming the step folder when it cannot be read."""
    step_dir = str(epath.Path(self._directory) / str(step))
    return _restoring(step_dir, lambda: self._manager.restore(
        step, args=ocp.args.StandardRestore(_abstract(like))))

  def restore_latest(self, like: Any,
                     log: Optional[Callable[[str], None]] = None
                     ) -> tuple[Optional[int], Any]:
    """(step, tree) of the newest readable checkpoint, or (None, None) when there is none.

    A newer step that cannot be read is skipped with one line through `log` (default:
    print on process 0): "checkpoint <dir>/<step> cannot be read (<reason>); resuming
    from <dir>/<prev>". CheckpointError naming the folder when no step can be read;
    CheckpointMismatchError when a checkpoint holds another run's tree. Deletes nothing;
    the next `save` moves skipped folders aside to `<step>.unreadable`, so that training
    can write those steps again."""
    steps = list(self._manager.all_steps())
    if not steps:
      return None, None
    self._log = log or _log_once
    step, tree = restore_newest(self._directory, lambda d: self.restore(int(
        epath.Path(d).name), like), steps=steps, log=log)
    self._unreadable = sorted((s for s in steps if s > step), reverse=True)
    return step, tree

  def _move_unreadable_aside(self) -> None:
    """Renames skipped step folders `<step>.unreadable` (orbax would otherwise refuse to
    save those steps again, and count them against `keep`)."""
    root = epath.Path(self._directory)
    if jax.process_index() == 0:
      for step in self._unreadable:
        source = root / str(step)
        target, n = root / f"{step}{UNREADABLE_SUFFIX}", 1
        while target.exists():
          target, n = root / f"{step}{UNREADABLE_SUFFIX}.{n}", n + 1
        try:
          source.rename(target)
        except OSError as e:
          raise CheckpointError(
              f"cannot move unreadable checkpoint {source} aside to {target} ({_reason(e)}); "
              f"move it by hand, then run again.") from None
        self._log(f"moved unreadable checkpoint {source} aside to {target}")
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes("ptjax_move_unreadable_checkpoints")
    self._unreadable = []
    self._manager.reload()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
