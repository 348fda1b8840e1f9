"""T5X's legacy checkpoint format (version 3): read the `target` params, write round trips.

Layout of a checkpoint folder `checkpoint_<step>/`:
  checkpoint   msgpack {'version': 3, 'optimizer': {'target': params, 'state': {...}}}.
               Arrays are flax msgpack ext type 1 = packb((shape, dtype_name, bytes));
               arrays over flax's size limit are dicts {'__msgpack_chunked_array__',
               'shape', 'chunks'}; a leaf stored in TensorStore is its spec
               {'driver': 'zarr', 'kvstore': {'driver': 'gfile'|'file'|'gcs', 'path':
               'target.encoder.layers_0.attention.key.kernel'}, 'metadata': {...}}.
  target.<dotted.param.path>/   zarr v2 arrays (gzip or zstd, float32 or bfloat16).
A single-file checkpoint holds every array inline.

A checkpoint of a prompt-tuning run (google-research/prompt-tuning on T5X) also holds the
prompt, `target/encoder/prompt/prompt/prompt` [P, d] (`PROMPT_PARAM`; a zarr folder
`target.encoder.prompt.prompt.prompt/`, as T5X stores every partitioned parameter), beside
the frozen model. `read_t5x` leaves it out of the model with one line saying so;
`read_t5x_prompt` reads only it (PROMPT_FILE).

Reading streams the msgpack and *skips* `optimizer/state` (Adafactor statistics are
never decoded), then reads the TensorStore leaves concurrently. A torn checkpoint is a
one-line CheckpointError naming the file, never zeros: a msgpack file cut short anywhere,
a zarr chunk file missing (`fill_missing_data_reads: false`; T5X writes every chunk, as
its fill_value is null), truncated or failing its gzip/zstd decoding.
"""

import math
from typing import Collection, Optional

import ml_dtypes
import msgpack
import numpy as np
import tensorstore as ts
from flax import serialization, traverse_util

from ptjax import files
from ptjax.checkpoints import storage
from ptjax.checkpoints.validate import CheckpointError, check_dtype, flat, resolve_dtype

CHECKPOINT_FILE = "checkpoint"
VERSION = 3
_NDARRAY, _COMPLEX, _NPSCALAR = 1, 2, 3  # flax's msgpack ext type codes.
_CHUNK_BYTES = 64 * 2**20  # Zarr chunk size the writer aims for.
# The prompt of a prompt-tuning run, in its T5X checkpoints (the flaxformer PromptEncoder's
# `prompt` module wrapping prompt_tuning.prompts.Prompt, whose variable is `prompt`).
PROMPT_PARAM = "encoder/prompt/prompt/prompt"


def _ext_hook(code: int, data: bytes):
  if code in (_NDARRAY, _NPSCALAR):
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=False)
    array = np.frombuffer(buffer, resolve_dtype(dtype_name, "msgpack array")).reshape(shape)
    return array if code == _NDARRAY else array[()]
  if code == _COMPLEX:
    return complex(*msgpack.unpackb(data))
  return msgpack.ExtType(code, data)


def _unchunk(tree):
  """Restores flax's chunked encoding of very large inline arrays."""
  if not isinstance(tree, dict):
    return tree
  if "__msgpack_chunked_array__" in tree:
    shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
    chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
    return np.concatenate(chunks).reshape(shape)
  return {k: _unchunk(v) for k, v in tree.items()}


def checkpoint_file(path: str) -> str:
  """The msgpack file of a checkpoint folder, or the path itself for a single file."""
  candidate = files.join(path, CHECKPOINT_FILE)
  return candidate if files.exists(candidate) else path


def _file_size(path: str) -> Optional[int]:
  return files.getsize(path)


def _read_target(stream, source: str, ckpt_file: Optional[str] = None,
                 size: Optional[int] = None) -> dict:
  """Streams the msgpack map; decodes only optimizer/target. Every key is walked (the
  optimizer state is skipped, not decoded), so a file cut short anywhere is an error."""
  ckpt_file = ckpt_file or source
  unpacker = msgpack.Unpacker(stream, raw=False, ext_hook=_ext_hook, strict_map_key=False,
                              max_buffer_size=2**31 - 1)
  try:
    num_keys = unpacker.read_map_header()
  except msgpack.OutOfData:
    raise CheckpointError(
        f"T5X checkpoint file {ckpt_file} is empty (0 bytes): a truncated copy? Copy the "
        f"checkpoint again from where it was written.") from None
  except (msgpack.UnpackException, ValueError) as e:
    raise CheckpointError(f"{source} is not a T5X checkpoint (not a msgpack map: {e}).") from None
  version, target = None, None
  try:
    for _ in range(num_keys):
      key = unpacker.unpack()
      if key == "version":
        version = unpacker.unpack()
      elif key == "optimizer":
        for _ in range(unpacker.read_map_header()):
          if unpacker.unpack() == "target":
            target = unpacker.unpack()
          else:
            unpacker.skip()  # Optimizer statistics: never materialised.
      elif key == "target":  # Some exporters write params at the top level.
        target = unpacker.unpack()
      else:
        unpacker.skip()
    target = _unchunk(target)
  except CheckpointError:
    raise
  except (msgpack.UnpackException, ValueError, TypeError, KeyError) as e:
    raise _corrupt_msgpack(ckpt_file, unpacker.tell(), size, e) from None
  if target is None:
    raise CheckpointError(
        f"{source} is not a T5X checkpoint: it has no optimizer/target parameters.")
  if version is not None and version != VERSION:
    raise CheckpointError(
        f"{source}: T5X checkpoint version {version} is not supported (ptjax reads version "
        f"{VERSION}); re-save it with a current T5X.")
  return target


def _corrupt_msgpack(ckpt_file: str, position: int, size: Optional[int],
                     error: Exception) -> CheckpointError:
  of = f"{size:,} bytes, " if size is not None else ""
  if isinstance(error, msgpack.OutOfData):
    what = f"is truncated ({of}cut short inside the value starting at byte {position:,})"
  else:
    detail = _one_line(str(error) or type(error).__name__)
    what = f"is corrupt ({of}{detail}, in the value starting at byte {position:,})"
  return CheckpointError(f"T5X checkpoint file {ckpt_file} {what}; copy the checkpoint again "
                         f"from where it was written.")


def _one_line(message: str, limit: int = 300) -> str:
  """A library error as one short line: TensorStore's trailing spec dump dropped."""
  message = message.split(" [tensorstore_spec=")[0].split(" [source locations=")[0]
  message = " ".join(message.split())
  return message if len(message) <= limit else message[:limit - 3] + "..."


def read_t5x_step(path: str) -> int:
  """The training step a T5X checkpoint was written at (`optimizer/state/step`; 0 when
  absent). T5X's TRAIN_STEPS counts from it: `checkpoint_1100000` + 50,000 steps = 1,150,000.
  Streams the msgpack map and decodes nothing else."""
  ckpt_file = checkpoint_file(path)
  with files.open_read(ckpt_file, binary=True) as stream:
    unpacker = msgpack.Unpacker(stream, raw=False, ext_hook=_ext_hook, strict_map_key=False,
                                max_buffer_size=2**31 - 1)
    try:
      for _ in range(unpacker.read_map_header()):
        if unpacker.unpack() != "optimizer":
          unpacker.skip()
          continue
        for _ in range(unpacker.read_map_header()):
          if unpacker.unpack() != "state":
            unpacker.skip()
            continue
          for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "step":
              return int(np.asarray(unpacker.unpack()))
            unpacker.skip()
    except (msgpack.UnpackException, ValueError, msgpack.OutOfData) as e:
      raise CheckpointError(f"T5X checkpoint {path}: cannot read its step ({e}).") from None
  return 0


def _is_ts_spec(leaf) -> bool:
  return isinstance(leaf, dict) and "driver" in leaf and "kvstore" in leaf


def _resolve_spec(spec: dict, directory: str) -> dict:
  """Points a stored spec's kvstore (gfile/file/gcs, usually a relative path) at `directory`."""
  spec = dict(spec)
  rel = spec["kvstore"]["path"].rstrip("/")
  # Checkpoints get copied around: keep only the array's folder name.
  name = rel.rsplit("/", 1)[-1]
  spec["kvstore"] = storage.kvstore_spec(files.join(directory, name))
  return spec


def _strict(spec: dict) -> dict:
  """The spec with reads of absent chunks failing (TensorStore's default fills them)."""
  if spec.get("driver") in ("zarr", "zarr3"):
    return {**spec, "fill_missing_data_reads": False}
  return spec


def _chunk_error(error: Exception) -> str:
  """TensorStore's read error as one line naming the chunk file."""
  message = _one_line(str(error))
  for status in ("NOT_FOUND: ", "FAILED_PRECONDITION: ", "DATA_LOSS: ", "OUT_OF_RANGE: ",
                 "INVALID_ARGUMENT: "):
    message = message.removeprefix(status)
  return message


def _lenient_if_filled(store, spec: dict):
  """The store itself, or reopened without the strict read when it has a fill value: with
  one, TensorStore writers omit chunks equal to it, so an absent chunk is valid."""
  if store.fill_value is not None and "fill_missing_data_reads" in _strict(spec):
    return ts.open(spec, open=True, read=True).result()
  return store


def _open_error(source: str, name: str, spec: dict, error: Exception) -> CheckpointError:
  return CheckpointError(
      f"{source}: parameter {name} is stored in TensorStore at {spec['kvstore']['path']} "
      f"but cannot be opened ({_one_line(str(error))}). Copy the whole checkpoint folder, "
      f"including its target.* subfolders.")


def _read_error(source: str, name: str, error: Exception) -> CheckpointError:
  """A missing, truncated or corrupt chunk file, as one line: never zeros."""
  return CheckpointError(
      f"{source}: parameter {name} cannot be read: {_chunk_error(error)}. The checkpoint "
      f"is incomplete or damaged; copy it again, whole.")


def _split_leaves(tree: dict):
  """{'a': {'b': leaf}} -> {('a', 'b'): leaf}, stopping at TensorStore specs."""
  out = {}

  def walk(node, prefix):
    if isinstance(node, dict) and not _is_ts_spec(node):
      for k, v in node.items():
        walk(v, prefix + (k,))
    else:
      out[prefix] = node
  walk(tree, ())
  return out


def _note(line: str) -> None:
  """One line on stdout, from process 0 only."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    print(line, flush=True)


def _leaf_shape(leaf) -> Optional[tuple]:
  if _is_ts_spec(leaf):
    shape = leaf.get("metadata", {}).get("shape")
    return tuple(shape) if shape is not None else None
  return tuple(np.shape(leaf)) if isinstance(leaf, np.ndarray) else None


def _read_leaves(path: str) -> tuple[str, str, dict]:
  """(source, folder of the msgpack file, {('a', 'b'): array or TensorStore spec})."""
  ckpt_file = checkpoint_file(path)
  source = f"T5X checkpoint {path}"
  with files.open_read(ckpt_file, binary=True) as f:
    target = _read_target(f, source, ckpt_file, _file_size(ckpt_file))
  return source, files.dirname(ckpt_file), _split_leaves(target)


def _read_arrays(leaves: dict, directory: str, source: str,
                 dtype: Optional[str] = None) -> dict:
  """{key: np.ndarray}: TensorStore leaves read concurrently, every leaf dtype-checked."""
  leaves = dict(leaves)
  pending = {}
  for key, leaf in leaves.items():
    if _is_ts_spec(leaf):
      spec = _resolve_spec(leaf, directory)
      pending[key] = (spec, ts.open(_strict(spec), open=True, read=True))
  for key, (spec, opening) in pending.items():  # Reads run concurrently.
    try:
      pending[key] = (spec, _lenient_if_filled(opening.result(), spec).read())
    except ValueError as e:
      raise _open_error(source, "/".join(key), spec, e) from None
  for key, (spec, reading) in pending.items():
    try:
      leaves[key] = np.asarray(reading.result())
    except ValueError as e:  # A missing, truncated or corrupt chunk file: never zeros.
      raise _read_error(source, "/".join(key), e) from None
  params = {}
  for key, array in leaves.items():
    name = "/".join(key)
    if not isinstance(array, np.ndarray):
      raise CheckpointError(f"{source}: parameter {name} is not an array ({type(array).__name__}).")
    check_dtype(name, array.dtype, source)
    params[key] = array.astype(resolve_dtype(dtype, "dtype")) if dtype else array
  return params


def note_prompt_left_out(source: str, shape: Optional[tuple]) -> None:
  """The one line saying a prompt-tuning checkpoint's prompt is not part of the model."""
  _note(f"{source} also holds a prompt-tuning prompt ({PROMPT_PARAM}"
        f"{'' if shape is None else ' ' + str(list(shape))}): left out of the frozen "
        f"model; to use that prompt, pass this checkpoint as PROMPT_FILE.")


def read_t5x(path: str, dtype: Optional[str] = None,
             names: Optional[Collection[str]] = None) -> dict:
  """Params of a T5X checkpoint folder, single file or gs:// path; optional cast to `dtype`.

  `names` ('token_embedder/embedding', ...): only these parameters, and only their arrays
  are read (an XXL embedding without the other 11B parameters). Without `names`, the prompt
  of a prompt-tuning run's checkpoint (`PROMPT_PARAM`) is left out, never read, with one
  line saying so: such a checkpoint is also a frozen model (INITIAL_CHECKPOINT_PATH)."""
  source, directory, leaves = _read_leaves(path)
  if names is not None:
    missing = sorted(set(names) - {"/".join(k) for k in leaves})
    if missing:
      raise CheckpointError(f"{source}: no parameter {', '.join(missing)}.")
    leaves = {k: v for k, v in leaves.items() if "/".join(k) in names}
  else:
    prompt_key = tuple(PROMPT_PARAM.split("/"))
    if prompt_key in leaves:
      note_prompt_left_out(source, _leaf_shape(leaves.pop(prompt_key)))
  return traverse_util.unflatten_dict(_read_arrays(leaves, directory, source, dtype))


def read_t5x_prompt(path: str) -> Optional[np.ndarray]:
  """The prompt (`PROMPT_PARAM`, float32 [P, d]) of a prompt-tuning run's T5X checkpoint;
  None when the checkpoint has none (a frozen model). Only that array is read."""
  source, directory, leaves = _read_leaves(path)
  key = tuple(PROMPT_PARAM.split("/"))
  if key not in leaves:
    return None
  return _read_arrays({key: leaves[key]}, directory, source, "float32")[key]


def _zarr_dtype(dtype: np.dtype) -> str:
  return "bfloat16" if dtype == np.dtype(ml_dtypes.bfloat16) else dtype.str


def save_t5x(params: dict, path: str, *, step: int = 0, dtype: Optional[str] = None,
             compressor: str = "gzip", chunk_bytes: int = _CHUNK_BYTES) -> str:
  """Writes params as a T5X checkpoint folder readable by T5X and `read_t5x`.

  Arrays of rank >= 2 go to zarr (`compressor` 'gzip' or 'zstd'), in chunks of whole rows
  of at most `chunk_bytes` (64 MiB, T5X's target; a reader decompresses whole chunks, so
  smaller chunks lower the peak memory of block reads); vectors stay inline.
  The optimizer state holds only `step`: T5X restores such a checkpoint as the
  initial checkpoint of a new run. Returns the folder path.
  """
  if compressor not in ("gzip", "zstd"):
    raise ValueError(f"save_t5x(compressor={compressor!r}): use 'gzip' or 'zstd'.")
  target, writes = {}, []
  for name, array in flat(params).items():
    array = np.asarray(array)
    if dtype:
      array = array.astype(resolve_dtype(dtype, "dtype"))
    key = tuple(name.split("/"))
    if array.ndim < 2:
      target[key] = array
      continue
    folder = "target." + ".".join(key)
    row_bytes = array.dtype.itemsize * math.prod(array.shape[1:])
    chunks = [max(1, min(array.shape[0], chunk_bytes // max(row_bytes, 1))), *array.shape[1:]]
    metadata = {"chunks": chunks, "compressor": {"id": compressor, "level": 1},
                "dtype": _zarr_dtype(array.dtype), "shape": list(array.shape)}
    spec = {"driver": "zarr", "kvstore": storage.kvstore_spec(files.join(path, folder)),
            "metadata": metadata}
    if files.exists(files.join(path, folder)):
      # Not TensorStore's delete_existing: it deletes a key range, which Cloud Storage
      # emulators (no startOffset/endOffset) widen to the whole bucket.
      files.rmtree(files.join(path, folder))
    store = ts.open(spec, create=True).result()
    writes.append(store.write(array))
    target[key] = {"driver": "zarr", "kvstore": {"driver": "gfile", "path": folder},
                   "metadata": metadata}
  for write in writes:
    write.result()
  state = {"version": VERSION,
           "optimizer": {"target": traverse_util.unflatten_dict(target),
                         "state": {"step": np.asarray(step, np.int32)}}}
  files.write_bytes(files.join(path, CHECKPOINT_FILE), serialization.msgpack_serialize(state))
  return path
