"""T5X legacy checkpoints: the real fixtures written by T5X, round trips, and errors."""

import os
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import msgpack
import numpy as np
import pytest
import tensorstore as ts
from flax import serialization

from conftest import (INLINE_CKPT, INLINE_CONFIG, TENSORSTORE_CKPT, TENSORSTORE_CONFIG,
                      shared_fixture)
from ptjax.checkpoints import (CheckpointError, load_checkpoint, read_hf, read_t5x, save_hf,
                               save_t5x)
from ptjax.checkpoints import t5x as t5x_format
from ptjax.checkpoints.validate import flat
from ptjax.model import T5, init_params, param_shapes
from ptjax.model.inference import shift_right

FIXTURES = [(TENSORSTORE_CKPT, TENSORSTORE_CONFIG), (INLINE_CKPT, INLINE_CONFIG)]


def reference_arrays(path):
  """The stored arrays, read independently: flax's own msgpack reader plus raw zarr."""
  ckpt_file = os.path.join(path, "checkpoint") if os.path.isdir(path) else path
  with open(ckpt_file, "rb") as f:
    state = serialization.msgpack_restore(f.read())
  out = {}
  for name, leaf in flat(state["optimizer"]["target"]).items():
    if isinstance(leaf, np.ndarray):
      out[name] = leaf
  # TensorStore leaves flatten into their spec's keys; read each zarr folder directly.
  for folder in os.listdir(os.path.dirname(ckpt_file)):
    if folder.startswith("target."):
      spec = {"driver": "zarr", "kvstore": {"driver": "file",
                                            "path": os.path.join(path, folder)}}
      out["/".join(folder.split(".")[1:])] = ts.open(spec).result().read().result()
  return out


def assert_trees_identical(a, b):
  fa, fb = flat(a), flat(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    assert fa[k].dtype == fb[k].dtype and fa[k].shape == fb[k].shape, k
    assert np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])), k


@pytest.mark.parametrize("relative,config", FIXTURES)
def test_fixture_loads_exactly_the_stored_arrays(relative, config):
  path = shared_fixture(relative)
  got_config, params = load_checkpoint(path, config)
  assert got_config == config
  names = {k: v.shape for k, v in flat(param_shapes(config)).items()}
  assert {k: v.shape for k, v in flat(params).items()} == names
  want = reference_arrays(path)
  assert sorted(want) == sorted(names)
  for name, array in flat(params).items():
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, want[name], err_msg=name)


@pytest.mark.parametrize("relative,config", FIXTURES)
def test_fixture_forward_pass(relative, config):
  _, params = load_checkpoint(shared_fixture(relative), config)
  inputs = jnp.array([[37, 8, 1820, 1, 0]])
  targets = jnp.array([[1820, 8, 1]])
  forward = jax.jit(lambda p: T5(config).apply({"params": p}, inputs, shift_right(targets),
                                               targets))
  logits = forward(params)
  assert logits.shape == (1, 3, 32128)
  assert np.isfinite(np.asarray(logits)).all()
  # The loaded weights are used: different params give different logits.
  other = init_params(config, jax.random.key(0))
  assert not np.allclose(np.asarray(forward(other)), np.asarray(logits))


@pytest.mark.parametrize("relative,config", FIXTURES)
def test_t5x_write_read_is_bit_identical(relative, config, tmp_path):
  _, params = load_checkpoint(shared_fixture(relative), config)
  save_t5x(params, str(tmp_path / "ckpt"), step=7)
  assert_trees_identical(read_t5x(str(tmp_path / "ckpt")), params)
  assert (tmp_path / "ckpt" / "target.token_embedder.embedding" / ".zarray").exists()


@pytest.mark.parametrize("relative,config", FIXTURES)
def test_t5x_to_hf_to_t5x_is_bit_identical(relative, config, tmp_path):
  _, params = load_checkpoint(shared_fixture(relative), config)
  save_hf(params, config, str(tmp_path / "hf"))
  hf_config, hf_params = read_hf(str(tmp_path / "hf"))
  assert hf_config == config
  save_t5x(hf_params, str(tmp_path / "back"))
  _, back = load_checkpoint(str(tmp_path / "back"), config)
  assert_trees_identical(back, params)


def test_moved_checkpoint_still_reads(tmp_path):
  # The stored kvstore is 'gfile' with relative paths: it must follow the folder.
  src = shared_fixture(TENSORSTORE_CKPT)
  dst = tmp_path / "elsewhere" / "checkpoint_3"
  shutil.copytree(src, dst)
  assert_trees_identical(read_t5x(str(dst)), read_t5x(src))


def test_reading_named_parameters_opens_only_their_arrays(tmp_path):
  src = shared_fixture(TENSORSTORE_CKPT)
  dst = tmp_path / "checkpoint_3"
  shutil.copytree(src, dst)
  full = read_t5x(src)
  # Another parameter's array is gone: a full read fails, a named read does not touch it.
  shutil.rmtree(dst / "target.decoder.logits_dense.kernel")
  with pytest.raises(CheckpointError, match="logits_dense"):
    read_t5x(str(dst))
  only = read_t5x(str(dst), names={"token_embedder/embedding"})
  assert list(flat(only)) == ["token_embedder/embedding"]
  np.testing.assert_array_equal(only["token_embedder"]["embedding"],
                                full["token_embedder"]["embedding"])
  with pytest.raises(CheckpointError, match="no parameter encoder/nope"):
    read_t5x(src, names={"encoder/nope"})
  # The one loader does the same for T5X and HF folders, checking the named shapes only.
  save_hf(full, TENSORSTORE_CONFIG, str(tmp_path / "hf"))
  for path in (str(dst), str(tmp_path / "hf")):
    _, only = load_checkpoint(path, TENSORSTORE_CONFIG, names={"token_embedder/embedding"})
    assert list(flat(only)) == ["token_embedder/embedding"]
    np.testing.assert_array_equal(only["token_embedder"]["embedding"],
                                  full["token_embedder"]["embedding"])
    with pytest.raises(CheckpointError, match="encoder/nope is not a parameter"):
      load_checkpoint(path, TENSORSTORE_CONFIG, names={"encoder/nope"})
  wider = TENSORSTORE_CONFIG.replace(emb_dim=TENSORSTORE_CONFIG.emb_dim * 2)
  with pytest.raises(CheckpointError, match="token_embedder/embedding has shape"):
    load_checkpoint(str(dst), wider, names={"token_embedder/embedding"})


def test_bfloat16_zstd_and_restore_dtype(tmp_path):
  params = init_params(TENSORSTORE_CONFIG, jax.random.key(0))
  save_t5x(params, str(tmp_path / "bf16"), dtype="bfloat16", compressor="zstd")
  zarray = (tmp_path / "bf16" / "target.token_embedder.embedding" / ".zarray").read_text()
  assert '"bfloat16"' in zarray and '"zstd"' in zarray
  loaded = read_t5x(str(tmp_path / "bf16"))
  want = jax.tree.map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16), params)
  assert_trees_identical(loaded, want)
  as_f32 = read_t5x(str(tmp_path / "bf16"), dtype="float32")
  assert_trees_identical(as_f32, jax.tree.map(lambda x: x.astype(np.float32), want))


def test_optimizer_state_is_never_decoded(tmp_path):
  # An optimizer state whose arrays cannot even be decoded (unknown dtype) must not matter.
  bogus = msgpack.ExtType(1, msgpack.packb(((2,), "no_such_dtype", b"\0" * 8)))
  target = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
  blob = serialization.msgpack_serialize({"version": 3, "optimizer": {
      "target": target, "state": {"param_states": {"w": {"v": bogus}}, "step": 3}}})
  (tmp_path / "single.ckpt").write_bytes(blob)
  np.testing.assert_array_equal(read_t5x(str(tmp_path / "single.ckpt"))["w"], target["w"])


def test_chunked_inline_arrays(tmp_path):
  # flax splits inline arrays over its msgpack size limit into chunks.
  w = np.arange(12, dtype=np.float32).reshape(4, 3)
  chunked = {"__msgpack_chunked_array__": True, "shape": {"0": 4, "1": 3},
             "chunks": {"0": w.reshape(-1)[:7], "1": w.reshape(-1)[7:]}}
  blob = serialization.msgpack_serialize({"version": 3, "optimizer": {"target": {"w": chunked}}})
  (tmp_path / "c.ckpt").write_bytes(blob)
  np.testing.assert_array_equal(read_t5x(str(tmp_path / "c.ckpt"))["w"], w)
  # flax's own reader agrees.
  np.testing.assert_array_equal(serialization.msgpack_restore(blob)["optimizer"]["target"]["w"], w)


def test_gcs_paths_map_to_tensorstore_gcs_driver():
  spec = {"driver": "zarr", "kvstore": {"driver": "gfile", "path": "target.encoder.x.kernel"}}
  resolved = t5x_format._resolve_spec(spec, "gs://t5-data/pretrained_models/t5x/small/ckpt_1")
  assert resolved["kvstore"] == {"driver": "gcs", "bucket": "t5-data",
                                 "path": "pretrained_models/t5x/small/ckpt_1/target.encoder.x.kernel"}
  local = t5x_format._resolve_spec(spec, "/data/ckpt_1")
  assert local["kvstore"] == {"driver": "file", "path": "/data/ckpt_1/target.encoder.x.kernel"}


# --- Errors a user can act on -------------------------------------------------------------

def test_error_missing_path():
  with pytest.raises(CheckpointError, match="/no/such/ckpt does not exist"):
    load_checkpoint("/no/such/ckpt")


def test_error_not_a_checkpoint(tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(CheckpointError, match="notes.txt is not a checkpoint: expected a T5X"):
    load_checkpoint(str(tmp_path / "notes.txt"))
  with pytest.raises(CheckpointError, match="is not a checkpoint: no 'checkpoint'"):
    load_checkpoint(str(tmp_path))


def test_error_model_dir_instead_of_checkpoint(tmp_path):
  (tmp_path / "checkpoint_100").mkdir()
  (tmp_path / "checkpoint_200").mkdir()
  with pytest.raises(CheckpointError, match=r"T5X model directory.*checkpoint_200"):
    load_checkpoint(str(tmp_path))


def test_error_wrong_shape_names_path_and_both_shapes():
  with pytest.raises(CheckpointError) as e:
    load_checkpoint(shared_fixture(INLINE_CKPT), TENSORSTORE_CONFIG)
  assert "decoder/decoder_norm/scale has shape (8,)" in str(e.value)
  assert "expects (4,)" in str(e.value)


def test_error_missing_parameter(tmp_path):
  params = init_params(TENSORSTORE_CONFIG, jax.random.key(0))
  del params["encoder"]["layers_1"]["mlp"]["wi_1"]
  save_t5x(params, str(tmp_path / "c"))
  with pytest.raises(CheckpointError,
                     match=r"encoder/layers_1/mlp/wi_1/kernel is missing .*shape \(4, 8\)"):
    load_checkpoint(str(tmp_path / "c"), TENSORSTORE_CONFIG)


def test_error_unsupported_dtype(tmp_path):
  blob = serialization.msgpack_serialize(
      {"version": 3, "optimizer": {"target": {"w": np.arange(4, dtype=np.int32)}}})
  (tmp_path / "int.ckpt").write_bytes(blob)
  with pytest.raises(CheckpointError, match="parameter w has unsupported dtype int32"):
    load_checkpoint(str(tmp_path / "int.ckpt"))


def test_error_missing_tensorstore_folder(tmp_path):
  dst = tmp_path / "checkpoint_3"
  shutil.copytree(shared_fixture(TENSORSTORE_CKPT), dst)
  shutil.rmtree(dst / "target.decoder.logits_dense.kernel")
  with pytest.raises(CheckpointError,
                     match=r"decoder/logits_dense/kernel is stored in TensorStore .*Copy the whole"):
    load_checkpoint(str(dst))


def test_error_unsupported_version_and_no_target(tmp_path):
  (tmp_path / "v2").write_bytes(serialization.msgpack_serialize(
      {"version": 2, "optimizer": {"target": {"w": np.zeros(2, np.float32)}}}))
  with pytest.raises(CheckpointError, match="version 2 is not supported"):
    load_checkpoint(str(tmp_path / "v2"))
  (tmp_path / "empty").write_bytes(serialization.msgpack_serialize({"version": 3, "step": 1}))
  with pytest.raises(CheckpointError, match="no optimizer/target parameters"):
    load_checkpoint(str(tmp_path / "empty"))


def test_kvstore_spec_of_gs_and_local_paths():
  from ptjax.checkpoints import storage
  assert storage.kvstore_spec("gs://bucket/a/b") == {"driver": "gcs", "bucket": "bucket",
                                                     "path": "a/b"}
  assert storage.kvstore_spec("rel/x") == {"driver": "file", "path": os.path.abspath("rel/x")}
  with pytest.raises(ValueError, match="local or gs:// paths only"):
    storage.kvstore_spec("s3://b/k")
