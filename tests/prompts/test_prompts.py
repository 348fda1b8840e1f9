"""The prompt collection, where it enters the encoder, its initialisers and files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from conftest import shared_fixture
from ptjax import prompts
from ptjax.model import T5, T5Config, init_params
from ptjax.model.inference import shift_right

CONFIG = T5Config(vocab_size=50, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                  num_encoder_layers=2, num_decoder_layers=2)
INPUTS = jnp.array([[5, 6, 7, 1, 0, 0], [9, 1, 0, 0, 0, 0]])
TARGETS = jnp.array([[3, 4, 1], [7, 1, 0]])


@pytest.fixture(scope="module")
def setup():
  params = init_params(CONFIG, jax.random.key(0))
  prompt = jax.random.uniform(jax.random.key(1), (3, 8), minval=-0.5, maxval=0.5)
  return params, {"params": params, "prompt": {"prompt": prompt}}


def test_prompt_collection_is_separate_and_logically_named():
  variables = jax.eval_shape(lambda: prompts.PromptT5(CONFIG, prompt_length=3).init(
      jax.random.key(0), INPUTS, shift_right(TARGETS), TARGETS))
  assert set(variables) == {"params", "prompt"}
  boxed = variables["prompt"]["prompt"]
  assert boxed.names == ("prompt", "prompt_embed") and boxed.value.shape == (3, 8)
  assert boxed.value.dtype == jnp.float32
  same = jax.eval_shape(lambda: T5(CONFIG).init(jax.random.key(0), INPUTS,
                                                shift_right(TARGETS), TARGETS))
  assert jax.tree.structure(same["params"]) == jax.tree.structure(variables["params"])


def test_prompt_is_prepended_before_the_encoder(setup):
  params, variables = setup
  model = prompts.PromptT5(CONFIG, prompt_length=3)
  encoded, mask = model.apply(variables, INPUTS, method="encode_inputs")
  assert encoded.shape == (2, 9, 8)
  np.testing.assert_array_equal(np.asarray(mask[:, :3]), 1)
  np.testing.assert_array_equal(np.asarray(mask[:, 3:]), np.asarray(INPUTS > 0))
  # Same as encoding [prompt; embedded tokens] by hand with the plain T5.
  plain = T5(CONFIG)
  embedded = plain.apply({"params": params}, INPUTS, method=T5.embed)
  by_hand = jnp.concatenate([jnp.broadcast_to(variables["prompt"]["prompt"], (2, 3, 8)),
                             embedded], axis=1)
  want = plain.apply({"params": params}, encoder_embeddings=by_hand, encoder_mask=mask,
                     method=T5.encode)
  np.testing.assert_allclose(np.asarray(encoded), np.asarray(want), atol=1e-6)
  # The prompt changes the logits; padding is still masked (extra padding changes nothing).
  logits = model.apply(variables, INPUTS, shift_right(TARGETS), TARGETS)
  plain_logits = plain.apply({"params": params}, INPUTS, shift_right(TARGETS), TARGETS)
  assert np.abs(np.asarray(logits) - np.asarray(plain_logits)).max() > 1e-3
  padded = model.apply(variables, jnp.pad(INPUTS, ((0, 0), (0, 4))), shift_right(TARGETS),
                       TARGETS)
  valid = np.asarray(TARGETS > 0)
  np.testing.assert_allclose(np.asarray(padded)[valid], np.asarray(logits)[valid], atol=1e-5)


def test_prompt_cast_to_activation_dtype(setup):
  _, variables = setup
  model = prompts.PromptT5(CONFIG.replace(dtype="bfloat16"), prompt_length=3)
  encoded, _ = model.apply(variables, INPUTS, method="encode_inputs")
  assert encoded.dtype == jnp.bfloat16


EMBEDDING = np.random.default_rng(0).normal(size=(6000, 4)).astype(np.float32)


def test_random_uniform_ranges():
  x = np.asarray(prompts.random_uniform()(jax.random.key(0), (100, 16), EMBEDDING))
  assert x.min() >= -0.5 and x.max() <= 0.5 and x.min() < -0.45 and x.max() > 0.45
  y = np.asarray(prompts.random_uniform(nonnegative=True)(jax.random.key(0), (100, 16), None))
  assert y.min() >= 0.0 and y.max() < 0.5


def test_sampled_vocab_rows_come_from_the_first_5000_without_replacement():
  x = np.asarray(prompts.sampled_vocab()(jax.random.key(0), (100, 4), EMBEDDING))
  rows = [int(np.nonzero((EMBEDDING == r).all(1))[0][0]) for r in x]
  assert max(rows) < 5000 and len(set(rows)) == 100
  small = np.asarray(prompts.sampled_vocab(max_id=3)(jax.random.key(0), (10, 4), EMBEDDING))
  assert {int(np.nonzero((EMBEDDING == r).all(1))[0][0]) for r in small} <= {0, 1, 2}


def test_class_labels_average_their_pieces_with_the_real_t5_vocab():
  vocab = seqio.SentencePieceVocabulary(shared_fixture("t5_vocab/sentencepiece.model"),
                                        extra_ids=100)
  table = np.load(shared_fixture("t5x/tiny_embeddings_32128x4.npy"), allow_pickle=False)
  labels = ["entailment", "not_entailment"]
  pieces = [vocab.encode(label) for label in labels]
  assert len(pieces[1]) > 1  # A multi-piece label.
  x = np.asarray(prompts.class_labels(labels, vocab)(jax.random.key(0), (10, 4), table))
  for i, ids in enumerate(pieces):
    np.testing.assert_allclose(x[i], table[ids].mean(0), rtol=1e-6)
  rest = [int(np.nonzero((table == r).all(1))[0][0]) for r in x[2:]]
  assert max(rest) < 5000
  # Shorter than the labels (Figure 3a's 1-token prompt): the first labels that fit.
  short = np.asarray(prompts.class_labels(labels + ["neutral"], vocab)(
      jax.random.key(0), (1, 4), table))
  assert short.shape == (1, 4)
  np.testing.assert_allclose(short[0], table[pieces[0]].mean(0), rtol=1e-6)
  text = np.asarray(prompts.from_text("Is it true?", vocab)(jax.random.key(0), (8, 4), table))
  ids = vocab.encode("Is it true?")
  np.testing.assert_array_equal(text[:len(ids)], table[ids])


def test_prompt_files_npy_peft_and_shape_check(tmp_path):
  value = np.arange(12, dtype=np.float32).reshape(3, 4)
  prompts.save_npy(value, str(tmp_path / "p.npy"))
  prompts.save_peft(value, str(tmp_path / "peft"), num_layers=2, num_heads=2)
  config = json.load(open(tmp_path / "peft" / "adapter_config.json"))
  assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 3
  assert config["token_dim"] == 4 and config["num_transformer_submodules"] == 1
  for path in (tmp_path / "p.npy", tmp_path / "peft"):
    got = prompts.from_file(str(path))(None, (3, 4), None)
    np.testing.assert_array_equal(np.asarray(got), value)
  with pytest.raises(ValueError, match=r"has shape \(3, 4\) but the model needs "
                                       r"\[PROMPT_LENGTH, emb_dim\] = \(5, 4\)"):
    prompts.from_file(str(tmp_path / "p.npy"))(None, (5, 4), None)
  with pytest.raises(ValueError, match="does not exist"):
    prompts.from_file(str(tmp_path / "missing.npy"))(None, (3, 4), None)
  np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError, match="is not a .npy array"):
    prompts.from_file(str(tmp_path / "obj.npy"))(None, (3, 4), None)  # Never unpickled.


def test_real_pretrained_prompts_load():
  # Real prompts trained by google-research/prompt-tuning on T5 1.1 lm100k base.
  prompt = prompts.load_prompt(shared_fixture("pretrained_prompts/t5_1_1_lm100k_base/rte.npy"))
  assert prompt.shape == (100, 768) and prompt.dtype == np.float32
