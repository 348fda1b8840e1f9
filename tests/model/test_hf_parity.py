"""Numerical parity with Hugging Face transformers (fixtures from
scripts/make_hf_parity_fixture.py: random HF T5 models, their logits and greedy decodes)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from conftest import LOCAL_FIXTURES
from ptjax.checkpoints import load_checkpoint
from ptjax.model import T5, inference

MODELS = ["v1_1_head_dim", "v1_1_short_distance", "v1_0_tied"]


def load(name):
  folder = os.path.join(LOCAL_FIXTURES, "hf_parity", name)
  config, params = load_checkpoint(os.path.join(folder, "model"))
  expected = safetensors.numpy.load_file(os.path.join(folder, "expected.safetensors"))
  return config, params, expected


def test_fixture_configs_cover_the_asked_cases():
  head_dim, _, _ = load("v1_1_head_dim")
  assert head_dim.num_heads * head_dim.head_dim != head_dim.emb_dim
  assert (head_dim.relative_attention_num_buckets,
          head_dim.relative_attention_max_distance) == (32, 128)
  assert not head_dim.logits_via_embedding and head_dim.mlp_activations == ("gelu", "linear")
  short, _, expected = load("v1_1_short_distance")
  assert (short.relative_attention_num_buckets, short.relative_attention_max_distance) == (8, 20)
  assert (expected["inputs"] > 0).sum(axis=1).max() > 20  # Encoder longer than max_distance.
  tied, _, _ = load("v1_0_tied")
  assert tied.logits_via_embedding and tied.mlp_activations == ("relu",)


@pytest.mark.parametrize("name", MODELS)
def test_float32_logits_match_hf(name):
  config, params, expected = load(name)
  targets = expected["targets"]
  logits = jax.jit(lambda p: T5(config).apply(
      {"params": p}, expected["inputs"], inference.shift_right(targets), targets))(params)
  valid = targets > 0
  err = np.abs(np.asarray(logits) - expected["logits"])[valid].max()
  assert err < 1e-4, f"{name}: max abs logit difference {err}"


@pytest.mark.parametrize("name", MODELS)
def test_greedy_decodes_match_hf_token_for_token(name):
  config, params, expected = load(name)
  want = expected["greedy"]
  gen = jax.jit(functools.partial(inference.generate, T5(config),
                                  max_decode_length=want.shape[1]))
  tokens, _ = gen(params, jnp.asarray(expected["inputs"]))
  np.testing.assert_array_equal(np.asarray(tokens), want)
