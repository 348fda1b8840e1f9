"""Generation and scoring with a `T5`: the encoder runs once, the decoder steps on a cache.

All functions are pure and traceable; jit them with the module and the decode
settings static, e.g. `jax.jit(functools.partial(generate, model, max_decode_length=32))`.
`encoded`/`encoder_mask` may be passed instead of tokens (e.g. with a prompt prepended).
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ptjax.model import decoding
from ptjax.model.network import T5

Array = jax.Array


def shift_right(targets: Array, bos_id: int = 0) -> Array:
  """Decoder inputs from targets [batch, length]: BOS (0) first, last token dropped."""
  return jnp.pad(targets, ((0, 0), (1, 0)), constant_values=bos_id)[:, :-1]


def _as_variables(tree) -> dict:
  """Accepts a params tree or a full variables dict ({'params': ..., 'prompt': ...})."""
  return tree if "params" in tree else {"params": tree}


def _encoded(model, variables, encoder_input_tokens, encoded, encoder_mask):
  if encoded is not None:
    if encoder_mask is None:
      raise ValueError("Pass encoder_mask [batch, length] together with encoded.")
    return encoded, encoder_mask
  if encoder_input_tokens is None:
    raise ValueError("Pass encoder_input_tokens, or encoded and encoder_mask.")
  # By name, so subclasses (a prompted T5) widen the mask in their override.
  return model.apply(variables, encoder_input_tokens, method="encode_inputs")


def generate(model: T5, variables, encoder_input_tokens: Optional[Array] = None, *,
             encoded: Optional[Array] = None, encoder_mask: Optional[Array] = None,
             max_decode_length: int, method: str = "greedy", num_beams: int = 4,
             alpha: float = 0.6, temperature: float = 1.0, topk: int = 0, topp: float = 0.0,
             rng: Optional[Array] = None, eos_id: int = 1) -> tuple[Array, Array]:
  """Decodes up to `max_decode_length` tokens per example.

  method: 'greedy', 'sample' (temperature / topk / topp) or 'beam' (num_beams, alpha).
  Returns (tokens [batch, max_decode_length], 0 after EOS; scores [batch]): summed
  log-probabilities for greedy/sample, the length-normalised beam score for 'beam'.
  """
  variables = _as_variables(variables)
  encoded, encoder_mask = _encoded(model, variables, encoder_input_tokens, encoded, encoder_mask)
  batch_size = encoded.shape[0]
  cache = model.apply(variables, encoded, max_decode_length, method=T5.init_decode_cache)
  if method == "beam":
    cache = decoding.expand_to_beams(cache, num_beams)
    encoder_mask = jnp.repeat(encoder_mask, num_beams, axis=0)

  def tokens_to_logits(tokens, cache):
    return model.apply(variables, tokens, encoder_mask, cache, method=T5.decode_step)

  if method == "beam":
    tokens, scores = decoding.beam_search(
        tokens_to_logits, cache, batch_size=batch_size, num_beams=num_beams,
        max_decode_length=max_decode_length, eos_id=eos_id, alpha=alpha)
    return tokens[:, 0], scores[:, 0]
  if method not in ("greedy", "sample"):
    raise ValueError(f"generate(method={method!r}): use 'greedy', 'sample' or 'beam'.")
  return decoding.temperature_sample(
      tokens_to_logits, cache, batch_size=batch_size, max_decode_length=max_decode_length,
      eos_id=eos_id, rng=rng, temperature=0.0 if method == "greedy" else temperature,
      topk=topk, topp=topp)


def score(model: T5, variables, decoder_target_tokens: Array,
          encoder_input_tokens: Optional[Array] = None, *,
          encoded: Optional[Array] = None, encoder_mask: Optional[Array] = None) -> Array:
  """Summed log-likelihood of each target [batch, length] (0 = padding) -> [batch].

  One teacher-forced decoder pass; the basis of rank classification.
  """
  variables = _as_variables(variables)
  encoded, encoder_mask = _encoded(model, variables, encoder_input_tokens, encoded, encoder_mask)
  logits = model.apply(variables, encoded, encoder_mask, shift_right(decoder_target_tokens),
                       decoder_target_tokens, method=T5.decode)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  token_logp = jnp.take_along_axis(logp, decoder_target_tokens[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(decoder_target_tokens > 0, token_logp, 0.0), axis=-1)


def rank_classify(model: T5, variables, encoder_input_tokens: Array,
                  options: Array) -> tuple[Array, Array]:
  """Rank classification: score every option (verbaliser) for every example, pick the best.

  encoder_input_tokens [batch, length]; options [num_options, target_len] (0-padded, with
  EOS). The encoder runs once; each option is one teacher-forced decoder pass.
  Returns (choice [batch] int32, scores [batch, num_options] summed log-likelihoods).
  """
  variables = _as_variables(variables)
  encoded, encoder_mask = _encoded(model, variables, encoder_input_tokens, None, None)
  batch = encoder_input_tokens.shape[0]
  scores = jnp.stack([
      score(model, variables, jnp.broadcast_to(option, (batch, option.shape[0])),
            encoded=encoded, encoder_mask=encoder_mask) for option in options], axis=1)
  return jnp.argmax(scores, axis=1).astype(jnp.int32), scores
