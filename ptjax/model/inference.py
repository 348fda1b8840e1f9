"""Generation and scoring with a `T5`: the encoder runs once, the decoder steps on a cache.

All functions are pure and traceable; jit them with the module and the decode
settings static, e.g. `jax.jit(functools.partial(generate, model, max_decode_length=32))`.
`encoded`/`encoder_mask` may be passed instead of tokens (e.g. with a prompt prepended).
"""

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp

from ptjax.model import decoding
from ptjax.model.network import T5

Array = jax.Array

# DECODING_METHOD's values (T5X's decode functions `decoding.beam_search` and
# `decoding.temperature_sample`; greedy is T5X's temperature_sample at temperature 0) and
# the `generate` method each runs.
METHODS = {"greedy": "greedy", "beam_search": "beam", "temperature_sample": "sample"}


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
  """How a run decodes: eval, infer, training's evaluations, serve and ensembles
  (gin/decoding/*.gin and the macros of ptjax/gin/defaults.gin; T5X's `decode_fn` and
  its options).

  Attributes:
    method: 'greedy' (argmax), 'beam_search' (`beam_size`, `alpha`) or
      'temperature_sample' (`temperature`, `topk`, `topp`, `seed`) (DECODING_METHOD).
    beam_size: beams kept (BEAM_SIZE; T5X's `predict_batch_with_aux.num_decodes`).
    alpha: the brevity penalty ((5 + length) / 6) ** alpha of beam scores (BEAM_ALPHA;
      T5X's `decoding.beam_search.alpha`).
    temperature: sampling temperature; 0 samples the argmax (TEMPERATURE).
    topk: sample among the k most likely tokens; 0 = all (TOPK).
    topp: nucleus sampling: among the fewest tokens whose mass reaches p; 0 = off (TOPP).
    max_decode_length: tokens decoded, EOS included (MAX_DECODE_LENGTH); None = the run's
      TASK_FEATURE_LENGTHS['targets'] (serve, which has no task: 16).
    seed: sampling seed (DECODING_SEED): batch i of a run samples with
      `rng(i) = fold_in(key(seed), i)`, so the same seed gives the same output.

  An option the method does not use must keep its default (a TOPP with greedy decoding
  would be ignored): ValueError otherwise, in one line.
  """
  method: str = "greedy"
  beam_size: int = 4
  alpha: float = 0.6
  temperature: float = 1.0
  topk: int = 0
  topp: float = 0.0
  max_decode_length: Optional[int] = None
  seed: int = 0

  def __post_init__(self):
    if self.method not in METHODS:
      hint = {"beam": "beam_search", "sample": "temperature_sample", "nucleus":
              "temperature_sample"}.get(self.method)
      raise ValueError(f"DECODING_METHOD={self.method!r}: use one of {list(METHODS)}" +
                       (f" ({hint!r} is T5X's name)" if hint else "") +
                       ", or include one of gin/decoding/*.gin.")
    checks = (
        ("BEAM_SIZE", self.beam_size, _is_int(self.beam_size) and self.beam_size >= 1,
         "an integer >= 1"),
        ("BEAM_ALPHA", self.alpha, _is_number(self.alpha) and self.alpha >= 0, "a number >= 0"),
        ("TEMPERATURE", self.temperature, _is_number(self.temperature) and
         self.temperature >= 0, "a number >= 0"),
        ("TOPK", self.topk, _is_int(self.topk) and self.topk >= 0, "an integer >= 0 (0 = off)"),
        ("TOPP", self.topp, _is_number(self.topp) and 0 <= self.topp <= 1,
         "a number in [0, 1] (0 = off)"),
        ("MAX_DECODE_LENGTH", self.max_decode_length, self.max_decode_length is None or (
            _is_int(self.max_decode_length) and self.max_decode_length >= 1),
         "an integer >= 1, or None (the targets length)"),
        ("DECODING_SEED", self.seed, _is_int(self.seed), "an integer"))
    for name, value, ok, want in checks:
      if not ok:
        raise ValueError(f"{name}={value!r} must be {want}.")
    used = {"greedy": (), "beam_search": ("beam_size", "alpha"),
            "temperature_sample": ("temperature", "topk", "topp", "seed")}[self.method]
    for field in ("beam_size", "alpha", "temperature", "topk", "topp", "seed"):
      if field not in used and getattr(self, field) != getattr(DecodingConfig, field):
        macro = _MACROS[field]
        raise ValueError(
            f"{macro}={getattr(self, field)!r} has no effect with DECODING_METHOD="
            f"{self.method!r} (it would be ignored): remove it, or choose the method that "
            f"uses it ({_METHOD_OF[field]!r}, gin/decoding/*.gin).")

  def changed(self) -> list[str]:
    """The settings that differ from the defaults, as 'MACRO=value' (for messages)."""
    return [f"{_MACROS[f.name]}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default]

  def generate_kwargs(self) -> dict:
    """`generate`'s keyword arguments for this method (all but max_decode_length, rng)."""
    method = METHODS[self.method]
    if method == "beam":
      return {"method": method, "num_beams": self.beam_size, "alpha": self.alpha}
    if method == "sample":
      return {"method": method, "temperature": self.temperature, "topk": self.topk,
              "topp": self.topp}
    return {"method": method}

  @property
  def samples(self) -> bool:
    return self.method == "temperature_sample"

  def rng(self, batch_index: int) -> Optional[Array]:
    """The sampling key of a run's `batch_index`-th batch (None when not sampling)."""
    if not self.samples:
      return None
    return jax.random.fold_in(jax.random.key(self.seed), batch_index)

  def length(self, default: int) -> int:
    """Tokens to decode: MAX_DECODE_LENGTH, or the run's `default`."""
    return self.max_decode_length or default

  def jit_generate(self, model, max_decode_length: int):
    """`generate` for `model` with these settings, jitted: (variables, tokens[, rng])."""
    return jax.jit(functools.partial(generate, model, max_decode_length=max_decode_length,
                                     **self.generate_kwargs()))


_MACROS = {"method": "DECODING_METHOD", "max_decode_length": "MAX_DECODE_LENGTH",
           "beam_size": "BEAM_SIZE", "alpha": "BEAM_ALPHA", "temperature": "TEMPERATURE",
           "topk": "TOPK", "topp": "TOPP", "seed": "DECODING_SEED"}
_METHOD_OF = {"beam_size": "beam_search", "alpha": "beam_search",
              "temperature": "temperature_sample", "topk": "temperature_sample",
              "topp": "temperature_sample", "seed": "temperature_sample"}


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


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
