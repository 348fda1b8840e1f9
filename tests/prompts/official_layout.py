"""A prompt-tuning MODEL_DIR laid out as google-research/prompt-tuning (on T5X) writes it.

Layout (prompt_tuning/train/utils.py `Checkpointer.save`, then T5X's own save):
  MODEL_DIR/config.gin                  T5X's gin.config_str(): INITIAL_CHECKPOINT_PATH ...
  MODEL_DIR/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt
                                        np.save(gfile, float32 prompt): no .npy extension
  MODEL_DIR/checkpoint_<step>/checkpoint   T5X msgpack (version 3): optimizer/target = the
                                        frozen model + encoder/prompt/prompt/prompt,
                                        optimizer/state = step + the prompt's Adafactor state
  MODEL_DIR/checkpoint_<step>/target.encoder.prompt.prompt.prompt/   zarr (the prompt has
                                        partitioning axes, so T5X stores it in TensorStore;
                                        `inline=True` keeps every array in the msgpack)
The numpy files are written here with plain `open` + `np.save` (as the official np_save),
the T5X checkpoint with ptjax's `save_t5x` (its zarr layout is T5X's) or inline msgpack.
"""

import os

import numpy as np
from flax import serialization

from ptjax.checkpoints import read_t5x, save_t5x

NUMPY_PROMPT = "encoder.prompt.prompt.prompt"


def official_numpy_checkpoint(model_dir: str, step: int, prompt: np.ndarray) -> str:
  folder = os.path.join(model_dir, "numpy_checkpoints", f"checkpoint_{step}")
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, NUMPY_PROMPT)
  with open(path, "wb") as f:  # prompt_tuning.train.utils.np_save: np.save to a file object.
    np.save(f, np.asarray(prompt).astype(np.float32))
  return path


def _adafactor_state(prompt: np.ndarray) -> dict:
  rows, cols = prompt.shape
  return {"encoder": {"prompt": {"prompt": {"prompt": {
      "v_row": np.full((rows,), 0.5, np.float32), "v_col": np.full((cols,), 0.25, np.float32),
      "v": np.zeros((1,), np.float32), "m": np.zeros((1,), np.float32)}}}}}


def official_t5x_checkpoint(path: str, frozen: dict, prompt: np.ndarray, step: int,
                            inline: bool = False, extra: dict = None) -> str:
  """A T5X checkpoint folder of a prompt-tuning run: `frozen` params + the prompt."""
  params = {**frozen, "encoder": {**frozen["encoder"],
                                  "prompt": {"prompt": {"prompt": np.asarray(prompt)}}}}
  for name, value in (extra or {}).items():  # Other variables, e.g. 'encoder/adapter/kernel'.
    node = params
    *parents, leaf = name.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  ckpt_file = os.path.join(path, "checkpoint")
  if inline:
    os.makedirs(path, exist_ok=True)
    state = {"version": 3, "optimizer": {"target": params, "state": {}}}
  else:
    save_t5x(params, path, step=step)
    with open(ckpt_file, "rb") as f:
      state = serialization.msgpack_restore(f.read())
  state["optimizer"]["state"] = {"step": np.asarray(step, np.int32),
                                 "param_states": _adafactor_state(np.asarray(prompt))}
  with open(ckpt_file, "wb") as f:
    f.write(serialization.msgpack_serialize(state))
  return path


CONFIG_GIN = """from __gin__ import dynamic_registration
import __main__ as train_script
from prompt_tuning import prompts
from t5x import utils

# Macros:
# ==============================================================================
BATCH_SIZE = 8
INITIAL_CHECKPOINT_PATH = {frozen!r}
MODEL_DIR = {model_dir!r}
NUM_ENCODER_LAYERS = 2
NUM_HEADS = 4
PROMPT_LENGTH = {length}
PROMPT_REGEX = ['.*/prompt/.*']

# Parameters for utils.RestoreCheckpointConfig:
# ==============================================================================
utils.RestoreCheckpointConfig.assignment_map = ((r'^.*prompt.*$', None),)
utils.RestoreCheckpointConfig.fallback_to_scratch = True
utils.RestoreCheckpointConfig.mode = 'specific'
utils.RestoreCheckpointConfig.path = %INITIAL_CHECKPOINT_PATH

# Parameters for prompts.Prompt:
# ==============================================================================
prompts.Prompt.length = %PROMPT_LENGTH
"""


def official_run(model_dir: str, frozen_path: str, prompts: dict, inline: bool = False,
                 t5x_steps=None) -> str:
  """MODEL_DIR with a numpy checkpoint of every step of `prompts` ({step: [P, d]}) and a
  T5X checkpoint of the newest (or of `t5x_steps`), on the frozen model at `frozen_path`."""
  frozen = read_t5x(frozen_path)
  os.makedirs(model_dir, exist_ok=True)
  for step, prompt in prompts.items():
    official_numpy_checkpoint(model_dir, step, prompt)
  for step in (t5x_steps if t5x_steps is not None else [max(prompts)]):
    official_t5x_checkpoint(os.path.join(model_dir, f"checkpoint_{step}"), frozen,
                            prompts[step], step, inline=inline)
  length = next(iter(prompts.values())).shape[0]
  with open(os.path.join(model_dir, "config.gin"), "w") as f:
    f.write(CONFIG_GIN.format(frozen=frozen_path, model_dir=model_dir, length=length))
  return model_dir


def odd_prompt(shape, seed: int) -> np.ndarray:
  """float32 values whose every bit matters: signed zeros, subnormals, extremes."""
  value = np.random.default_rng(seed).normal(0, 0.5, shape).astype(np.float32)
  flat = value.reshape(-1)
  flat[:4] = [np.float32(-0.0), np.float32(1e-45), np.finfo(np.float32).max,
              np.nextafter(np.float32(1), np.float32(2))]
  return value
