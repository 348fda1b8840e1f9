"""`T5Config.scan_layers`: the `nn.scan` stacks compute what the unrolled ones do."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ptjax import prompts
from ptjax.checkpoints.layout import scan_params
from ptjax.model import T5, abstract_params, init_params, param_axes, param_shapes, preset
from ptjax.model import inference
from ptjax.model.inference import shift_right

INPUTS = jnp.array([[5, 6, 7, 1, 0, 0], [9, 10, 11, 12, 1, 0]])
TARGETS = jnp.array([[3, 4, 1, 0], [7, 8, 9, 1]])
CONFIGS = {"tiny": preset("tiny"),
           "mini_small": preset("mini_small", num_encoder_layers=3, num_decoder_layers=2)}


@functools.lru_cache(maxsize=None)
def _params(name):
  unscanned = init_params(CONFIGS[name], jax.random.key(0))
  return unscanned, scan_params(unscanned, CONFIGS[name])


def _allclose(a, b, atol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)


@pytest.mark.parametrize("name, remat", [("tiny", "none"), ("tiny", "minimal"),
                                         ("mini_small", "none"), ("mini_small", "full")])
def test_logits_equal_unscanned(name, remat):
  config = CONFIGS[name].replace(remat_policy=remat)
  unscanned, scanned = _params(name)
  want = jax.jit(T5(config).apply)({"params": unscanned}, INPUTS, shift_right(TARGETS),
                                   TARGETS)
  got = jax.jit(T5(config.replace(scan_layers=True)).apply)(
      {"params": scanned}, INPUTS, shift_right(TARGETS), TARGETS)
  _allclose(got, want)


def _prompt_loss(config, params, prompt):
  model = prompts.PromptT5(config, prompt_length=prompt.shape[0])
  logits = model.apply({"params": params, "prompt": {"prompt": prompt}}, INPUTS,
                       shift_right(TARGETS), TARGETS)
  logp = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(logp, TARGETS[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(TARGETS > 0, nll, 0.0))


@pytest.mark.parametrize("remat", ["none", "full", "minimal"])
def test_prompt_loss_and_gradient_equal_unscanned(remat):
  config = CONFIGS["mini_small"].replace(remat_policy=remat)
  unscanned, scanned = _params("mini_small")
  prompt = jax.random.uniform(jax.random.key(1), (3, config.emb_dim), minval=-0.5, maxval=0.5)
  loss, grad = jax.jit(jax.value_and_grad(functools.partial(
      _prompt_loss, config, unscanned)))(prompt)
  loss_s, grad_s = jax.jit(jax.value_and_grad(functools.partial(
      _prompt_loss, config.replace(scan_layers=True), scanned)))(prompt)
  _allclose(loss_s, loss, atol=1e-4)  # A sum of 7 token losses of ~7 nats each.
  assert float(jnp.abs(grad).max()) > 1e-3  # The comparison below is not of zeros.
  _allclose(grad_s, grad)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_decoding_equal_unscanned(method):
  config = CONFIGS["mini_small"]
  unscanned, scanned = _params("mini_small")
  variables = {"prompt": {"prompt": jnp.full((2, config.emb_dim), 0.3)}}
  outputs = []
  for c, params in ((config, unscanned), (config.replace(scan_layers=True), scanned)):
    model = prompts.PromptT5(c, prompt_length=2)
    generate = jax.jit(functools.partial(inference.generate, model, max_decode_length=5,
                                         method=method, num_beams=3))
    outputs.append(generate({**variables, "params": params}, INPUTS))
  (tokens, scores), (tokens_s, scores_s) = outputs
  np.testing.assert_array_equal(np.asarray(tokens_s), np.asarray(tokens))
  _allclose(scores_s, scores, atol=1e-4)


def test_scanned_cache_keeps_batch_first():
  config = CONFIGS["mini_small"].replace(scan_layers=True)
  _, scanned = _params("mini_small")
  encoded = jnp.zeros((2, 6, config.emb_dim))
  cache = T5(config).apply({"params": scanned}, encoded, 7, method=T5.init_decode_cache)
  shapes = jax.tree.map(jnp.shape, cache)
  self_kv = (2, config.num_decoder_layers, 7, config.num_heads, config.head_dim)
  cross_kv = (2, config.num_decoder_layers, 6, config.num_heads, config.head_dim)
  assert shapes == {"position": (), "layers": {"self": (self_kv, self_kv),
                                               "cross": (cross_kv, cross_kv)}}


def test_abstract_params_are_the_scanned_layout():
  config = CONFIGS["mini_small"]
  want = scan_params(param_shapes(config), config)
  got = param_shapes(config.replace(scan_layers=True))
  assert jax.tree.structure(got) == jax.tree.structure(want)
  assert jax.tree.leaves(got) == jax.tree.leaves(want)  # shapes and dtypes
  axes = param_axes(config.replace(scan_layers=True))
  assert axes["encoder"]["encoder"]["attention"]["key"]["kernel"] == P(
      "embed", "layers", "joined_kv")
  assert axes["decoder"]["decoder"]["pre_mlp_layer_norm"]["scale"] == P(
      "embed", "layers")
  assert axes["encoder"]["relpos_bias"]["rel_embedding"] == P(
      "heads", "relpos_buckets")
  assert "layers_0" not in abstract_params(config.replace(scan_layers=True))["encoder"]


def test_dropout_follows_the_rng():
  config = CONFIGS["mini_small"].replace(scan_layers=True, dropout_rate=0.5)
  _, scanned = _params("mini_small")
  model = T5(config)

  @jax.jit
  def run(seed):
    return model.apply({"params": scanned}, INPUTS, shift_right(TARGETS), TARGETS,
                       enable_dropout=True, rngs={"dropout": jax.random.key(seed)})
  first = run(1)
  _allclose(run(1), first, atol=0)
  assert float(jnp.abs(run(2) - first).max()) > 1e-3


def test_scan_layers_must_be_bool():
  with pytest.raises(ValueError, match=r"^SCAN_LAYERS \(T5Config.scan_layers\)='yes' must be True or False\.$"):
    preset("tiny", scan_layers="yes")
