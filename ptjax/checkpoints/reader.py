"""Block readers of frozen checkpoints: the shape of every parameter, then any block of one.

`open_reader(path)` gives a `CheckpointReader` over a T5X checkpoint (folder, single msgpack
file or gs:// path) or a Hugging Face folder. `shapes()` reads no array; `read(name, index)`
reads only the bytes of the block `index` (a TensorStore slice read for T5X zarr leaves, a
safetensors `get_slice` for HF tensors). `load_checkpoint(..., shardings=...)` builds global
jax.Arrays from it, each process reading only what its devices hold.

Names and layout are T5X's ('encoder/layers_0/attention/key/kernel', kernels [in, out]);
the HF reader maps HF tensors to them (`hf.key_map`): a block of a transposed kernel is the
transposed block of the HF tensor ([out, in]), read with the index reversed.

Errors are those of the whole-tree readers (`t5x.read_t5x`, `hf.read_hf`), one line each:
a truncated msgpack file, a missing or corrupt zarr chunk (never zeros), a missing tensor,
a truncated safetensors file.
"""

import json
import os
import struct
from typing import Optional, Protocol

import jax
import numpy as np
import tensorstore as ts
from safetensors import safe_open

from ptjax import files
from ptjax.checkpoints import hf, t5x
from ptjax.checkpoints.validate import CheckpointError, check_dtype, resolve_dtype
from ptjax.model import T5Config

Index = tuple[slice, ...]


class CheckpointReader(Protocol):
  """Shapes and blocks of a checkpoint's parameters, by T5X name."""
  source: str  # 'T5X checkpoint /path' etc., for messages.

  def shapes(self) -> dict[str, jax.ShapeDtypeStruct]:
    """'encoder/layers_0/attention/key/kernel' -> stored shape and dtype, T5X names and
    T5X layout ([in, out] kernels), every parameter of the checkpoint."""

  def read(self, name: str, index: Index) -> np.ndarray:
    """Only the block `index` of parameter `name` (stored dtype); reads only the bytes
    needed."""


def _check_index(source: str, name: str, index: Index, shape: tuple) -> Index:
  """`index` as one slice per axis with step 1 (what jax shardings produce)."""
  index = tuple(index)
  if len(index) != len(shape) or any(not isinstance(s, slice) or s.step not in (None, 1)
                                     for s in index):
    raise ValueError(f"{source}: read({name!r}, {index}) needs one unit-step slice per axis "
                     f"of its shape {shape}.")
  return index


class T5XReader:
  """A T5X checkpoint: the msgpack `target` streamed once (optimizer state skipped, inline
  arrays kept; for a TensorStore checkpoint only vectors are inline), zarr leaves opened
  on first read and sliced by TensorStore (only the chunks the block touches are read; a
  chunk spans whole rows, so a column block decompresses every chunk of the array)."""

  def __init__(self, path: str):
    self.source, self._directory, leaves = t5x._read_leaves(path)  # pylint: disable=protected-access
    self._leaves = {"/".join(k): v for k, v in leaves.items()}
    self._stores = {}
    self._shapes = None

  def shapes(self) -> dict[str, jax.ShapeDtypeStruct]:
    if self._shapes is None:
      shapes = {}
      for name, leaf in self._leaves.items():
        if t5x._is_ts_spec(leaf):  # pylint: disable=protected-access
          meta = leaf.get("metadata", {})
          if "shape" in meta and "dtype" in meta:  # T5X writes both: no read needed.
            shape, dtype = tuple(meta["shape"]), resolve_dtype(meta["dtype"], name)
          else:
            store = self._store(name)
            shape, dtype = tuple(store.shape), np.dtype(store.dtype.numpy_dtype)
        elif isinstance(leaf, np.ndarray):
          shape, dtype = leaf.shape, leaf.dtype
        else:
          raise CheckpointError(f"{self.source}: parameter {name} is not an array "
                                f"({type(leaf).__name__}).")
        check_dtype(name, dtype, self.source)
        shapes[name] = jax.ShapeDtypeStruct(shape, dtype)
      self._shapes = shapes
    return dict(self._shapes)

  def _store(self, name: str):
    if name not in self._stores:
      spec = t5x._resolve_spec(self._leaves[name], self._directory)  # pylint: disable=protected-access
      try:
        store = ts.open(t5x._strict(spec), open=True, read=True).result()  # pylint: disable=protected-access
        self._stores[name] = t5x._lenient_if_filled(store, spec)  # pylint: disable=protected-access
      except ValueError as e:
        raise t5x._open_error(self.source, name, spec, e) from None  # pylint: disable=protected-access
    return self._stores[name]

  def read(self, name: str, index: Index) -> np.ndarray:
    if name not in self._leaves:
      raise CheckpointError(f"{self.source}: no parameter {name}.")
    index = _check_index(self.source, name, index, self.shapes()[name].shape)
    leaf = self._leaves[name]
    if not t5x._is_ts_spec(leaf):  # pylint: disable=protected-access
      return np.asarray(leaf[index])
    try:
      return np.asarray(self._store(name)[index].read().result())
    except ValueError as e:  # A missing, truncated or corrupt chunk file: never zeros.
      raise t5x._read_error(self.source, name, e) from None  # pylint: disable=protected-access


def _safetensors_header(path: str) -> dict:
  """The JSON header of a local safetensors file, checked against the file's size."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(8)
    header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else None
    if header_len is None or 8 + header_len > size:
      # Not even a whole header: the whole-file check words it (tiny, all in memory).
      problem = hf._safetensors_problem(head + f.read(min(size, 2**20)))  # pylint: disable=protected-access
      raise CheckpointError(f"{path} {problem}; copy it again from where it was written.")
    raw = f.read(header_len)
  try:
    header = json.loads(raw)
    end = max([0] + [int(v["data_offsets"][1]) for k, v in header.items()
                     if k != "__metadata__"])
  except (ValueError, TypeError, KeyError, IndexError, AttributeError):
    raise CheckpointError(f"{path} is corrupt (its header is not safetensors JSON); copy it "
                          f"again from where it was written.") from None
  if 8 + header_len + end > size:
    raise CheckpointError(f"{path} is truncated ({size:,} bytes; its header describes "
                          f"{8 + header_len + end:,}); copy it again from where it was "
                          f"written.")
  header.pop("__metadata__", None)
  return header


class HFReader:
  """A local Hugging Face T5ForConditionalGeneration folder (config.json + model.safetensors
  or its sharded index), read tensor block by tensor block through `safe_open.get_slice`.
  `config` is the folder's T5Config (as `hf.read_hf`)."""

  def __init__(self, folder: str):
    self.source = f"Hugging Face checkpoint {folder}"
    if files.is_remote(folder):
      raise CheckpointError(f"{self.source}: a sharded load reads Hugging Face folders from "
                            f"local disk only; copy the folder to a local path first.")
    hf._check_folder(folder, self.source)  # pylint: disable=protected-access
    self._files = {}  # HF tensor name -> safetensors file.
    headers = {}
    for path in hf._shard_files(folder):  # pylint: disable=protected-access
      for tensor, info in _safetensors_header(path).items():
        if info.get("dtype") not in hf._SAFETENSORS_DTYPES:  # pylint: disable=protected-access
          raise CheckpointError(f"{path}: tensor {tensor} has unsupported dtype "
                                f"{info.get('dtype')}.")
        self._files[tensor], headers[tensor] = path, info
    has_lm_head = ("lm_head.weight" in headers and "shared.weight" in headers
                   and not self._equal("lm_head.weight", "shared.weight", headers))
    self.config: T5Config = hf.config_from_hf(
        hf._read_json(files.join(folder, hf.CONFIG_FILE),  # pylint: disable=protected-access
                      "a Hugging Face T5 config.json is a JSON object"),
        f"{self.source}/{hf.CONFIG_FILE}", has_lm_head)
    used = set(hf._TIED_COPIES)  # pylint: disable=protected-access
    if self.config.logits_via_embedding:  # An exporter's copy of the tied embedding.
      used.add("lm_head.weight")
    self._map, shapes = {}, {}
    for hf_name, name, transpose in hf.key_map(self.config):
      if hf_name not in headers:
        raise CheckpointError(f"{self.source}: tensor {hf_name} (for {name}) is missing.")
      dtype = np.dtype(hf._SAFETENSORS_DTYPES[headers[hf_name]["dtype"]])  # pylint: disable=protected-access
      check_dtype(hf_name, dtype, self.source)
      shape = tuple(headers[hf_name]["shape"])
      shapes[name] = jax.ShapeDtypeStruct(shape[::-1] if transpose else shape, dtype)
      self._map[name] = (hf_name, transpose, dtype)
      used.add(hf_name)
    hf.check_unexpected(headers, used, self.source)
    self._shapes = shapes

  def _equal(self, a: str, b: str, headers: dict, rows: int = 1024) -> bool:
    """Whether two tensors hold the same values, compared `rows` rows at a time."""
    if headers[a]["shape"] != headers[b]["shape"] or headers[a]["dtype"] != headers[b]["dtype"]:
      return False
    n = headers[a]["shape"][0]
    for start in range(0, n, rows):
      block = (slice(start, min(start + rows, n)),) + (slice(None),) * (len(headers[a]["shape"]) - 1)
      if not np.array_equal(self._slice(a, block, None), self._slice(b, block, None)):
        return False
    return True

  def _slice(self, hf_name: str, index: Index, dtype: Optional[np.dtype]) -> np.ndarray:
    with safe_open(self._files[hf_name], framework="numpy") as f:
      block = np.asarray(f.get_slice(hf_name)[index])
    if dtype is not None and block.dtype != dtype:  # safetensors hands BF16 back as raw bits.
      block = block.view(dtype)
    return block

  def shapes(self) -> dict[str, jax.ShapeDtypeStruct]:
    return dict(self._shapes)

  def read(self, name: str, index: Index) -> np.ndarray:
    if name not in self._map:
      raise CheckpointError(f"{self.source}: no parameter {name}.")
    index = _check_index(self.source, name, index, self._shapes[name].shape)
    hf_name, transpose, dtype = self._map[name]
    if transpose:  # T5X [in, out] block = transposed HF [out, in] block.
      return np.ascontiguousarray(self._slice(hf_name, index[::-1], dtype).T)
    return self._slice(hf_name, index, dtype)


def open_reader(path: str) -> CheckpointReader:
  """A reader of a T5X checkpoint (folder, single msgpack file, gs://) or a local HF folder;
  the format errors of `detect_format` otherwise."""
  from ptjax.checkpoints import detect_format  # pylint: disable=g-import-not-at-top
  return HFReader(path) if detect_format(path) == "hf" else T5XReader(path)
