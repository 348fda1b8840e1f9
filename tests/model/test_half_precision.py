"""Half precision on padded batches: the dtype policy of masks, biases and softmax.

Policy (ptjax/model/layers.py, config.py): attention biases (mask and relative
position), logits + bias and the softmax are float32 whatever the activation dtype;
'bfloat16' activations are supported, 'float16' is refused by `T5Config` with one line.

Tolerances are stated against float32 on the shipped mini T5 (params float32, only
activations change), set from measurement with headroom (measured maxima over the
three models below in brackets): encoder output 0.06 [0.023], logits at real target
positions 0.25 [0.095], summed log-likelihoods 0.25 [0.137]; greedy tokens, top-1
logits and rank choices identical. float32 itself is bit-identical to before the policy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax import assets, prompts
from ptjax.checkpoints import load_checkpoint
from ptjax.model import T5, T5Config, decoding, inference, preset
from ptjax.model.config import FLOAT16_REFUSAL
from ptjax.model.layers import NEG_INF, MultiHeadAttention, RelativePositionBiases, attention_bias
from ptjax.prompts import multi

CONFIG = preset("mini_large", dropout_rate=0.0)
ENCODER_ATOL, LOGIT_ATOL, LOGLIK_ATOL = 0.06, 0.25, 0.25
# Padding in every row but one; row 2 has a single real token + EOS.
INPUTS = jnp.array([[8, 24, 35, 1, 0, 0, 0], [40, 41, 42, 43, 44, 45, 1], [9, 1, 0, 0, 0, 0, 0]])
TARGETS = jnp.array([[7, 8, 1, 0], [30, 31, 32, 1], [5, 1, 0, 0]])  # padded targets too
OPTIONS = jnp.array([[7, 1, 0], [30, 31, 1], [5, 6, 1]])
DECODE_LENGTH = 6


@pytest.fixture(scope="module")
def params():
  return load_checkpoint(assets.MINI_T5_CHECKPOINT, CONFIG)[1]


def _variables(kind, params):
  prompt = 0.5 * jax.random.normal(jax.random.key(1), (5, CONFIG.emb_dim))
  if kind == "plain":
    return {"params": params}
  if kind == "prompt":
    return {"params": params, "prompt": {"prompt": prompt}}
  # Three prompts of different lengths, right-aligned (masked prompt padding), one per row.
  table = multi.stack_prompts([np.asarray(prompt), 2 * np.asarray(prompt[:2]),
                               np.asarray(prompt[:4]) - 1])
  return multi.variables_for(params, table, [0, 1, 2])


def _model(kind, dtype):
  config = CONFIG.replace(dtype=dtype)
  return {"plain": lambda: T5(config),
          "prompt": lambda: prompts.PromptT5(config, prompt_length=5),
          "multi": lambda: multi.MultiPromptT5(config)}[kind]()


def every_path(model, variables, decoding_paths=True):
  """Outputs of every attention path, float32 (ints stay ints), in one jit.

  Without `decoding_paths`: no cached decoding (what differs between a prompted and a
  plain model is all upstream of the decoder).
  """

  @jax.jit
  def run(variables):
    out = {}
    encoded, mask = model.apply(variables, INPUTS, method="encode_inputs")
    out["encoder"] = encoded
    decoder_inputs = inference.shift_right(TARGETS)
    # Teacher forcing: decoder self-attention (padded targets: fully masked rows) + cross.
    out["forward"] = model.apply(variables, encoded, mask, decoder_inputs, TARGETS,
                                 method=T5.decode)
    out["score"] = inference.score(model, variables, TARGETS, encoded=encoded,
                                   encoder_mask=mask)
    out["rank_choice"], out["rank_scores"] = inference.rank_classify(
        model, variables, INPUTS, OPTIONS)
    if decoding_paths:
      # The same logits one cached step at a time (decode_self / decode_cross).
      cache = model.apply(variables, encoded, TARGETS.shape[1], method=T5.init_decode_cache)

      def step(cache, tokens):
        logits, cache = model.apply(variables, tokens[:, None], mask, cache,
                                    method=T5.decode_step)
        return cache, logits

      out["decode_step"] = jax.lax.scan(step, cache, decoder_inputs.T)[1].transpose(1, 0, 2)
      out["greedy"], out["greedy_logp"] = inference.generate(
          model, variables, encoded=encoded, encoder_mask=mask,
          max_decode_length=DECODE_LENGTH)
    return {k: v if v.dtype == jnp.int32 else v.astype(jnp.float32) for k, v in out.items()}

  return {k: np.asarray(v) for k, v in run(variables).items()}


def test_float16_is_refused_with_one_line():
  for spelling in ("float16", "half", jnp.float16):
    with pytest.raises(ValueError) as error:
      T5Config(dtype=spelling)
    assert str(error.value) == FLOAT16_REFUSAL
  assert "\n" not in FLOAT16_REFUSAL and "'bfloat16'" in FLOAT16_REFUSAL
  with pytest.raises(ValueError, match="use 'bfloat16'"):
    preset("mini_large", dtype="float16")
  with pytest.raises(ValueError, match="use 'bfloat16'"):
    CONFIG.replace(dtype="float16")
  assert CONFIG.replace(dtype="bfloat16").activation_dtype == jnp.bfloat16


def test_masks_and_position_biases_are_float32_constants():
  bias = attention_bias(jnp.array([[[[True, False]]]]))
  assert bias.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(bias), [[[[0.0, NEG_INF]]]])
  assert np.isfinite(np.float32(NEG_INF)) and np.isfinite(jnp.bfloat16(NEG_INF))
  relpos = RelativePositionBiases(32, 128, 2, bidirectional=True, dtype=jnp.bfloat16)
  out, _ = relpos.init_with_output(jax.random.key(0), 3, 4)
  assert out.dtype == jnp.float32 and out.shape == (1, 2, 3, 4)


@pytest.mark.parametrize("float32_logits", [True, False])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_attention_layer_half_dtypes_fully_masked_rows(dtype, float32_logits):
  """The layer itself is safe in both half dtypes (float16 is refused only one level up,
  for the MLP): a fully masked query row stays finite, masked keys leak nothing, and
  the three call forms (full, cached self, cached cross) are within tolerance of float32."""
  b, q_len, k_len, embed = 2, 3, 5, 16
  x = jax.random.normal(jax.random.key(0), (b, q_len, embed))
  kv = jax.random.normal(jax.random.key(1), (b, k_len, embed))
  key_mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  query_mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)  # row 0, query 2: fully masked
  bias = attention_bias(query_mask[:, None, :, None] & key_mask[:, None, None, :])
  layer = lambda dt: MultiHeadAttention(2, 8, embed, dtype=jnp.dtype(dt),
                                        float32_logits=float32_logits)
  params = layer("float32").init(jax.random.key(2), x, kv, bias)
  apply = lambda dt, *args, **kw: np.asarray(
      jax.tree.map(lambda a: a.astype(jnp.float32),
                   layer(dt).apply(params, *args, **kw)))

  full = apply(dtype, x, kv, bias)
  assert np.isfinite(full).all()
  np.testing.assert_allclose(full, apply("float32", x, kv, bias), atol=0.05)
  # Garbage (huge) values at masked keys do not reach any real position.
  spoiled = kv.at[0, 3:].set(1e4)
  np.testing.assert_array_equal(apply(dtype, x, spoiled, bias)[0, :2], full[0, :2])

  # Cached cross-attention: the query attends to projected keys/values.
  cross_bias = attention_bias(key_mask[:, None, None, :])
  cache = layer(dtype).apply(params, kv, method=MultiHeadAttention.project_kv)
  cross = apply(dtype, x[:, :1], cross_bias, cache, method=MultiHeadAttention.decode_cross)
  assert np.isfinite(cross).all()
  np.testing.assert_allclose(cross, apply("float32", x[:, :1], cross_bias, cache,
                                          method=MultiHeadAttention.decode_cross), atol=0.05)

  # Cached self-attention at position 0: every later (empty, zero) slot is masked.
  zeros = jnp.zeros((b, k_len, 2, 8), jnp.dtype(dtype))
  seen = attention_bias((jnp.arange(k_len) <= 0)[None, None, None, :])
  out, new_cache = layer(dtype).apply(params, x[:, :1], seen, jnp.int32(0), (zeros, zeros),
                                      method=MultiHeadAttention.decode_self)
  assert np.isfinite(np.asarray(out.astype(jnp.float32))).all()
  assert new_cache[0].dtype == jnp.dtype(dtype)


def test_issue_example_is_finite_in_bfloat16(params):
  encoder, decoder = jnp.array([[8, 24, 35, 1, 0]]), jnp.array([[0, 8]])
  logits = lambda dtype: np.asarray(jax.jit(T5(CONFIG.replace(dtype=dtype)).apply)(
      {"params": params}, encoder, decoder).astype(jnp.float32))
  f32 = logits("float32")
  np.testing.assert_allclose(f32[0, 0, :3], [-4.52, 1.29, -4.79], atol=0.01)
  bf16 = logits("bfloat16")
  assert np.isfinite(bf16).all()
  assert np.abs(bf16 - f32).max() <= LOGIT_ATOL
  assert (bf16.argmax(-1) == f32.argmax(-1)).all()


@pytest.mark.parametrize("kind", ["plain", "prompt", "multi"])
def test_bfloat16_every_attention_path_within_tolerance_of_float32(params, kind):
  """plain: T5; prompt: PromptT5 (prompt prepended, always attended); multi:
  MultiPromptT5 with three prompts of different lengths in one batch (masked prompt
  padding). Cached decoding runs for plain and multi (prompt adds nothing there)."""
  variables = _variables(kind, params)
  decoding_paths = kind != "prompt"
  ref = every_path(_model(kind, "float32"), variables, decoding_paths)
  got = every_path(_model(kind, "bfloat16"), variables, decoding_paths)
  for name, value in got.items():
    assert np.isfinite(value).all(), name
  diff = lambda name: np.abs(got[name] - ref[name]).max()
  assert diff("encoder") <= ENCODER_ATOL
  valid = np.asarray(TARGETS > 0)
  for name in ("forward", "decode_step") if decoding_paths else ("forward",):
    assert np.abs(got[name] - ref[name])[valid].max() <= LOGIT_ATOL, name
    assert (got[name].argmax(-1)[valid] == ref[name].argmax(-1)[valid]).all(), name
  assert diff("score") <= LOGLIK_ATOL
  np.testing.assert_array_equal(got["rank_choice"], ref["rank_choice"])
  assert diff("rank_scores") <= LOGLIK_ATOL
  if not decoding_paths:
    return
  np.testing.assert_array_equal(got["greedy"], ref["greedy"])
  assert diff("greedy_logp") <= LOGLIK_ATOL


def test_sampling_filters_work_in_float32_whatever_the_logits_dtype():
  logits = jnp.array([[0.0, 2.0, 1.0, -1.0]], jnp.bfloat16)
  top_k = decoding._top_k_mask(logits, 2)
  assert top_k.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(top_k),
                                [[decoding.NEG_INF, 2.0, 1.0, decoding.NEG_INF]])
  top_p = decoding._top_p_mask(logits.astype(jnp.float16), 0.5)
  assert top_p.dtype == jnp.float32 and np.isfinite(np.asarray(top_p)).all()
