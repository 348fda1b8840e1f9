"""Model-agnostic autoregressive decoding: temperature / top-k / top-p sampling
(greedy at temperature 0) and beam search with T5X's brevity penalty.

Both take a step function `tokens_to_logits(tokens [batch, 1], cache) ->
(logits [batch, vocab], cache)`; `cache` is any pytree whose leaves carry the batch
in axis 0 (scalars, such as a step counter, are shared). Everything is traceable,
so callers jit the whole decode; the loops are `lax.while_loop`s that stop once
every sequence has emitted EOS.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

Array = jax.Array
StepFn = Callable[[Array, Any], tuple[Array, Any]]
# Log-probability of an impossible candidate. Only ever meets float32: the step's logits
# are cast to float32 before any filter, log-softmax or score (finite there, and in
# bfloat16; it would be -inf in float16, whose max is 65504).
NEG_INF = -1.0e7


def brevity_penalty(alpha: float, length: Array) -> Array:
  """T5X / GNMT length normalisation ((5 + length) / 6) ** alpha."""
  return jnp.power((5.0 + length) / 6.0, alpha)


def _top_k_mask(logits: Array, k: int) -> Array:
  """Keeps the k largest logits per row ([batch, vocab]); others -> NEG_INF (float32)."""
  logits = logits.astype(jnp.float32)
  kth = jax.lax.top_k(logits, k)[0][:, -1:]
  return jnp.where(logits < kth, NEG_INF, logits)


def _top_p_mask(logits: Array, p: float) -> Array:
  """Nucleus filter: keeps the smallest prefix of sorted tokens with mass >= p (float32)."""
  logits = logits.astype(jnp.float32)
  sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  # The smallest kept logit: the last one whose preceding mass is still < p.
  keep = mass_before < p
  cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits < cutoff, NEG_INF, logits)


def temperature_sample(tokens_to_logits: StepFn, cache: Any, *, batch_size: int,
                       max_decode_length: int, eos_id: int, rng: Array | None = None,
                       temperature: float = 0.0, topk: int = 0, topp: float = 0.0,
                       initial_token: int = 0) -> tuple[Array, Array]:
  """Samples [batch, max_decode_length] tokens; temperature 0 is greedy argmax.

  After EOS a sequence is padded with 0. Returns (tokens, log_probs [batch]) where
  log_probs sums the chosen tokens' log-probabilities under the (temperature-,
  top-k-, top-p-filtered) distribution, up to and including EOS.
  """
  if temperature > 0 and rng is None:
    raise ValueError("temperature_sample: sampling (temperature > 0) needs an rng.")
  rng = jax.random.key(0) if rng is None else rng

  def body(state):
    step, token, sequences, ended, log_prob, cache, rng = state
    logits, cache = tokens_to_logits(token[:, None], cache)
    logits = logits.astype(jnp.float32)
    rng, sample_rng = jax.random.split(rng)
    if temperature == 0:
      next_token = jnp.argmax(logits, axis=-1)
    else:
      logits = logits / temperature
      if topk:
        logits = _top_k_mask(logits, topk)
      if topp:
        logits = _top_p_mask(logits, topp)
      next_token = jax.random.categorical(sample_rng, logits, axis=-1)
    next_token = next_token.astype(jnp.int32)
    token_logp = jnp.take_along_axis(jax.nn.log_softmax(logits), next_token[:, None], -1)[:, 0]
    next_token = jnp.where(ended, 0, next_token)
    log_prob = log_prob + jnp.where(ended, 0.0, token_logp)
    sequences = jax.lax.dynamic_update_slice_in_dim(sequences, next_token[:, None], step, 1)
    ended = ended | (next_token == eos_id)
    return step + 1, next_token, sequences, ended, log_prob, cache, rng

  def cond(state):
    step, _, _, ended, *_ = state
    return (step < max_decode_length) & ~jnp.all(ended)

  state = (jnp.zeros((), jnp.int32), jnp.full((batch_size,), initial_token, jnp.int32),
           jnp.zeros((batch_size, max_decode_length), jnp.int32), jnp.zeros((batch_size,), bool),
           jnp.zeros((batch_size,), jnp.float32), cache, rng)
  _, _, sequences, _, log_prob, _, _ = jax.lax.while_loop(cond, body, state)
  return sequences, log_prob


def _gather_rows(x: Array, beam_indices: Array) -> Array:
  """x: [batch, old_beams, ...], beam_indices: [batch, new_beams] -> [batch, new_beams, ...]."""
  return jnp.take_along_axis(
      x, beam_indices.reshape(beam_indices.shape + (1,) * (x.ndim - 2)), axis=1)


def _gather_cache(cache: Any, beam_indices: Array, old_beams: int) -> Any:
  """Selects beams of a flat cache: leaves [batch*old_beams, ...] -> [batch*new_beams, ...];
  scalar leaves pass through."""
  rows = jnp.arange(beam_indices.shape[0])[:, None] * old_beams
  flat_index = (rows + beam_indices).reshape(-1)
  return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.take(x, flat_index, axis=0), cache)


def expand_to_beams(tree: Any, num_beams: int) -> Any:
  """Repeats each batch row of every non-scalar leaf: [batch, ...] -> [batch*beams, ...]."""
  return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.repeat(x, num_beams, axis=0), tree)


def beam_search(tokens_to_logits: StepFn, cache: Any, *, batch_size: int, num_beams: int,
                max_decode_length: int, eos_id: int, alpha: float = 0.6,
                initial_token: int = 0) -> tuple[Array, Array]:
  """Beam search with length-normalised scores log p(y) / brevity_penalty(alpha, |y|).

  `cache` must already be expanded to batch*num_beams rows (`expand_to_beams`).
  |y| counts generated tokens including EOS. Returns (tokens [batch, beams,
  max_decode_length], scores [batch, beams]) sorted best first; rows with no finished
  sequence fall back to their alive beams, scored at max length.
  """
  b, k, length = batch_size, num_beams, max_decode_length

  def body(state):
    step, alive_seq, alive_logp, done_seq, done_score, done_flag, cache = state
    token = jax.lax.dynamic_slice_in_dim(alive_seq, step, 1, axis=2).reshape(b * k, 1)
    logits, cache = tokens_to_logits(token, cache)
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(b, k, vocab)
    candidates = (alive_logp[:, :, None] + logp).reshape(b, k * vocab)
    # 2k candidates guarantee k that do not end here.
    cand_logp, cand_index = jax.lax.top_k(candidates, 2 * k)
    cand_beam, cand_token = cand_index // vocab, (cand_index % vocab).astype(jnp.int32)
    cand_seq = _gather_rows(alive_seq, cand_beam)
    cand_seq = jax.lax.dynamic_update_slice_in_dim(
        cand_seq, cand_token[:, :, None], step + 1, axis=2)
    cand_eos = cand_token == eos_id
    # Alive: best k candidates that did not emit EOS.
    alive_logp, alive_pick = jax.lax.top_k(jnp.where(cand_eos, NEG_INF, cand_logp), k)
    alive_seq = _gather_rows(cand_seq, alive_pick)
    cache = _gather_cache(cache, _gather_rows(cand_beam, alive_pick), k)
    # Finished: merge the EOS candidates into the k best finished so far.
    new_score = jnp.where(cand_eos, cand_logp / brevity_penalty(alpha, step + 1.0), NEG_INF)
    all_seq = jnp.concatenate([done_seq, cand_seq], axis=1)
    all_score = jnp.concatenate([done_score, new_score], axis=1)
    all_flag = jnp.concatenate([done_flag, cand_eos], axis=1)
    done_score, done_pick = jax.lax.top_k(jnp.where(all_flag, all_score, NEG_INF), k)
    done_seq = _gather_rows(all_seq, done_pick)
    done_flag = _gather_rows(all_flag, done_pick)
    return step + 1, alive_seq, alive_logp, done_seq, done_score, done_flag, cache

  def cond(state):
    step, _, alive_logp, _, done_score, done_flag, _ = state
    # No alive beam can beat the worst kept finished one, even at the most lenient length.
    best_alive = alive_logp[:, 0] / brevity_penalty(alpha, float(length))
    worst_done = jnp.min(jnp.where(done_flag, done_score, NEG_INF), axis=1)
    settled = jnp.all(done_flag, axis=1) & (worst_done > best_alive)
    return (step < length) & ~jnp.all(settled)

  alive_seq = jnp.full((b, k, length + 1), 0, jnp.int32).at[:, :, 0].set(initial_token)
  alive_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1))
  state = (jnp.zeros((), jnp.int32), alive_seq, alive_logp, jnp.zeros((b, k, length + 1), jnp.int32),
           jnp.full((b, k), NEG_INF, jnp.float32), jnp.zeros((b, k), bool), cache)
  _, alive_seq, alive_logp, done_seq, done_score, done_flag, _ = jax.lax.while_loop(
      cond, body, state)
  any_done = jnp.any(done_flag, axis=1)[:, None]
  alive_score = alive_logp / brevity_penalty(alpha, float(length))
  seqs = jnp.where(any_done[:, :, None], done_seq, alive_seq)[:, :, 1:]
  scores = jnp.where(any_done, done_score, alive_score)
  return seqs, scores
