"""Hugging Face T5 folders: config mapping, key mapping, and errors."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy

from conftest import LOCAL_FIXTURES
from ptjax.checkpoints import CheckpointError, config_from_hf, config_to_hf, read_hf, save_hf
from ptjax.checkpoints.hf import key_map
from ptjax.checkpoints.validate import flat
from ptjax.model import T5Config, init_params, param_shapes, preset

HEAD_DIM_MODEL = os.path.join(LOCAL_FIXTURES, "hf_parity", "v1_1_head_dim", "model")


def test_transformers4_style_configs():
  # What transformers 4 wrote for google/t5-v1_1-small and t5-small.
  v1_1 = {"d_ff": 1024, "d_kv": 64, "d_model": 512, "num_heads": 6, "num_layers": 8,
          "num_decoder_layers": 8, "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
          "tie_word_embeddings": False, "dropout_rate": 0.1, "model_type": "t5"}
  assert config_from_hf(v1_1) == preset("small", dropout_rate=0.1)
  v1_0 = {"d_ff": 2048, "d_kv": 64, "d_model": 512, "num_heads": 8, "num_layers": 6,
          "vocab_size": 32128, "feed_forward_proj": "relu", "model_type": "t5"}
  c = config_from_hf(v1_0)
  assert c.logits_via_embedding and c.mlp_activations == ("relu",) and c.num_decoder_layers == 6


def test_transformers5_style_configs():
  # transformers 5 always writes tie_word_embeddings=True, keeps scaling separately and
  # unties when the file has its own lm_head.weight.
  hf = json.load(open(os.path.join(HEAD_DIM_MODEL, "config.json")))
  assert hf["tie_word_embeddings"] is True and hf["scale_decoder_outputs"] is False
  assert not config_from_hf(hf, has_lm_head=True).logits_via_embedding
  with pytest.raises(CheckpointError, match="tied output layer without 1/sqrt"):
    config_from_hf(hf, has_lm_head=False)


def test_config_round_trip_and_key_map_covers_every_parameter():
  for config in (preset("tiny"), preset("tiny", mlp_activations=("relu",),
                                         logits_via_embedding=True)):
    assert config_from_hf(config_to_hf(config)) == config.replace(dropout_rate=0.0)
    mapped = {path for _, path, _ in key_map(config)}
    assert mapped == set(flat(param_shapes(config)))


def test_safetensors_layout_is_torch_linear(tmp_path):
  config = T5Config(vocab_size=30, emb_dim=6, num_heads=2, head_dim=4, mlp_dim=10,
                    num_encoder_layers=1, num_decoder_layers=1)
  params = init_params(config, jax.random.key(0))
  save_hf(params, config, str(tmp_path))
  tensors = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
  assert tensors["encoder.block.0.layer.0.SelfAttention.q.weight"].shape == (8, 6)  # [out, in]
  np.testing.assert_array_equal(tensors["lm_head.weight"],
                                np.asarray(params["decoder"]["logits_dense"]["kernel"]).T)
  np.testing.assert_array_equal(
      tensors["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
      np.asarray(params["decoder"]["relpos_bias"]["rel_embedding"]).T)  # [buckets, heads]
  assert "decoder.block.0.layer.2.DenseReluDense.wi_1.weight" in tensors
  assert "decoder.block.0.layer.1.EncDecAttention.o.weight" in tensors


def copy_model(tmp_path):
  dst = tmp_path / "model"
  shutil.copytree(HEAD_DIM_MODEL, dst)
  return dst


def edit_tensors(folder, fn):
  path = str(folder / "model.safetensors")
  tensors = dict(safetensors.numpy.load_file(path))
  fn(tensors)
  safetensors.numpy.save_file(tensors, path)


def test_error_missing_tensor(tmp_path):
  dst = copy_model(tmp_path)
  edit_tensors(dst, lambda t: t.pop("decoder.block.2.layer.2.DenseReluDense.wo.weight"))
  with pytest.raises(CheckpointError, match=r"tensor decoder.block.2.layer.2.DenseReluDense"
                                            r".wo.weight \(for decoder/layers_2/mlp/wo/kernel\)"):
    read_hf(str(dst))


def test_error_wrong_shape(tmp_path):
  dst = copy_model(tmp_path)
  edit_tensors(dst, lambda t: t.update({"encoder.final_layer_norm.weight": np.ones(5, np.float32)}))
  with pytest.raises(CheckpointError,
                     match=r"encoder/encoder_norm/scale has shape \(5,\) but .* expects \(16,\)"):
    read_hf(str(dst))


def test_error_unexpected_tensor_and_dtype(tmp_path):
  dst = copy_model(tmp_path)
  edit_tensors(dst, lambda t: t.update({"encoder.block.1.layer.0.SelfAttention.relative_"
                                        "attention_bias.weight": np.ones((32, 4), np.float32)}))
  with pytest.raises(CheckpointError, match="unexpected tensor.*block.1.layer.0.SelfAttention"):
    read_hf(str(dst))
  dst2 = tmp_path / "int"
  shutil.copytree(HEAD_DIM_MODEL, dst2)
  edit_tensors(dst2, lambda t: t.update({"shared.weight": t["shared.weight"].astype(np.int32)}))
  with pytest.raises(CheckpointError, match="shared.weight has unsupported dtype int32"):
    read_hf(str(dst2))


def test_error_pickle_only_folder_is_refused(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(config_to_hf(preset("tiny"))))
  (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
  with pytest.raises(CheckpointError, match="pickle, which ptjax never loads"):
    read_hf(str(tmp_path))


def test_error_unsupported_activation():
  with pytest.raises(CheckpointError, match="feed_forward_proj='gelu' is not supported"):
    config_from_hf({"vocab_size": 8, "d_model": 4, "num_heads": 1, "d_kv": 4, "d_ff": 8,
                    "num_layers": 1, "feed_forward_proj": "gelu"})
