"""The local side of the path layer (ptjax/files.py): what it writes is what `open()` would
have written, and a failed write leaves the old contents."""

import os
import stat

import numpy as np
import pytest

from ptjax import files


def _mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_umask_s_mode_not_the_temp_file_s_0600(tmp_path):
  """Files are written to a temporary file and renamed; mkstemp makes it 0600, which would
  hide config.gin, prompt.npy and checkpoints from teammates and other users' TensorBoard."""
  with open(tmp_path / "plain.txt", "w") as f:  # What the user's umask gives.
    f.write("x")
  expected = _mode(tmp_path / "plain.txt")
  files.write_bytes(str(tmp_path / "a.bin"), b"x")
  files.write_json(str(tmp_path / "b.json"), {"a": 1})
  files.save_npy(str(tmp_path / "c.npy"), np.zeros(2, np.float32))
  assert {n: _mode(tmp_path / n) for n in ("a.bin", "b.json", "c.npy")} == \
      {n: expected for n in ("a.bin", "b.json", "c.npy")}


def test_a_failed_write_leaves_the_old_contents_and_no_temporary_file(tmp_path):
  path = str(tmp_path / "prompt.npy")
  files.save_npy(path, np.ones(3, np.float32))
  with pytest.raises(RuntimeError):
    with files.atomic_path(path) as tmp:
      with open(tmp, "wb") as f:
        f.write(b"half")
      raise RuntimeError("killed mid-write")
  np.testing.assert_array_equal(np.load(path), np.ones(3, np.float32))
  assert os.listdir(tmp_path) == ["prompt.npy"]
