"""Torn and corrupt frozen-model checkpoints: one-line errors naming the file, never zeros.

T5X zarr chunks missing / cut / garbled, T5X msgpack files cut at any byte, HF safetensors
files cut in the header or the data, a sharded HF index naming a missing shard, and
`ptjax.convert` writing nothing from such input.
"""

import gzip
import json
import os
import shutil

import numpy as np
import pytest
import safetensors.numpy
import tensorstore as ts
from flax import serialization

from conftest import INLINE_CKPT, LOCAL_FIXTURES, TENSORSTORE_CKPT, shared_fixture
from ptjax import convert
from ptjax.checkpoints import CheckpointError, load_checkpoint, read_hf, read_t5x, save_t5x

EMBEDDING = "target.token_embedder.embedding"  # 8 chunk files 0.0 .. 7.0 of [4096, 4].
SMALL = "target.encoder.layers_0.attention.key.kernel"  # One chunk file 0.0.
HEAD_DIM_MODEL = os.path.join(LOCAL_FIXTURES, "hf_parity", "v1_1_head_dim", "model")


def one_line_error(fn, *args, **kwargs) -> str:
  with pytest.raises(CheckpointError) as e:
    fn(*args, **kwargs)
  message = str(e.value)
  assert "\n" not in message and len(message) < 600, message
  return message


@pytest.fixture
def t5x_copy(tmp_path):
  dst = tmp_path / "checkpoint_3"
  shutil.copytree(shared_fixture(TENSORSTORE_CKPT), dst)
  for root, dirs, files in os.walk(dst):  # The shared fixtures are read-only.
    for name in dirs + files:
      os.chmod(os.path.join(root, name), 0o755)
  return dst


# --- T5X zarr chunks ------------------------------------------------------------------------

def _delete(f):
  f.unlink()


def _truncate(f):
  f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])


def _empty(f):
  f.write_bytes(b"")


def _garble(f):  # Same length, gzip's CRC no longer matches.
  data = bytearray(f.read_bytes())
  data[len(data) // 2:len(data) // 2 + 64] = b"x" * 64
  f.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_delete, _truncate, _empty, _garble])
@pytest.mark.parametrize("folder,chunk,param", [
    (EMBEDDING, "3.0", "token_embedder/embedding"),
    (SMALL, "0.0", "encoder/layers_0/attention/key/kernel")])
def test_damaged_zarr_chunk_is_an_error_naming_parameter_and_chunk(t5x_copy, damage, folder,
                                                                    chunk, param):
  chunk_file = t5x_copy / folder / chunk
  damage(chunk_file)
  for load in (read_t5x, load_checkpoint):
    message = one_line_error(load, str(t5x_copy))
    assert f"parameter {param} cannot be read" in message
    assert str(chunk_file) in message
  if damage is _delete:
    assert "is missing" in message
  # Reading other parameters by name does not touch the damaged array.
  other = "decoder/logits_dense/kernel"
  assert read_t5x(str(t5x_copy), names={other})["decoder"]["logits_dense"]["kernel"].any()


def test_missing_chunk_of_ptjax_written_zstd_checkpoint(tmp_path):
  w = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
  save_t5x({"enc": {"w": w}}, str(tmp_path / "c"), compressor="zstd")
  np.testing.assert_array_equal(read_t5x(str(tmp_path / "c"))["enc"]["w"], w)
  chunk = tmp_path / "c" / "target.enc.w" / "0.0"
  chunk.write_bytes(chunk.read_bytes()[:-5])
  assert str(chunk) in one_line_error(read_t5x, str(tmp_path / "c"))
  chunk.unlink()
  assert str(chunk) in one_line_error(read_t5x, str(tmp_path / "c"))


def test_omitted_fill_value_chunk_still_reads(tmp_path):
  # With a non-null fill_value TensorStore itself omits chunks equal to it: that is valid.
  folder = tmp_path / "c"
  metadata = {"chunks": [2, 3], "compressor": {"id": "gzip", "level": 1}, "dtype": "<f4",
              "shape": [6, 3], "fill_value": 0.0}
  store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(folder / "target.w")},
                   "metadata": metadata}, create=True).result()
  w = np.arange(18, dtype=np.float32).reshape(6, 3)
  w[2:4] = 0
  store.write(w).result()
  assert sorted(os.listdir(folder / "target.w")) == [".zarray", "0.0", "2.0"]
  spec = {"driver": "zarr", "kvstore": {"driver": "gfile", "path": "target.w"},
          "metadata": {k: v for k, v in metadata.items() if k != "fill_value"}}
  (folder / "checkpoint").write_bytes(serialization.msgpack_serialize(
      {"version": 3, "optimizer": {"target": {"w": spec}, "state": {"step": 1}}}))
  np.testing.assert_array_equal(read_t5x(str(folder))["w"], w)


# --- T5X msgpack files ---------------------------------------------------------------------

def _cuts(size):
  return [1, 10, size // 2, size - 3, size - 1]


def test_truncated_msgpack_in_checkpoint_folder(t5x_copy):
  ckpt_file = t5x_copy / "checkpoint"
  data = ckpt_file.read_bytes()
  for cut in _cuts(len(data)):
    ckpt_file.write_bytes(data[:cut])
    for load in (read_t5x, load_checkpoint):
      message = one_line_error(load, str(t5x_copy))
      assert f"T5X checkpoint file {ckpt_file} is truncated ({cut:,} bytes" in message, cut
  ckpt_file.write_bytes(b"")
  for load in (read_t5x, load_checkpoint):
    assert f"{ckpt_file} is empty (0 bytes)" in one_line_error(load, str(t5x_copy))


def test_truncated_single_file_checkpoint(tmp_path):
  data = open(shared_fixture(INLINE_CKPT), "rb").read()
  path = tmp_path / "tiny.checkpoint_0"
  for cut in _cuts(len(data)):
    path.write_bytes(data[:cut])
    for load in (read_t5x, load_checkpoint):
      message = one_line_error(load, str(path))
      assert f"T5X checkpoint file {path} is truncated" in message, cut
  path.write_bytes(b"")
  for load in (read_t5x, load_checkpoint):
    assert f"{path} is empty (0 bytes)" in one_line_error(load, str(path))


def test_corrupt_inline_array_in_msgpack(tmp_path):
  # An inline array whose buffer does not match its shape: corrupt, named, one line.
  import msgpack
  bad = msgpack.ExtType(1, msgpack.packb(((4, 4), "float32", b"\0" * 12)))
  blob = msgpack.packb({"version": 3, "optimizer": {"target": {"w": bad}}})
  (tmp_path / "bad.ckpt").write_bytes(blob)
  message = one_line_error(read_t5x, str(tmp_path / "bad.ckpt"))
  assert f"T5X checkpoint file {tmp_path / 'bad.ckpt'} is corrupt" in message


# --- ptjax.convert -------------------------------------------------------------------------

def test_convert_writes_nothing_from_a_torn_checkpoint(t5x_copy, tmp_path, capsys):
  (t5x_copy / EMBEDDING / "3.0").unlink()
  for fmt in ("t5x", "hf"):
    out = tmp_path / f"out_{fmt}"
    code = convert.main(["--input", str(t5x_copy), "--output", str(out), "--format", fmt,
                         "--config", "tiny"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(t5x_copy / EMBEDDING / "3.0") in err
    assert not out.exists()


# --- Hugging Face safetensors --------------------------------------------------------------

@pytest.fixture
def hf_copy(tmp_path):
  dst = tmp_path / "model"
  shutil.copytree(HEAD_DIM_MODEL, dst)
  return dst


def test_truncated_safetensors(hf_copy):
  weights = hf_copy / "model.safetensors"
  data = weights.read_bytes()
  header = 8 + int.from_bytes(data[:8], "little")
  for cut, what in [(0, "is empty"), (5, "is truncated (5 bytes"),
                    (header - 10, "its header alone needs"),
                    (header + 10, "its header describes"), (len(data) - 3, "its header describes")]:
    weights.write_bytes(data[:cut])
    message = one_line_error(read_hf, str(hf_copy))
    assert message.startswith(f"{weights} ") and what in message, (cut, message)
    assert what in one_line_error(load_checkpoint, str(hf_copy))
  weights.write_bytes(data + b"extra")
  assert f"{weights} is not a valid safetensors file" in one_line_error(read_hf, str(hf_copy))


def _shard(folder):
  tensors = safetensors.numpy.load_file(str(folder / "model.safetensors"))
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  for shard, keys in shards.items():
    safetensors.numpy.save_file({k: tensors[k] for k in keys}, str(folder / shard))
  (folder / "model.safetensors").unlink()
  (folder / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}))
  return shards


def test_sharded_index_naming_a_missing_or_cut_shard(hf_copy, tmp_path):
  _, whole = read_hf(str(hf_copy))
  shards = _shard(hf_copy)
  _, sharded = read_hf(str(hf_copy))  # The index is followed.
  for a, b in zip(*(jax_leaves(t) for t in (whole, sharded))):
    np.testing.assert_array_equal(a, b)
  second = hf_copy / "model-00002-of-00002.safetensors"
  data = second.read_bytes()
  second.write_bytes(data[:len(data) // 2])
  assert f"{second} is truncated" in one_line_error(read_hf, str(hf_copy))
  second.unlink()
  message = one_line_error(load_checkpoint, str(hf_copy))
  assert message.startswith(f"{second} is missing: model.safetensors.index.json puts "
                            f"{len(shards[second.name])} tensor(s) in it")
  (hf_copy / "model.safetensors.index.json").write_text('{"weight_map": ')
  assert "model.safetensors.index.json is not valid JSON" in one_line_error(read_hf, str(hf_copy))


def test_corrupt_config_json(hf_copy):
  (hf_copy / "config.json").write_text('{"d_model": 4,')
  assert f"{hf_copy / 'config.json'} is not valid JSON" in one_line_error(read_hf, str(hf_copy))


def jax_leaves(tree):
  from ptjax.checkpoints.validate import flat
  return [v for _, v in sorted(flat(tree).items())]
