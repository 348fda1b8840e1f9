"""Prompt files: `.npy` [P, embed], PEFT prompt-tuning adapters, ptjax run checkpoints.

A PEFT adapter folder holds `adapter_model.safetensors` ({'prompt_embeddings': [P, d]})
and `adapter_config.json` (peft_type PROMPT_TUNING, one transformer submodule: the prompt
goes to the encoder only, as in the paper).
"""

import json
import os

import numpy as np
import safetensors.numpy



class PromptFileError(ValueError):
  """A prompt file that cannot be used, with the reason."""

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def save_npy(prompt, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.save(path, np.asarray(prompt, np.float32), allow_pickle=False)
  return path


def save_peft(prompt, folder: str, *, num_layers: int, num_heads: int,
              base_model: str = "") -> str:
  prompt = np.ascontiguousarray(np.asarray(prompt, np.float32))
  os.makedirs(folder, exist_ok=True)
  safetensors.numpy.save_file({"prompt_embeddings": prompt},
                              os.path.join(folder, ADAPTER_WEIGHTS))
  config = {"peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM",
            "num_virtual_tokens": prompt.shape[0], "token_dim": prompt.shape[1],
            "num_transformer_submodules": 1, "num_attention_heads": num_heads,
            "num_layers": num_layers, "prompt_tuning_init": "RANDOM",
            "base_model_name_or_path": base_model, "inference_mode": True}
  with open(os.path.join(folder, ADAPTER_CONFIG), "w") as f:
    json.dump(config, f, indent=2)
  return folder


def _latest_run_checkpoint(path: str):
  """`MODEL_DIR`, `MODEL_DIR/checkpoints` or one `<step>` folder of a ptjax run."""
  for candidate in (os.path.join(path, "checkpoints"), path):
    steps = sorted((int(n) for n in os.listdir(candidate) if n.isdigit()), reverse=True) \
        if os.path.isdir(candidate) else []
    if steps:
      return os.path.join(candidate, str(steps[0]))
  if os.path.isdir(os.path.join(path, "default")):
    return path
  return None


def load_prompt(path: str) -> np.ndarray:
  """[P, embed] float32 from a .npy file, a PEFT prompt-tuning adapter folder or a ptjax
  run (MODEL_DIR, its checkpoints/ folder or one step folder; newest step)."""
  run = _latest_run_checkpoint(path) if os.path.isdir(path) else None
  if run is not None and not os.path.exists(os.path.join(path, ADAPTER_WEIGHTS)):
    import orbax.checkpoint as ocp  # Only for run checkpoints.
    tree = ocp.StandardCheckpointer().restore(os.path.join(run, "default"))
    try:
      return np.asarray(tree["trainable"]["prompt"]["prompt"], np.float32)
    except (KeyError, TypeError):
      raise PromptFileError(f"{run} is a ptjax run checkpoint without a prompt "
                            f"(a model-tuning run?).") from None
  if os.path.isdir(path):
    weights = os.path.join(path, ADAPTER_WEIGHTS)
    if not os.path.exists(weights):
      raise PromptFileError(f"{path}: no {ADAPTER_WEIGHTS}; expected a PEFT prompt-tuning "
                            f"adapter folder or a .npy file.")
    with open(os.path.join(path, ADAPTER_CONFIG)) as f:
      config = json.load(f)
    if config.get("peft_type") != "PROMPT_TUNING":
      raise PromptFileError(f"{path}: peft_type {config.get('peft_type')!r} is not "
                            f"PROMPT_TUNING.")
    prompt = safetensors.numpy.load_file(weights)["prompt_embeddings"]
    if config.get("num_transformer_submodules", 1) != 1:
      # PEFT's seq2seq default also prompts the decoder; its first P rows are the encoder's.
      prompt = prompt[:config["num_virtual_tokens"]]
    return np.asarray(prompt, np.float32)
  if not os.path.exists(path):
    raise PromptFileError(f"Prompt file {path} does not exist.")
  try:
    prompt = np.load(path, allow_pickle=False)
  except ValueError as e:
    raise PromptFileError(f"Prompt file {path} is not a .npy array ({e}).") from None
  if prompt.ndim != 2:
    raise PromptFileError(f"Prompt file {path} has shape {prompt.shape}; expected [P, embed].")
  return prompt.astype(np.float32)
