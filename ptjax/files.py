"""Whole-file writes: a file is either its old contents or its new ones, never a torn mix.

Every run file that is read back (metrics, best.json, run.json, config.gin, prompt.npy,
comparison tables, cell.json) is written to a temporary file in the same folder and
renamed over the target (`os.replace`, atomic on POSIX), so a process killed mid-write
leaves the previous version, and the next run or `experiments table` never reads half a
JSON. Appends (metrics.jsonl) are one `write` of one whole line; `read_jsonl` skips a torn
last line (what a kill during an append leaves) and fails, naming the file, on any other.
"""

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`; renamed onto `path` when the block succeeds,
  removed when it fails."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=folder)
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())


def write_json(path: str, value: Any, indent: int | None = None) -> None:
  write_text(path, json.dumps(value, indent=indent) + ("\n" if indent else ""))


def save_npy(path: str, array: np.ndarray) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.save(f, np.asarray(array), allow_pickle=False)


def append_line(path: str, line: str) -> None:
  """Appends `line` (no newline) as one write of one whole line."""
  with open(path, "a") as f:
    f.write(line + "\n")


def read_json(path: str) -> Any:
  """json.load with a one-line ValueError naming the file when it is not JSON."""
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); it was not written by this version "
                     f"of ptjax or was edited: restore or remove it.") from None


def read_jsonl(path: str) -> list:
  """The records of a JSONL file; a torn last line (a kill during an append) is skipped."""
  records = []
  with open(path) as f:
    lines = f.read().split("\n")
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:  # No newline after it: a torn append.
        break
      raise ValueError(f"{path}, line {i + 1}, is not valid JSON ({e}): restore or remove "
                       f"that line.") from None
  return records
