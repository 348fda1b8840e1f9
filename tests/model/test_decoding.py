"""Cached decoding, greedy/sampling/beam search and scoring."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax.model import T5, T5Config, init_params
from ptjax.model import decoding, inference

CONFIG = T5Config(vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                  num_encoder_layers=2, num_decoder_layers=2)
INPUTS = jnp.array([[5, 6, 7, 8, 9, 1, 0], [11, 12, 1, 0, 0, 0, 0]])


@pytest.fixture(scope="module")
def model_and_params():
  return T5(CONFIG), init_params(CONFIG, jax.random.key(3))


def test_cached_steps_equal_teacher_forcing_at_every_step(model_and_params):
  model, params = model_and_params
  targets = jnp.array([[3, 4, 7, 8, 1, 0], [9, 4, 1, 0, 0, 0]])
  v = {"params": params}

  @jax.jit
  def run(params):
    v = {"params": params}
    full = model.apply(v, INPUTS, inference.shift_right(targets), targets)
    encoded = model.apply(v, INPUTS, method=T5.encode)
    cache = model.apply(v, encoded, targets.shape[1], method=T5.init_decode_cache)
    inputs = inference.shift_right(targets)
    steps = []
    for i in range(targets.shape[1]):
      logits, cache = model.apply(v, inputs[:, i:i + 1], INPUTS > 0, cache,
                                  method=T5.decode_step)
      steps.append(logits)
    return full, jnp.stack(steps, axis=1)

  del v
  full, stepped = map(np.asarray, run(params))
  valid = np.asarray(targets > 0)
  assert valid.sum() == 8
  np.testing.assert_allclose(stepped[valid], full[valid], atol=1e-5, rtol=1e-5)


def test_greedy_is_argmax_of_its_own_teacher_forced_pass(model_and_params):
  model, params = model_and_params
  gen = jax.jit(functools.partial(inference.generate, model, max_decode_length=6))
  tokens, logp = map(np.asarray, gen(params, INPUTS))
  targets = jnp.asarray(tokens)
  logits = np.asarray(model.apply({"params": params}, INPUTS, inference.shift_right(targets),
                                  targets))
  for b in range(2):
    n = (list(tokens[b]).index(1) + 1) if 1 in tokens[b] else tokens.shape[1]
    assert list(logits[b, :n].argmax(-1)) == list(tokens[b, :n])
    assert (tokens[b, n:] == 0).all()
  # The reported log-probability is the summed score of the decoded tokens.
  scored = np.asarray(inference.score(model, params, targets, INPUTS))
  np.testing.assert_allclose(logp, scored, rtol=1e-5)


def test_score_is_summed_target_log_likelihood(model_and_params):
  model, params = model_and_params
  targets = jnp.array([[3, 4, 1, 0], [5, 1, 0, 0]])
  logits = model.apply({"params": params}, INPUTS, inference.shift_right(targets), targets)
  logp = np.asarray(jax.nn.log_softmax(logits))
  want = [logp[0, 0, 3] + logp[0, 1, 4] + logp[0, 2, 1], logp[1, 0, 5] + logp[1, 1, 1]]
  np.testing.assert_allclose(np.asarray(inference.score(model, params, targets, INPUTS)), want,
                             rtol=1e-5)


def test_brevity_penalty_values():
  assert float(decoding.brevity_penalty(0.6, 1.0)) == pytest.approx(1.0)
  assert float(decoding.brevity_penalty(0.6, 7.0)) == pytest.approx(2.0**0.6)
  assert float(decoding.brevity_penalty(0.0, 30.0)) == pytest.approx(1.0)


def _table_step(table):
  """A toy model: logits depend on the previous token and the step (cache = step count)."""
  def step(tokens, cache):
    logits = table[cache["step"], tokens[:, 0]]
    return logits, {"step": cache["step"] + 1, "history": cache["history"]}
  return step


def _enumerate_best(table, max_len, eos, alpha):
  vocab = table.shape[-1]
  logp = np.asarray(jax.nn.log_softmax(table, axis=-1))
  best, best_score = None, -np.inf
  for n in range(1, max_len + 1):
    for body in itertools.product([t for t in range(vocab) if t != eos], repeat=n - 1):
      seq, prev, total = list(body) + [eos], 0, 0.0
      for i, tok in enumerate(seq):
        total += logp[i, prev, tok]
        prev = tok
      s = total / ((5.0 + n) / 6.0) ** alpha
      if s > best_score:
        best, best_score = seq, s
  return best, best_score


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_finds_the_best_enumerated_sequence(seed):
  vocab, max_len, eos, alpha = 3, 4, 1, 0.6
  table = jax.random.normal(jax.random.key(seed), (max_len, vocab, vocab)) * 2.0
  want, want_score = _enumerate_best(np.asarray(table), max_len, eos, alpha)
  beams = (vocab - 1) ** (max_len - 1)  # Every non-EOS prefix fits: the search is exact.
  cache = decoding.expand_to_beams({"step": jnp.zeros((), jnp.int32),
                                    "history": jnp.zeros((1, 2))}, beams)
  seqs, scores = decoding.beam_search(_table_step(table), cache, batch_size=1, num_beams=beams,
                                      max_decode_length=max_len, eos_id=eos, alpha=alpha)
  got = list(np.asarray(seqs[0, 0]))
  assert got[:len(want)] == want and all(t == 0 for t in got[len(want):])
  assert float(scores[0, 0]) == pytest.approx(want_score, rel=1e-5)
  assert np.all(np.diff(np.asarray(scores[0])) <= 1e-6)  # Sorted best first.


def test_beam_search_on_t5_matches_enumeration():
  config = CONFIG.replace(vocab_size=4)
  model, params = T5(config), init_params(config, jax.random.key(7))
  inputs = jnp.array([[2, 3, 2, 1]])
  max_len = 3
  tokens, score = jax.jit(functools.partial(
      inference.generate, model, max_decode_length=max_len, method="beam", num_beams=9))(
          params, inputs)
  # Every sequence ending in EOS (token 0 is a legal token here), scored in one causal pass.
  seqs = [list(body) + [1] for n in range(1, max_len + 1)
          for body in itertools.product([0, 2, 3], repeat=n - 1)]
  padded = jnp.array([s + [0] * (max_len - len(s)) for s in seqs])
  logits = model.apply({"params": params}, jnp.repeat(inputs, len(seqs), 0),
                       inference.shift_right(padded))  # No target mask: 0 is not padding.
  logp = np.asarray(jax.nn.log_softmax(logits))
  scores = [sum(logp[i, t, tok] for t, tok in enumerate(s)) / ((5.0 + len(s)) / 6.0) ** 0.6
            for i, s in enumerate(seqs)]
  best, best_score = seqs[int(np.argmax(scores))], max(scores)
  assert list(np.asarray(tokens[0]))[:len(best)] == best
  assert float(score[0]) == pytest.approx(best_score, rel=1e-4)


def test_top_k_and_top_p_filters():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keep = lambda x: list(np.asarray(x[0] > decoding.NEG_INF / 2))
  assert keep(decoding._top_k_mask(logits, 2)) == [True, True, False, False]
  assert keep(decoding._top_p_mask(logits, 0.7)) == [True, True, False, False]
  assert keep(decoding._top_p_mask(logits, 0.85)) == [True, True, True, False]
  assert keep(decoding._top_p_mask(logits, 0.01)) == [True, False, False, False]


def test_sampling_follows_temperature_and_filters(model_and_params):
  model, params = model_and_params
  gen = functools.partial(inference.generate, model, max_decode_length=5, method="sample")
  greedy, _ = inference.generate(model, params, INPUTS, max_decode_length=5)
  top1, _ = jax.jit(functools.partial(gen, topk=1))(params, INPUTS, rng=jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(top1), np.asarray(greedy))
  a, _ = jax.jit(functools.partial(gen, temperature=5.0))(params, INPUTS, rng=jax.random.key(0))
  b, _ = jax.jit(functools.partial(gen, temperature=5.0))(params, INPUTS, rng=jax.random.key(1))
  assert not np.array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="needs an rng"):
    gen(params, INPUTS)
  with pytest.raises(ValueError, match="use 'greedy', 'sample' or 'beam'"):
    inference.generate(model, params, INPUTS, max_decode_length=2, method="nucleus")


def test_first_step_distribution_matches_softmax():
  # Sampling frequencies follow softmax(logits / temperature).
  logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
  step = lambda tokens, cache: (jnp.broadcast_to(logits, (tokens.shape[0], 4)), cache)
  tokens, _ = decoding.temperature_sample(
      step, {}, batch_size=4000, max_decode_length=1, eos_id=1, rng=jax.random.key(0),
      temperature=1.0)
  freq = np.bincount(np.asarray(tokens[:, 0]), minlength=4) / 4000
  np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.03)


def test_rank_classification_equals_scoring_each_option_alone(model_and_params):
  model, params = model_and_params
  options = jnp.array([[3, 4, 1], [5, 1, 0], [7, 8, 1]])
  choice, scores = jax.jit(functools.partial(inference.rank_classify, model))(
      params, INPUTS, options)
  alone = np.stack([np.asarray(inference.score(model, params,
                                               jnp.broadcast_to(o, (2, 3)), INPUTS))
                    for o in options], axis=1)
  np.testing.assert_allclose(np.asarray(scores), alone, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(choice), alone.argmax(1))
