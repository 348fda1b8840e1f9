"""Prompt files that are torn or incomplete: one line naming the file and what is wrong."""

import json
import os

import numpy as np
import pytest

from ptjax import prompts
from ptjax.checkpoints import CheckpointError
from ptjax.checkpoints.train_state import RunCheckpoints
from ptjax.prompts.io import PromptFileError

pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")]

VALUE = np.arange(12, dtype=np.float32).reshape(3, 4)


def one_line_error(path, error=PromptFileError) -> str:
  with pytest.raises(error) as e:
    prompts.load_prompt(str(path))
  message = str(e.value)
  assert "\n" not in message, message
  return message


@pytest.fixture
def peft(tmp_path):
  folder = tmp_path / "peft"
  prompts.save_peft(VALUE, str(folder), num_layers=2, num_heads=2)
  np.testing.assert_array_equal(prompts.load_prompt(str(folder)), VALUE)
  return folder


def test_peft_folder_without_adapter_config(peft):
  (peft / "adapter_config.json").unlink()
  message = one_line_error(peft)
  assert message.startswith(f"{peft / 'adapter_config.json'} is missing: a PEFT adapter folder "
                            f"needs it beside adapter_model.safetensors")


def test_peft_folder_with_torn_files(peft):
  weights = peft / "adapter_model.safetensors"
  data = weights.read_bytes()
  for cut in (0, 5, 20, len(data) - 3):
    weights.write_bytes(data[:cut])
    assert one_line_error(peft).startswith(f"{weights} is truncated or not a safetensors file "
                                           f"({cut:,} bytes; ")
  weights.write_bytes(data)
  (peft / "adapter_config.json").write_text('{"peft_type": "PROMPT_')
  assert f"{peft / 'adapter_config.json'} is not valid JSON" in one_line_error(peft)
  (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
  np.testing.assert_array_equal(prompts.load_prompt(str(peft)), VALUE)
  import safetensors.numpy
  safetensors.numpy.save_file({"other": VALUE}, str(weights))
  assert "has no 'prompt_embeddings' tensor (it holds other)" in one_line_error(peft)


def test_truncated_npy(tmp_path):
  path = tmp_path / "p.npy"
  prompts.save_npy(VALUE, str(path))
  path.write_bytes(path.read_bytes()[:-8])
  assert one_line_error(path).startswith(f"Prompt file {path} is not a .npy array")


def test_run_prompt_skips_an_unreadable_newest_checkpoint(tmp_path, capsys):
  directory = tmp_path / "model_dir" / "checkpoints"
  checkpoints = RunCheckpoints(str(directory), save_every=1, keep=3)
  for step in (1, 2):
    checkpoints.save(step, {"step": np.int32(step),
                            "trainable": {"prompt": {"prompt": VALUE * step}}})
  checkpoints.close()
  np.testing.assert_array_equal(prompts.load_prompt(str(tmp_path / "model_dir")), VALUE * 2)
  os.remove(directory / "2" / "default" / "_METADATA")
  capsys.readouterr()
  for path in (tmp_path / "model_dir", directory):
    np.testing.assert_array_equal(prompts.load_prompt(str(path)), VALUE)
    assert capsys.readouterr().out == (f"checkpoint {directory}/2 cannot be read (default/"
                                       f"_METADATA is missing); using {directory}/1\n")
  # One step folder named directly: no fallback, an error naming it.
  assert one_line_error(directory / "2", CheckpointError) == (
      f"checkpoint {directory}/2 cannot be read (default/_METADATA is missing).")
  os.remove(directory / "1" / "default" / "_METADATA")
  assert one_line_error(directory, CheckpointError).startswith(
      f"no checkpoint in {directory} can be read: 2 (default/_METADATA is missing); 1 (")
