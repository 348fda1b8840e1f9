"""Frozen-model checkpoints: one loader for T5X folders, T5X single files and HF folders."""

import collections
import ctypes
import ctypes.util
import re
from typing import Any, Collection, Mapping, Optional, Union

import jax
import numpy as np
from flax import traverse_util

from ptjax import files
from ptjax.checkpoints import layout
from ptjax.checkpoints.hf import config_from_hf, config_to_hf, is_hf_folder, read_hf, save_hf
from ptjax.checkpoints.reader import CheckpointReader, open_reader
from ptjax.checkpoints.t5x import (CHECKPOINT_FILE, PROMPT_PARAM, note_prompt_left_out,
                                   read_t5x, read_t5x_prompt, read_t5x_step, save_t5x)
from ptjax.checkpoints.validate import (CheckpointError, check_names, check_params, flat,
                                         resolve_dtype)
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
                    dtype: Union[None, str, Mapping[str, str]] = None,
                    names: Optional[Collection[str]] = None,
                    shardings: Any = None) -> tuple[Optional[T5Config], dict]:
  """Loads frozen T5 params from a T5X folder / single file or an HF folder.

  Returns (config, params): the config comes from an HF config.json, or is the
  `config` given (T5X checkpoints carry none), else None. When a config is known,
  every parameter name and shape is checked against it (before any array is read).
  `dtype` casts on load: one dtype name for every parameter, or {param name: dtype name}
  (a parameter left out keeps its stored dtype). `names` ('token_embedder/embedding', ...):
  only these parameters (only their arrays are read: an XXL embedding without the other
  11B parameters).

  `shardings`: a tree of `jax.sharding.Sharding` with the T5X parameter names (e.g.
  `partitioning.logical_sharding(mesh, param_axes(config))`; with `names`, only those).
  The params are then global `jax.Array`s (`jax.make_array_from_callback`): each process
  reads only the blocks its addressable devices hold (a block read once however many of its
  devices hold it), casts them to `dtype` as they are read, one parameter at a time, so the
  host holds about one parameter's block at a time and never the whole model. Without
  `shardings`: host numpy arrays, every parameter read whole.
  """
  if names is not None and config is not None:  # A typo fails before anything is read.
    check_names(names, config, f"load_checkpoint({path!r}, names=...)")
  if shardings is not None:
    return _load_sharded(path, config, dtype, names, shardings)
  fmt = detect_format(path)
  one_dtype = dtype if dtype is None or isinstance(dtype, str) else None
  if fmt == "hf":
    hf_config, params = read_hf(path, one_dtype)
    if names is not None:
      params = traverse_util.unflatten_dict(
          {k: v for k, v in flat(params).items() if k in names}, sep="/")
    if config is not None:
      if names is None:
        params = layout.to_layout(params, config.scan_layers, config, path)
      check_params(params, config, f"Hugging Face checkpoint {path}", names)
    return config or hf_config, _cast_each(params, dtype)
  params = read_t5x(path, one_dtype, names)
  if config is not None:
    if names is None:
      params = layout.to_layout(params, config.scan_layers, config, path)
    check_params(params, config, f"T5X checkpoint {path}", names)
  return config, _cast_each(params, dtype)


def _leaf_dtype(dtype: Union[None, str, Mapping[str, str]], name: str) -> Optional[str]:
  return dtype if dtype is None or isinstance(dtype, str) else dtype.get(name)


def _cast_each(params: dict, dtype: Union[None, str, Mapping[str, str]]) -> dict:
  """`params` with each leaf cast to its dtype of a {name: dtype} mapping (a single dtype
  was applied while reading)."""
  if dtype is None or isinstance(dtype, str):
    return params
  unknown = sorted(set(dtype) - set(flat(params)))
  if unknown:
    raise CheckpointError(f"load_checkpoint(dtype=...): {', '.join(unknown[:5])} is not a "
                          f"loaded parameter (names look like 'token_embedder/embedding').")
  return traverse_util.unflatten_dict(
      {k: v.astype(resolve_dtype(dtype[k])) if k in dtype else v
       for k, v in flat(params).items()}, sep="/")


def _adapt_layout(reader, config: Optional[T5Config]):
  """The checkpoint in the layout of the model that reads it (scanned or not); unchanged
  without a config (nothing says which layout is wanted)."""
  return reader if config is None else layout.adapt(reader, config)


def _load_sharded(path: str, config: Optional[T5Config],
                  dtype: Union[None, str, Mapping[str, str]],
                  names: Optional[Collection[str]], shardings: Any):
  """`load_checkpoint` into global jax.Arrays with `shardings` (see there)."""
  reader = open_reader(path)
  config = config or getattr(reader, "config", None)
  reader = _adapt_layout(reader, config)
  shapes = reader.shapes()
  if names is not None:
    missing = sorted(set(names) - set(shapes))
    if missing:
      raise CheckpointError(f"{reader.source}: no parameter {', '.join(missing)}.")
    shapes = {k: v for k, v in shapes.items() if k in names}
  elif PROMPT_PARAM in shapes:  # A prompt-tuning run's checkpoint: the frozen model only.
    note_prompt_left_out(reader.source, tuple(shapes.pop(PROMPT_PARAM).shape))
  if config is not None:
    check_params(traverse_util.unflatten_dict(shapes, sep="/"), config, reader.source, names)
  if not isinstance(dtype, (type(None), str)):
    unknown = sorted(set(dtype) - set(shapes))
    if unknown:
      raise CheckpointError(f"load_checkpoint(dtype=...): {', '.join(unknown[:5])} is not "
                            f"a loaded parameter of {reader.source}.")
  flat_shardings = flat(shardings)
  if set(flat_shardings) != set(shapes):
    odd = sorted(set(flat_shardings) ^ set(shapes))
    raise CheckpointError(
        f"load_checkpoint(shardings=...): the shardings tree and {reader.source} differ at "
        f"{', '.join(odd[:5])}; pass one sharding per loaded parameter (T5X names).")
  params = {}
  for name in sorted(shapes):  # One parameter at a time: the host holds one block.
    params[name] = _global_leaf(reader, name, shapes[name], flat_shardings[name],
                                _leaf_dtype(dtype, name))
    _release_freed_memory()
  return config, traverse_util.unflatten_dict(params, sep="/")


try:  # glibc keeps freed blocks of TensorStore's decode threads; malloc_trim returns them.
  _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):  # Not glibc (macOS, musl): nothing to trim.
  _MALLOC_TRIM = None


def _release_freed_memory() -> None:
  """Hands the blocks freed by the last parameter's read back to the OS, so that the peak
  host memory of a sharded load stays ~ what the devices hold + one block (without it,
  glibc's per-thread arenas keep ~15% of a base model's size resident)."""
  if _MALLOC_TRIM is not None:
    _MALLOC_TRIM(0)


def _global_leaf(reader, name: str, stored, sharding, dtype: Optional[str]):
  """One parameter as a global jax.Array: each distinct block of this process's devices
  read once, cast to `dtype`."""
  target = resolve_dtype(dtype, "dtype") if dtype else np.dtype(stored.dtype)
  shape = tuple(stored.shape)
  key = lambda index: tuple(s.indices(n)[:2] for s, n in zip(index, shape))  # Hashable.
  # How many local devices hold each block: a block is read once, kept until its last
  # device has it, then dropped (the host never holds this process's whole share).
  wanted = collections.Counter(
      key(index) for index in sharding.addressable_devices_indices_map(shape).values())
  blocks = {}

  def block(index):
    k = key(index)
    if k not in blocks:
      blocks[k] = reader.read(name, tuple(slice(*b) for b in k)).astype(target, copy=False)
    wanted[k] -= 1
    return blocks.pop(k) if wanted[k] <= 0 else blocks[k]

  return jax.make_array_from_callback(tuple(stored.shape), sharding, block, dtype=target)


def checkpoint_step(path: Optional[str]) -> int:
  """The step the frozen model was trained to: a T5X checkpoint's own step; 0 for Hugging
  Face folders (they record none) and for no checkpoint (a random model)."""
  if path is None:
    return 0
  return read_t5x_step(path) if detect_format(path) == "t5x" else 0


__all__ = [
    "checkpoint_step", "read_t5x_step", "read_t5x_prompt", "PROMPT_PARAM",
    "CheckpointError", "CheckpointReader", "check_params", "config_from_hf", "config_to_hf",
    "detect_format", "is_hf_folder", "load_checkpoint", "open_reader", "read_hf", "read_t5x",
    "save_hf", "save_t5x",
]
