"""Frozen-model checkpoints: one loader for T5X folders, T5X single files and HF folders."""

import re
from typing import Collection, Optional

from flax import traverse_util

from ptjax import files
from ptjax.checkpoints.hf import config_from_hf, config_to_hf, is_hf_folder, read_hf, save_hf
from ptjax.checkpoints.t5x import (CHECKPOINT_FILE, PROMPT_PARAM, read_t5x,
                                   read_t5x_prompt, read_t5x_step, save_t5x)
from ptjax.checkpoints.validate import CheckpointError, check_names, check_params, flat
from ptjax.model import T5Config



def detect_format(path: str) -> str:
  """'t5x' or 'hf' for a checkpoint path; CheckpointError with a fix otherwise."""
  if not files.exists(path):
    raise CheckpointError(f"Checkpoint path {path} does not exist.")
  if files.exists(files.join(path, CHECKPOINT_FILE)):
    return "t5x"
  if files.exists(files.join(path, "config.json")):
    return "hf"
  if not files.isdir(path):
    head = files.read_bytes(path)[:1]
    if head and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
      return "t5x"
    if not head:
      raise CheckpointError(f"{path} is empty (0 bytes): a truncated copy? Copy the "
                            f"checkpoint again from where it was written.")
    raise CheckpointError(
        f"{path} is not a checkpoint: expected a T5X checkpoint folder (with a "
        f"'{CHECKPOINT_FILE}' file), a single-file T5X checkpoint (msgpack) or a Hugging "
        f"Face folder (config.json + model.safetensors).")
  steps = sorted((n for n in files.listdir(path) if re.fullmatch(r"checkpoint_\d+", n)),
                 key=lambda n: int(n.split("_")[1]))
  if steps:
    raise CheckpointError(
        f"{path} is a T5X model directory, not a checkpoint; pass one of its checkpoints, "
        f"e.g. {files.join(path, steps[-1])}.")
  raise CheckpointError(
      f"{path} is not a checkpoint: no '{CHECKPOINT_FILE}' (T5X) and no config.json + "
      f"model.safetensors (Hugging Face) inside.")


def load_checkpoint(path: str, config: Optional[T5Config] = None,
                    dtype: Optional[str] = None,
                    names: Optional[Collection[str]] = None) -> tuple[Optional[T5Config], dict]:
  """Loads frozen T5 params from a T5X folder / single file or an HF folder.

  Returns (config, params): the config comes from an HF config.json, or is the
  `config` given (T5X checkpoints carry none), else None. When a config is known,
  every parameter name and shape is checked against it. `dtype` casts on load.
  `names` ('token_embedder/embedding', ...): only these parameters (from a T5X checkpoint
  only their arrays are read: an XXL embedding without the other 11B parameters).
  """
  fmt = detect_format(path)
  if names is not None and config is not None:  # A typo fails before anything is read.
    check_names(names, config, f"load_checkpoint({path!r}, names=...)")
  if fmt == "hf":
    hf_config, params = read_hf(path, dtype)
    if names is not None:
      params = traverse_util.unflatten_dict(
          {k: v for k, v in flat(params).items() if k in names}, sep="/")
    if config is not None:
      check_params(params, config, f"Hugging Face checkpoint {path}", names)
    return config or hf_config, params
  params = read_t5x(path, dtype, names)
  if config is not None:
    check_params(params, config, f"T5X checkpoint {path}", names)
  return config, params


def checkpoint_step(path: Optional[str]) -> int:
  """The step the frozen model was trained to: a T5X checkpoint's own step; 0 for Hugging
  Face folders (they record none) and for no checkpoint (a random model)."""
  if path is None:
    return 0
  return read_t5x_step(path) if detect_format(path) == "t5x" else 0


__all__ = [
    "checkpoint_step", "read_t5x_step", "read_t5x_prompt", "PROMPT_PARAM",
    "CheckpointError", "check_params", "config_from_hf", "config_to_hf", "detect_format",
    "is_hf_folder", "load_checkpoint", "read_hf", "read_t5x", "save_hf", "save_t5x",
]
