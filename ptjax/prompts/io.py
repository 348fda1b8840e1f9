"""Prompt files: `.npy` [P, embed], PEFT prompt-tuning adapters, ptjax run checkpoints.

A PEFT adapter folder holds `adapter_model.safetensors` ({'prompt_embeddings': [P, d]})
and `adapter_config.json` (peft_type PROMPT_TUNING, one transformer submodule: the prompt
goes to the encoder only, as in the paper).
"""

import json

import numpy as np
import safetensors.numpy

from ptjax import files  # Whole-file writes; imports nothing of ptjax.


class PromptFileError(ValueError):
  """A prompt file that cannot be used, with the reason."""

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def save_npy(prompt, path: str) -> str:
  """[P, d] float32 .npy, written whole (temp file + rename: ptjax.files)."""
  files.save_npy(path, np.asarray(prompt, np.float32))
  return path


def save_peft(prompt, folder: str, *, num_layers: int, num_heads: int,
              base_model: str = "") -> str:
  """A PEFT prompt-tuning adapter folder; each file written whole."""
  prompt = np.ascontiguousarray(np.asarray(prompt, np.float32))
  files.write_bytes(files.join(folder, ADAPTER_WEIGHTS),
                    safetensors.numpy.save({"prompt_embeddings": prompt}))
  config = {"peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM",
            "num_virtual_tokens": prompt.shape[0], "token_dim": prompt.shape[1],
            "num_transformer_submodules": 1, "num_attention_heads": num_heads,
            "num_layers": num_layers, "prompt_tuning_init": "RANDOM",
            "base_model_name_or_path": base_model, "inference_mode": True}
  files.write_json(files.join(folder, ADAPTER_CONFIG), config, indent=2)
  return folder


def _run_checkpoints_folder(path: str):
  """(checkpoints folder, None) for `MODEL_DIR` or `MODEL_DIR/checkpoints`; (None, step
  folder) for one `<step>` folder of a ptjax run; (None, None) otherwise."""
  for candidate in (files.join(path, "checkpoints"), path):
    if files.isdir(candidate) and any(n.isdigit() for n in files.listdir(candidate)):
      return candidate, None
  if files.isdir(files.join(path, "default")):
    return None, path
  return None, None


def _prompt_of(tree, where: str) -> np.ndarray:
  try:
    return np.asarray(tree["trainable"]["prompt"]["prompt"], np.float32)
  except (KeyError, TypeError):
    raise PromptFileError(f"{where} is a ptjax run checkpoint without a prompt "
                          f"(a model-tuning run?).") from None


def _load_run_prompt(folder, step_folder) -> np.ndarray:
  """The prompt of a run's newest readable checkpoint (an unreadable newer one is skipped
  with one line), or of one step folder."""
  from ptjax.checkpoints.train_state import restore_newest, restore_step_folder
  if step_folder is not None:
    return _prompt_of(restore_step_folder(step_folder), step_folder)
  step, tree = restore_newest(folder, restore_step_folder, then="using")
  return _prompt_of(tree, files.join(folder, str(step)))


def _load_peft(path: str) -> np.ndarray:
  weights = files.join(path, ADAPTER_WEIGHTS)
  config_path = files.join(path, ADAPTER_CONFIG)
  if not files.exists(weights):
    raise PromptFileError(f"{path}: no {ADAPTER_WEIGHTS}; expected a PEFT prompt-tuning "
                          f"adapter folder or a .npy file.")
  if not files.exists(config_path):
    raise PromptFileError(
        f"{config_path} is missing: a PEFT adapter folder needs it beside {ADAPTER_WEIGHTS} "
        f"(peft_type PROMPT_TUNING, num_virtual_tokens); copy the whole folder written by "
        f"save_pretrained.")
  try:
    config = json.loads(files.read_text(config_path))
  except ValueError as e:
    raise PromptFileError(f"{config_path} is not valid JSON ({e}); copy it again.") from None
  if not isinstance(config, dict):
    raise PromptFileError(f"{config_path} is not a JSON object.")
  if config.get("peft_type") != "PROMPT_TUNING":
    raise PromptFileError(f"{path}: peft_type {config.get('peft_type')!r} is not "
                          f"PROMPT_TUNING.")
  try:
    tensors = safetensors.numpy.load(files.read_bytes(weights))
  except Exception as e:  # safetensors' SafetensorError is no ValueError.
    size = files.getsize(weights)
    raise PromptFileError(
        f"{weights} is truncated or not a safetensors file ({size:,} bytes; "
        f"{' '.join(str(e).split())}); copy it again.") from None
  if "prompt_embeddings" not in tensors:
    raise PromptFileError(f"{weights} has no 'prompt_embeddings' tensor (it holds "
                          f"{', '.join(sorted(tensors)) or 'nothing'}).")
  prompt = tensors["prompt_embeddings"]
  if config.get("num_transformer_submodules", 1) != 1:
    if "num_virtual_tokens" not in config:
      raise PromptFileError(f"{config_path} has no num_virtual_tokens.")
    # PEFT's seq2seq default also prompts the decoder; its first P rows are the encoder's.
    prompt = prompt[:config["num_virtual_tokens"]]
  return np.asarray(prompt, np.float32)


def load_prompt(path: str) -> np.ndarray:
  """[P, embed] float32 from a .npy file, a PEFT prompt-tuning adapter folder or a ptjax
  run (MODEL_DIR, its checkpoints/ folder or one step folder; newest readable step)."""
  if files.isdir(path) and not files.exists(files.join(path, ADAPTER_WEIGHTS)):
    folder, step_folder = _run_checkpoints_folder(path)
    if folder is not None or step_folder is not None:
      return _load_run_prompt(folder, step_folder)
  if files.isdir(path):
    return _load_peft(path)
  if not files.exists(path):
    raise PromptFileError(f"Prompt file {path} does not exist.")
  try:
    prompt = files.load_npy(path)
  except (ValueError, EOFError, OSError) as e:
    raise PromptFileError(f"Prompt file {path} is not a .npy array ({e}).") from None
  if prompt.ndim != 2:
    raise PromptFileError(f"Prompt file {path} has shape {prompt.shape}; expected [P, embed].")
  return prompt.astype(np.float32)
