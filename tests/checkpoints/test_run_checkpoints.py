"""Orbax run checkpoints: a corrupt newest step falls back to the previous one, one line."""

import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax.checkpoints import CheckpointError
from ptjax.checkpoints.train_state import CheckpointMismatchError, RunCheckpoints

# A failed orbax restore leaves TensorStore reads whose callbacks find asyncio's loop
# closed; pytest reports them as unraisable warnings. Not ours, and harmless.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")]


def tree(step):
  rng = np.random.default_rng(step)
  return {"step": jnp.asarray(step, jnp.int32),
          "trainable": {"prompt": {"prompt": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)}},
          "opt_state": {"v": rng.normal(size=(2000,)).astype(np.float32)},
          "data_position": jnp.asarray(step * 10, jnp.int32)}


def assert_same(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  directory = tmp_path_factory.mktemp("run") / "checkpoints"
  checkpoints = RunCheckpoints(str(directory), save_every=1, keep=3)
  for step in (1, 2, 3):
    checkpoints.save(step, tree(step))
  checkpoints.close()
  return directory


@pytest.fixture
def run_dir(saved, tmp_path):
  dst = tmp_path / "checkpoints"
  shutil.copytree(saved, dst)
  return dst


def files_of(directory):
  return sorted(os.path.relpath(os.path.join(r, f), directory)
                for r, _, fs in os.walk(directory) for f in fs)


def truncate_largest(step_dir):
  largest = max((os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs),
                key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)


def delete_metadata(step_dir):
  os.remove(step_dir / "default" / "_METADATA")


def delete_item_folder(step_dir):
  shutil.rmtree(step_dir / "default")


def garble_manifest(step_dir):
  (step_dir / "default" / "manifest.ocdbt").write_bytes(b"not a manifest")


@pytest.mark.parametrize("damage,reason", [
    (truncate_largest, "is not valid for value of size"),
    (delete_metadata, "default/_METADATA is missing"),
    (delete_item_folder, "no default/ folder"),
    (garble_manifest, "manifest.ocdbt"),
])
def test_corrupt_newest_falls_back_to_previous(run_dir, damage, reason):
  damage(run_dir / "3")
  before = files_of(run_dir)
  checkpoints = RunCheckpoints(str(run_dir), save_every=1, keep=3)
  assert checkpoints.latest_step() == 3  # The folder is there, readable or not.
  lines = []
  step, restored = checkpoints.restore_latest(tree(0), log=lines.append)
  assert step == 2
  assert_same(restored, tree(2))
  assert len(lines) == 1, lines
  assert lines[0].startswith(f"checkpoint {run_dir}/3 cannot be read (")
  assert lines[0].endswith(f"); resuming from {run_dir}/2")
  assert reason in lines[0] and "\n" not in lines[0]
  assert files_of(run_dir) == before  # Nothing deleted, nothing moved.
  # The direct restore of the corrupt step is one line naming it too.
  with pytest.raises(CheckpointError, match=f"checkpoint {run_dir}/3 cannot be read"):
    checkpoints.restore(3, tree(0))
  checkpoints.close()


def test_training_on_saves_the_unreadable_step_again(run_dir, capsys):
  truncate_largest(run_dir / "3")
  checkpoints = RunCheckpoints(str(run_dir), save_every=1, keep=3)
  step, _ = checkpoints.restore_latest(tree(0))
  assert step == 2
  out = capsys.readouterr().out  # Default log: one printed line.
  assert out.count("\n") == 1 and out.startswith(f"checkpoint {run_dir}/3 cannot be read (")
  assert re.search(r"is not valid for value of size \d+\); resuming from "
                   + re.escape(f"{run_dir}/2\n") + "$", out), out
  # Step 3 again: the unreadable folder is kept aside, the new step 3 is written.
  assert checkpoints.save(3, tree(3), force=True)
  checkpoints.close()
  assert os.path.isdir(run_dir / "3.unreadable")
  again = RunCheckpoints(str(run_dir), save_every=1, keep=3)
  step, restored = again.restore_latest(tree(0), log=pytest.fail)
  assert step == 3
  assert_same(restored, tree(3))
  again.close()


def test_two_corrupt_steps_and_none_readable(run_dir):
  truncate_largest(run_dir / "3")
  delete_metadata(run_dir / "2")
  lines = []
  step, restored = RunCheckpoints(str(run_dir), 1, 3).restore_latest(tree(0), log=lines.append)
  assert step == 1
  assert_same(restored, tree(1))
  assert [line.split(" cannot be read")[0] for line in lines] == [
      f"checkpoint {run_dir}/3", f"checkpoint {run_dir}/2"]
  assert all(line.endswith(f"resuming from {run_dir}/1") for line in lines)
  delete_item_folder(run_dir / "1")
  with pytest.raises(CheckpointError) as e:
    RunCheckpoints(str(run_dir), 1, 3).restore_latest(tree(0), log=pytest.fail)
  message = str(e.value)
  assert message.startswith(f"no checkpoint in {run_dir} can be read: 3 (")
  assert "2 (default/_METADATA is missing); 1 (no default/ folder)" in message
  assert "\n" not in message
  assert os.path.isdir(run_dir / "1") and os.path.isdir(run_dir / "2")


def test_no_checkpoint_and_another_runs_tree(tmp_path, run_dir):
  assert RunCheckpoints(str(tmp_path / "new"), 1, 3).restore_latest(tree(0)) == (None, None)
  other = {"step": tree(0)["step"], "params": {"w": np.zeros(3, np.float32)}}
  with pytest.raises(CheckpointMismatchError, match=f"checkpoint {run_dir}/3 holds a different "
                                                    f"tree than this run saves"):
    RunCheckpoints(str(run_dir), 1, 3).restore_latest(other, log=pytest.fail)
