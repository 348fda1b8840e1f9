"""The T5 network: exact T5X parameter tree, counts, axes, masking and numerics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ptjax.model import T5, T5Config, count_params, init_params, param_axes, param_shapes, preset
from ptjax.model.inference import shift_right
from ptjax.model.layers import RMSNorm, relative_position_buckets

SMALL = T5Config(vocab_size=64, emb_dim=8, num_heads=2, head_dim=5, mlp_dim=12,
                 num_encoder_layers=2, num_decoder_layers=3)


def expected_t5x_names(n_enc, n_dec, gated=True, tied=False):
  """Every leaf name of a T5X T5 1.1 tree, written out from T5X's layout."""
  mlp = ["wi_0", "wi_1", "wo"] if gated else ["wi", "wo"]
  names = {"token_embedder/embedding", "encoder/relpos_bias/rel_embedding",
           "encoder/encoder_norm/scale", "decoder/relpos_bias/rel_embedding",
           "decoder/decoder_norm/scale"}
  if not tied:
    names.add("decoder/logits_dense/kernel")
  for i in range(n_enc):
    p = f"encoder/layers_{i}/"
    names |= {p + f"attention/{t}/kernel" for t in ("query", "key", "value", "out")}
    names |= {p + f"mlp/{w}/kernel" for w in mlp}
    names |= {p + "pre_attention_layer_norm/scale", p + "pre_mlp_layer_norm/scale"}
  for i in range(n_dec):
    p = f"decoder/layers_{i}/"
    for a in ("self_attention", "encoder_decoder_attention"):
      names |= {p + f"{a}/{t}/kernel" for t in ("query", "key", "value", "out")}
    names |= {p + f"mlp/{w}/kernel" for w in mlp}
    names |= {p + n + "/scale" for n in ("pre_self_attention_layer_norm",
                                         "pre_cross_attention_layer_norm", "pre_mlp_layer_norm")}
  return names


def flat_shapes(config):
  return {k: tuple(v.shape) for k, v in
          traverse_util.flatten_dict(param_shapes(config), sep="/").items()}


def test_paper_parameter_counts():
  # The paper's frozen model sizes (T5 1.1 small / base), from shapes only.
  assert count_params(preset("small")) == 76_961_152
  assert count_params(preset("base")) == 247_577_856


def test_every_leaf_has_t5x_name_and_shape():
  shapes = flat_shapes(SMALL)
  assert set(shapes) == expected_t5x_names(2, 3)
  assert shapes["token_embedder/embedding"] == (64, 8)
  assert shapes["encoder/layers_0/attention/query/kernel"] == (8, 10)  # heads*head_dim != emb
  assert shapes["encoder/layers_0/attention/out/kernel"] == (10, 8)
  assert shapes["decoder/layers_2/mlp/wi_1/kernel"] == (8, 12)
  assert shapes["decoder/layers_2/mlp/wo/kernel"] == (12, 8)
  assert shapes["encoder/relpos_bias/rel_embedding"] == (2, 32)
  assert shapes["decoder/logits_dense/kernel"] == (8, 64)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(param_shapes(SMALL)))


def test_t5_1_0_variant_is_tied_relu():
  config = SMALL.replace(mlp_activations=("relu",), logits_via_embedding=True)
  assert set(flat_shapes(config)) == expected_t5x_names(2, 3, gated=False, tied=True)


def test_logical_axes_on_every_parameter():
  axes = traverse_util.flatten_dict(param_axes(SMALL), sep="/")
  assert set(axes) == expected_t5x_names(2, 3)
  assert tuple(axes["token_embedder/embedding"]) == ("vocab", "embed")
  assert tuple(axes["encoder/layers_1/attention/key/kernel"]) == ("embed", "joined_kv")
  assert tuple(axes["decoder/layers_0/self_attention/out/kernel"]) == ("joined_kv", "embed")
  assert tuple(axes["decoder/layers_0/mlp/wi_0/kernel"]) == ("embed", "mlp")
  assert tuple(axes["decoder/layers_0/mlp/wo/kernel"]) == ("mlp", "embed")
  assert tuple(axes["decoder/relpos_bias/rel_embedding"]) == ("heads", "relpos_buckets")
  assert tuple(axes["decoder/logits_dense/kernel"]) == ("embed", "vocab")
  assert tuple(axes["encoder/encoder_norm/scale"]) == ("embed",)


def test_relative_position_buckets_by_hand():
  # Bidirectional, 32 buckets / 128: 16 per direction, 8 exact, log-spaced to 128.
  b = relative_position_buckets(1, 300, True, 32, 128)[0]  # query 0, key k: relative = k
  assert [b[0], b[1], b[7]] == [0, 17, 23]  # offset 0 is bucket 0; keys to the right: +16
  assert b[8] == 16 + 8 and b[16] == 16 + 10 and b[299] == 31
  b = relative_position_buckets(300, 1, True, 32, 128)[:, 0]  # key 0, query q: relative = -q
  assert [b[1], b[7], b[8], b[16], b[127], b[299]] == [1, 7, 8, 10, 15, 15]
  # Causal: the future collapses into bucket 0; 32 buckets, 16 exact.
  c = relative_position_buckets(40, 40, False, 32, 128)
  assert c[3, 10] == 0 and c[10, 3] == 7 and c[39, 0] == 16 + int(
      np.log(39 / 16) / np.log(128 / 16) * 16)


def test_rmsnorm_in_float32():
  x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
  scale = np.linspace(0.5, 2.0, 8).astype(np.float32)
  got = RMSNorm(dtype=jnp.bfloat16).apply({"params": {"scale": scale}}, jnp.asarray(x))
  want = x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-6) * scale
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-2)
  got32 = RMSNorm().apply({"params": {"scale": scale}}, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got32), want, rtol=1e-6)


def forward(model, params, inputs, targets, **kw):
  """Jitted teacher-forced logits (eager Flax dispatch is slow on CPU)."""
  fn = jax.jit(lambda p, x, t: model.apply({"params": p}, x, shift_right(t), t, **kw))
  return fn(params, inputs, targets)


@pytest.fixture(scope="module")
def model_and_params():
  return T5(SMALL), init_params(SMALL, jax.random.key(0))


INPUTS = jnp.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]])
TARGETS = jnp.array([[3, 4, 1, 0], [7, 1, 0, 0]])


def test_padding_does_not_change_real_positions(model_and_params):
  model, params = model_and_params
  logits = forward(model, params, INPUTS, TARGETS)
  longer = jnp.pad(INPUTS, ((0, 0), (0, 5)))
  longer_targets = jnp.pad(TARGETS, ((0, 0), (0, 3)))
  logits2 = forward(model, params, longer, longer_targets)
  valid = np.asarray(TARGETS > 0)
  np.testing.assert_allclose(np.asarray(logits2)[:, :4][valid], np.asarray(logits)[valid],
                             atol=1e-5)
  # Changing a padded input token changes nothing either: padding is masked, not read.
  poked = INPUTS.at[1, 4].set(0).at[1, 5].set(0)
  assert np.array_equal(np.asarray(forward(model, params, poked, TARGETS)), np.asarray(logits))


def test_encode_from_embeddings_equals_tokens(model_and_params):
  model, params = model_and_params
  v = {"params": params}
  from_tokens = model.apply(v, INPUTS, method=T5.encode)
  embedded = model.apply(v, INPUTS, method=T5.embed)
  from_embeddings = model.apply(v, encoder_embeddings=embedded, encoder_mask=INPUTS > 0,
                                method=T5.encode)
  np.testing.assert_array_equal(np.asarray(from_tokens), np.asarray(from_embeddings))
  with pytest.raises(ValueError, match="also needs encoder_mask"):
    model.apply(v, encoder_embeddings=embedded, method=T5.encode)


def test_dropout_only_when_enabled(model_and_params):
  _, params = model_and_params
  model = T5(SMALL.replace(dropout_rate=0.3))
  base = forward(T5(SMALL), params, INPUTS, TARGETS)
  np.testing.assert_array_equal(np.asarray(forward(model, params, INPUTS, TARGETS)),
                                np.asarray(base))
  dropped = forward(model, params, INPUTS, TARGETS, enable_dropout=True,
                    rngs={"dropout": jax.random.key(1)})
  assert np.abs(np.asarray(dropped) - np.asarray(base)).max() > 1e-2


def test_remat_keeps_tree_outputs_and_gradients(model_and_params):
  model, params = model_and_params
  remat = T5(SMALL.replace(remat_policy="full"))
  assert set(flat_shapes(SMALL.replace(remat_policy="full"))) == set(flat_shapes(SMALL))

  def loss(m, p):
    return jnp.sum(m.apply({"params": p}, INPUTS, shift_right(TARGETS), TARGETS) ** 2)

  g1 = jax.jit(jax.grad(lambda p: loss(model, p)))(params)
  g2 = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_bfloat16_activations_keep_float32_params(model_and_params):
  _, params = model_and_params
  bf16 = T5(SMALL.replace(dtype="bfloat16"))
  logits = forward(bf16, params, INPUTS, TARGETS)
  assert logits.dtype == jnp.bfloat16
  full = forward(T5(SMALL), params, INPUTS, TARGETS)
  valid = np.asarray(TARGETS > 0)
  err = np.abs(np.asarray(logits, np.float32) - np.asarray(full))[valid].max()
  assert err < 0.1 * np.abs(np.asarray(full)).max()


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match="unknown activation 'gleu'"):
    T5Config(mlp_activations=("gleu", "linear"))
  with pytest.raises(ValueError, match="remat_policy='some'"):
    T5Config(remat_policy="some")
  with pytest.raises(ValueError, match="Unknown T5 preset 'huge'"):
    preset("huge")
