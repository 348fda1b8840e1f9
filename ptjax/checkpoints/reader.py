"""Block readers of frozen checkpoints: the shape of every parameter, then any block of one.

`open_reader(path)` gives a `CheckpointReader` over a T5X checkpoint (folder, single msgpack
file or gs:// path) or a Hugging Face folder. `shapes()` reads no array; `read(name, index)`
reads only the bytes of the block `index` (a TensorStore slice read for T5X zarr leaves; for
HF tensors the byte range of the block's rows, through the path layer, local or gs://). `load_checkpoint(..., shardings=...)` builds global
jax.Arrays from it, each process reading only what its devices hold.

Names and layout are T5X's ('encoder/layers_0/attention/key/kernel', kernels [in, out]);
the HF reader maps HF tensors to them (`hf.key_map`): a block of a transposed kernel is the
transposed block of the HF tensor ([out, in]), read with the index reversed.

Errors are those of the whole-tree readers (`t5x.read_t5x`, `hf.read_hf`), one line each:
a truncated msgpack file, a missing or corrupt zarr chunk (never zeros), a missing tensor,
a truncated safetensors file.
"""

import json
import struct
from typing import Optional, Protocol

import jax
import numpy as np
import tensorstore as ts

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


def _safetensors_header(path: str) -> tuple[dict, int]:
  """(the JSON header of a safetensors file, the byte offset where its data starts), checked
  against the file's size; local or gs:// (ranged reads through the path layer)."""
  size = files.getsize(path)
  with files.open_read(path, binary=True) as f:
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
  return header, 8 + header_len


class HFReader:
  """A Hugging Face T5ForConditionalGeneration folder (config.json + model.safetensors or
  its sharded index; local or gs://), read tensor block by tensor block: a block's rows are
  one contiguous byte range of the file (safetensors stores C-order arrays after a JSON
  header), read alone. `config` is the folder's T5Config (as `hf.read_hf`)."""

  def __init__(self, folder: str):
    self.source = f"Hugging Face checkpoint {folder}"
    hf._check_folder(folder, self.source)  # pylint: disable=protected-access
    self._files = {}  # HF tensor name -> (safetensors file, where its data starts).
    headers = {}
    for path in hf._shard_files(folder):  # pylint: disable=protected-access
      header, data_start = _safetensors_header(path)
      for tensor, info in header.items():
        if info.get("dtype") not in hf._SAFETENSORS_DTYPES:  # pylint: disable=protected-access
          raise CheckpointError(f"{path}: tensor {tensor} has unsupported dtype "
                                f"{info.get('dtype')}.")
        self._files[tensor], headers[tensor] = (path, data_start), info
    self._headers = headers
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
    """Block `index` of an HF tensor: only its rows' bytes are read."""
    path, data_start = self._files[hf_name]
    info = self._headers[hf_name]
    shape = tuple(info["shape"])
    stored = np.dtype(hf._SAFETENSORS_DTYPES[info["dtype"]])  # pylint: disable=protected-access
    if not shape:
      rows, rest = range(1), ()
    else:
      rows, rest = range(shape[0])[index[0]], index[1:]
    row_bytes = stored.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    offset = data_start + int(info["data_offsets"][0]) + (rows.start if rows else 0) * row_bytes
    with files.open_read(path, binary=True) as f:
      f.seek(offset)
      raw = f.read(len(rows) * row_bytes)
    block = np.frombuffer(raw, stored).reshape((len(rows),) + shape[1:] if shape else ())
    block = block[(slice(None),) + tuple(rest)] if shape else block
    return block if dtype is None else block.view(dtype) if block.dtype != dtype else block

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
