"""Issue 17: a google-research/prompt-tuning run folder, read both ways. Its T5X
checkpoint_<step> (frozen model + target/encoder/prompt/prompt/prompt) and its
numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt load as PROMPT_FILE (the
prompt, to the bit); the checkpoint loads as INITIAL_CHECKPOINT_PATH (the frozen model, the
prompt left out with one line); errors are one line naming the file and the fix."""

import os
import shutil

import jax
import numpy as np
import pytest

from conftest import (INLINE_CKPT, INLINE_CONFIG, TENSORSTORE_CKPT, TENSORSTORE_CONFIG,
                      shared_fixture)
from official_layout import (NUMPY_PROMPT, official_numpy_checkpoint, official_run,
                             official_t5x_checkpoint, odd_prompt)
from ptjax import prompts
from ptjax.checkpoints import CheckpointError, load_checkpoint, read_t5x
from ptjax.prompts.io import PromptFileError, find_prompt

FIXTURES = [(TENSORSTORE_CKPT, TENSORSTORE_CONFIG, False), (INLINE_CKPT, INLINE_CONFIG, True)]
IDS = ["tensorstore_prompt", "inline_prompt"]


def bits(a):
  return np.asarray(a, np.float32).view(np.uint32)


@pytest.fixture(params=FIXTURES, ids=IDS)
def run(request, tmp_path):
  ckpt, config, inline = request.param
  frozen = shared_fixture(ckpt)
  older, newest = odd_prompt((5, config.emb_dim), 1), odd_prompt((5, config.emb_dim), 2)
  model_dir = official_run(str(tmp_path / "pt_run"), frozen, {500: older, 1000: newest},
                           inline=inline)
  return {"dir": model_dir, "frozen": frozen, "config": config, "older": older,
          "newest": newest, "ckpt": os.path.join(model_dir, "checkpoint_1000"),
          "inline": inline}


def test_the_layout_is_the_official_one(run):
  ckpt = run["ckpt"]
  # T5X stores the prompt (it has partitioning axes) in a zarr folder beside the msgpack.
  assert os.path.isdir(os.path.join(ckpt, "target.encoder.prompt.prompt.prompt")) != run["inline"]
  assert sorted(os.listdir(os.path.join(run["dir"], "numpy_checkpoints"))) == [
      "checkpoint_1000", "checkpoint_500"]
  assert os.listdir(os.path.join(run["dir"], "numpy_checkpoints", "checkpoint_1000")) == [
      NUMPY_PROMPT]


def test_every_official_artifact_loads_as_prompt_file_to_the_bit(run, capsys):
  d = run["dir"]
  numpy_folder = os.path.join(d, "numpy_checkpoints", "checkpoint_1000")
  for path, kind in [(d, "numpy checkpoint"),  # The model dir: its newest step.
                     (run["ckpt"], "t5x checkpoint"),
                     (os.path.join(d, "numpy_checkpoints"), "numpy checkpoint"),
                     (numpy_folder, "numpy checkpoint"),
                     (os.path.join(numpy_folder, NUMPY_PROMPT), "numpy checkpoint")]:
    found = find_prompt(path)
    assert (found.kind, found.step, found.model_dir) == (kind, 1000, d), path
    assert found.prompt.dtype == np.float32
    np.testing.assert_array_equal(bits(found.prompt), bits(run["newest"]))
    np.testing.assert_array_equal(bits(prompts.load_prompt(path)), bits(run["newest"]))
    # Through the PROMPT_FILE initialiser too.
    init = prompts.from_file(path)(jax.random.key(0), (5, run["config"].emb_dim), None)
    np.testing.assert_array_equal(bits(init), bits(run["newest"]))
  # An older step: numpy checkpoints outlive T5X's retention.
  np.testing.assert_array_equal(bits(find_prompt(d, step=500).prompt), bits(run["older"]))
  with pytest.raises(PromptFileError, match=r"has no checkpoint of step 7 \(it has steps "
                                            r"500, 1000\)"):
    find_prompt(d, step=7)
  assert capsys.readouterr().out == ""  # Reading the prompt says nothing.


def test_the_t5x_checkpoint_alone_and_a_single_file(run, tmp_path):
  os.remove(os.path.join(run["dir"], "numpy_checkpoints", "checkpoint_1000", NUMPY_PROMPT))
  shutil.rmtree(os.path.join(run["dir"], "numpy_checkpoints"))
  found = find_prompt(run["dir"])
  assert (found.kind, found.source) == ("t5x checkpoint", run["ckpt"])
  np.testing.assert_array_equal(bits(found.prompt), bits(run["newest"]))
  if run["inline"]:  # A single-file T5X checkpoint (msgpack) works as well.
    single = tmp_path / "prompt_run.checkpoint_1000"
    shutil.copy(os.path.join(run["ckpt"], "checkpoint"), single)
    np.testing.assert_array_equal(bits(prompts.load_prompt(str(single))), bits(run["newest"]))


def test_official_checkpoint_as_initial_checkpoint_is_the_frozen_model(run, capsys):
  config = run["config"]
  capsys.readouterr()
  _, params = load_checkpoint(run["ckpt"], config)
  out = capsys.readouterr().out
  assert out == (f"T5X checkpoint {run['ckpt']} also holds a prompt-tuning prompt "
                 f"(encoder/prompt/prompt/prompt [5, {config.emb_dim}]): left out of the "
                 f"frozen model; to use that prompt, pass this checkpoint as PROMPT_FILE.\n")
  _, expected = load_checkpoint(run["frozen"], config)
  assert capsys.readouterr().out == ""  # A frozen model alone: nothing to say.
  got, want = jax.tree_util.tree_flatten_with_path(params), jax.tree_util.tree_flatten_with_path(expected)
  assert [k for k, _ in got[0]] == [k for k, _ in want[0]]
  for (name, a), (_, b) in zip(got[0], want[0]):
    assert a.dtype == b.dtype and np.array_equal(a, b), name
  # Asked by name, the prompt is read like any parameter.
  named = read_t5x(run["ckpt"], names={"encoder/prompt/prompt/prompt"})
  np.testing.assert_array_equal(bits(named["encoder"]["prompt"]["prompt"]["prompt"]),
                                bits(run["newest"]))


def test_other_unknown_variables_are_still_refused(run, tmp_path, capsys):
  frozen = read_t5x(run["frozen"])
  path = official_t5x_checkpoint(str(tmp_path / "checkpoint_9"), frozen, run["newest"], 9,
                                 inline=run["inline"],
                                 extra={"encoder/adapter/kernel": np.ones((4, 4), np.float32)})
  with pytest.raises(CheckpointError, match=r"unexpected parameter\(s\) encoder/adapter/kernel "
                                            r"not in the model config; the checkpoint has a "
                                            r"different architecture"):
    load_checkpoint(path, run["config"])
  assert capsys.readouterr().out.count("left out of the frozen model") == 1


def one_line(path, error=PromptFileError) -> str:
  with pytest.raises(error) as e:
    prompts.load_prompt(str(path))
  message = str(e.value)
  assert "\n" not in message, message
  return message


def test_errors_name_the_file_and_the_fix(run, tmp_path):
  frozen = run["frozen"]
  assert one_line(frozen) == (
      f"{frozen} is a T5X checkpoint without a prompt (no encoder/prompt/prompt/prompt): a "
      f"frozen model goes in INITIAL_CHECKPOINT_PATH; PROMPT_FILE takes a .npy file, a PEFT "
      f"prompt-tuning adapter folder, a ptjax run (MODEL_DIR or one checkpoints/<step>), or a "
      f"prompt-tuning run's MODEL_DIR, checkpoint_<step> or numpy_checkpoints/checkpoint_<step>.")
  # A model-tuning run's folder: its T5X checkpoints hold no prompt.
  model_tuned = tmp_path / "model_tuned"
  model_tuned.mkdir()
  (model_tuned / "checkpoint_3").symlink_to(frozen, target_is_directory=os.path.isdir(frozen))
  if os.path.isdir(frozen):
    assert "checkpoint_3 is a T5X checkpoint without a prompt" in one_line(model_tuned)
  # A numpy checkpoint folder without the prompt's file.
  empty = os.path.join(run["dir"], "numpy_checkpoints", "checkpoint_1000")
  os.remove(os.path.join(empty, NUMPY_PROMPT))
  assert one_line(empty).startswith(
      f"{empty} is a numpy checkpoint folder without encoder.prompt.prompt.prompt (it holds "
      f"nothing)")
  # A folder that is nothing PROMPT_FILE reads.
  (tmp_path / "other").mkdir()
  assert one_line(tmp_path / "other").startswith(
      f"{tmp_path / 'other'}: no adapter_model.safetensors, and not a prompt-tuning run or "
      f"checkpoint; PROMPT_FILE takes a .npy file")


def test_a_torn_newest_numpy_checkpoint_falls_back_with_one_line(run, capsys):
  d = run["dir"]
  newest = os.path.join(d, "numpy_checkpoints", "checkpoint_1000", NUMPY_PROMPT)
  data = open(newest, "rb").read()
  open(newest, "wb").write(data[:-7])
  shutil.rmtree(run["ckpt"])  # T5X kept no checkpoint of it either.
  capsys.readouterr()
  np.testing.assert_array_equal(bits(prompts.load_prompt(d)), bits(run["older"]))
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 1 and out[0].startswith(f"{os.path.dirname(newest)} cannot be read "
                                             f"(Numpy checkpoint {newest} is not a .npy array")
  assert out[0].endswith(f"; using {os.path.join(d, 'numpy_checkpoints', 'checkpoint_500')}")
  # Named directly: no fallback, the error names it.
  assert one_line(newest).startswith(f"Numpy checkpoint {newest} is not a .npy array")


def test_numpy_checkpoint_written_by_ptjax_is_the_official_bytes(tmp_path):
  value = odd_prompt((3, 4), 5)
  official = official_numpy_checkpoint(str(tmp_path / "official"), 42, value)
  ours = prompts.save_numpy_checkpoint(value, str(tmp_path / "ours"), 42)
  assert os.path.relpath(ours, tmp_path / "ours") == os.path.relpath(official,
                                                                      tmp_path / "official")
  assert open(ours, "rb").read() == open(official, "rb").read()


def test_a_step_asked_of_a_single_prompt_is_an_error(run, tmp_path):
  prompts.save_npy(run["newest"], str(tmp_path / "p.npy"))
  with pytest.raises(PromptFileError, match=r"p.npy holds one prompt, saved at no known step: "
                                            r"drop the step \(3\)"):
    find_prompt(str(tmp_path / "p.npy"), step=3)
  numpy_file = os.path.join(run["dir"], "numpy_checkpoints", "checkpoint_500", NUMPY_PROMPT)
  with pytest.raises(PromptFileError, match=r"is step 500, not the step 1000 asked for"):
    find_prompt(numpy_file, step=1000)
