"""The T5 1.1 encoder-decoder, parameter tree identical to T5X's.

    token_embedder/embedding                      [vocab, embed]
    encoder/relpos_bias/rel_embedding             [heads, buckets]
    encoder/layers_{i}/pre_attention_layer_norm/scale, attention/{query,key,value,out}/kernel,
                       pre_mlp_layer_norm/scale, mlp/{wi_0,wi_1,wo}/kernel
    encoder/encoder_norm/scale
    decoder/relpos_bias/rel_embedding
    decoder/layers_{i}/pre_self_attention_layer_norm, self_attention,
                       pre_cross_attention_layer_norm, encoder_decoder_attention,
                       pre_mlp_layer_norm, mlp
    decoder/decoder_norm/scale, decoder/logits_dense/kernel (T5 1.1; absent when tied)

With `T5Config.scan_layers` each stack is one `nn.scan` over a single layer (T5X's
scalable T5, flaxformer t5_architecture `_construct_scanned_encoder/decoder`): the layers
become `encoder/encoder/...` and `decoder/decoder/...`, every leaf with a stacked
'layers' axis inserted at position 1 (flaxformer's default `scan_axis=1`, "an XLA layout
optimization"): kernel [embed, layers, joined_kv], scale [embed, layers]. The relative
position table stays one per stack, shared (T5 1.1), at `encoder/relpos_bias/rel_embedding`:
the bias is computed once outside the scan and broadcast into it. (flaxformer's own
scanned mode refuses shared biases and gives each layer its own table inside the scanned
subtree; `ptjax.checkpoints.layout` refuses such checkpoints unless every layer's table is
equal.) Dropout rngs are split per layer. The decode cache of a scanned decoder is
`{'position', 'layers': {'self': (k, v), 'cross': (k, v)}}` with leaves
[batch, layers, length, heads, head_dim]: batch stays the leading axis that beam search
gathers on.

Where a prompt enters: `T5.encode(encoder_embeddings=..., encoder_mask=...)` takes
already-embedded inputs, so a prompt module embeds the tokens with `T5.embed`,
prepends its [prompt_length, embed] rows and widens the mask.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ptjax.model import layers
from ptjax.model.config import T5Config
from ptjax.model.layers import attention_bias, constrain

Array = jax.Array
DecodeCache = dict[str, Any]

_REMAT_POLICIES = {
    "full": None,  # Save nothing: recompute the whole layer in the backward pass.
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


SCAN_AXIS = 1  # Where scanned params stack their 'layers' axis (flaxformer's default).


def _scan(body, config: T5Config, length: int, in_axes, remat: bool = False):
  """`nn.scan` of `body(layer, carry, *xs) -> (carry, ys)` over `length` layers, in the
  scanned parameter layout; with `remat` the body is `nn.remat`'d first (T5X: the remat
  policy applies inside the scan, `prevent_cse=False` because scan already prevents CSE)."""
  if remat and config.remat_policy != "none":
    body = nn.remat(body, policy=_REMAT_POLICIES[config.remat_policy], prevent_cse=False)
  return nn.scan(body, variable_axes={"params": SCAN_AXIS},
                 split_rngs={"params": True, "dropout": True}, in_axes=in_axes,
                 length=length, metadata_params={nn.PARTITION_NAME: "layers"})


def _layer_class(cls, config: T5Config):
  if config.remat_policy == "none":
    return cls
  # argnum 0 is the module itself; `enable_dropout` is the last positional argument.
  static = {EncoderLayer: (3,), DecoderLayer: (5,)}[cls]
  return nn.remat(cls, policy=_REMAT_POLICIES[config.remat_policy], static_argnums=static)


class _Block(nn.Module):
  """Shared pieces of a pre-norm residual layer."""
  config: T5Config

  def _norm(self):
    return layers.RMSNorm(self.config.layer_norm_epsilon, self.config.activation_dtype)

  def _attention(self):
    c = self.config
    return layers.MultiHeadAttention(c.num_heads, c.head_dim, c.emb_dim, c.dropout_rate,
                                     c.activation_dtype, c.float32_attention_logits)

  def _mlp(self):
    c = self.config
    return layers.MlpBlock(c.mlp_dim, c.mlp_activations, c.dropout_rate, c.activation_dtype)

  def _residual(self, x, h, enable_dropout):
    h = self.dropout(h, deterministic=not enable_dropout)
    return constrain(x + h, ("batch", "length", "embed"))


class EncoderLayer(_Block):
  """Self-attention + MLP, each pre-normed, dropped out and added to the residual."""

  def setup(self):
    self.pre_attention_layer_norm = self._norm()
    self.attention = self._attention()
    self.pre_mlp_layer_norm = self._norm()
    self.mlp = self._mlp()
    self.dropout = nn.Dropout(self.config.dropout_rate, broadcast_dims=(-2,))

  def __call__(self, x: Array, bias: Array, enable_dropout: bool = False) -> Array:
    """x: [batch, length, embed]; bias: [batch, heads|1, length, length]."""
    h = self.pre_attention_layer_norm(x)
    x = self._residual(x, self.attention(h, h, bias, enable_dropout), enable_dropout)
    h = self.pre_mlp_layer_norm(x)
    return self._residual(x, self.mlp(h, enable_dropout), enable_dropout)


class DecoderLayer(_Block):
  """Causal self-attention, encoder-decoder attention, MLP."""

  def setup(self):
    self.pre_self_attention_layer_norm = self._norm()
    self.self_attention = self._attention()
    self.pre_cross_attention_layer_norm = self._norm()
    self.encoder_decoder_attention = self._attention()
    self.pre_mlp_layer_norm = self._norm()
    self.mlp = self._mlp()
    self.dropout = nn.Dropout(self.config.dropout_rate, broadcast_dims=(-2,))

  def _layer(self, x, self_attend, cross_attend, enable_dropout):
    x = self._residual(x, self_attend(self.pre_self_attention_layer_norm(x)), enable_dropout)
    x = self._residual(x, cross_attend(self.pre_cross_attention_layer_norm(x)), enable_dropout)
    h = self.mlp(self.pre_mlp_layer_norm(x), enable_dropout)
    return self._residual(x, h, enable_dropout)

  def __call__(self, x: Array, encoded: Array, self_bias: Array, cross_bias: Array,
               enable_dropout: bool = False) -> Array:
    """x: [batch, target_len, embed], encoded: [batch, input_len, embed]."""
    return self._layer(
        x,
        lambda h: self.self_attention(h, h, self_bias, enable_dropout),
        lambda h: self.encoder_decoder_attention(h, encoded, cross_bias, enable_dropout),
        enable_dropout)

  def project_encoded(self, encoded: Array) -> layers.KVCache:
    return self.encoder_decoder_attention.project_kv(encoded)

  def decode_step(self, x: Array, self_bias: Array, cross_bias: Array, position: Array,
                  cache: dict) -> tuple[Array, dict]:
    """x: [batch, 1, embed]; cache {'self': (k, v), 'cross': (k, v)}."""
    new_self = []

    def self_attend(h):
      out, kv = self.self_attention.decode_self(h, self_bias, position, cache["self"])
      new_self.append(kv)
      return out

    x = self._layer(
        x, self_attend,
        lambda h: self.encoder_decoder_attention.decode_cross(h, cross_bias, cache["cross"]),
        False)
    return x, {"self": new_self[0], "cross": cache["cross"]}


def _stack(config: T5Config, layer: type, num_layers: int, bidirectional: bool):
  """(relpos_bias, layers, final norm, dropout) of one stack; called from `setup`.

  `layers` is a list of `num_layers` layers, or with `scan_layers` the one layer that
  `_scan` stacks (the caller names it `encoder` / `decoder`, flaxformer's names)."""
  c = config
  relpos = layers.RelativePositionBiases(
      c.relative_attention_num_buckets, c.relative_attention_max_distance, c.num_heads,
      bidirectional=bidirectional, dtype=c.activation_dtype)
  if c.scan_layers:
    stack = layer(c)
  else:
    layer_cls = _layer_class(layer, c)
    stack = [layer_cls(c) for _ in range(num_layers)]
  return (relpos, stack, layers.RMSNorm(c.layer_norm_epsilon, c.activation_dtype),
          nn.Dropout(c.dropout_rate, broadcast_dims=(-2,)))


class Encoder(nn.Module):
  """Embedded inputs -> encoded [batch, length, embed]."""
  config: T5Config

  def setup(self):
    relpos, stack, norm, dropout = _stack(
        self.config, EncoderLayer, self.config.num_encoder_layers, bidirectional=True)
    self.relpos_bias, self.encoder_norm, self.dropout = relpos, norm, dropout
    if self.config.scan_layers:
      self.encoder = stack
    else:
      self.layers = stack

  def __call__(self, embeddings: Array, mask: Array, enable_dropout: bool = False) -> Array:
    """embeddings: [batch, length, embed]; mask: [batch, length] (nonzero = real token)."""
    mask = mask > 0
    length = embeddings.shape[1]
    x = self.dropout(embeddings, deterministic=not enable_dropout)
    x = constrain(x, ("batch", "length", "embed"))
    bias = (attention_bias(mask[:, None, :, None] & mask[:, None, None, :])
            + self.relpos_bias(length, length))
    if self.config.scan_layers:
      x, _ = _scan(lambda layer, x, bias: (layer(x, bias, enable_dropout), None),
                   self.config, self.config.num_encoder_layers, nn.broadcast,
                   remat=True)(self.encoder, x, bias)
    else:
      for layer in self.layers:
        x = layer(x, bias, enable_dropout)
    x = self.encoder_norm(x)
    return self.dropout(x, deterministic=not enable_dropout)


class Decoder(nn.Module):
  """Decoder stack and output projection; `embedder` is the shared token embedder."""
  config: T5Config
  embedder: nn.Module

  def setup(self):
    c = self.config
    relpos, stack, norm, dropout = _stack(c, DecoderLayer, c.num_decoder_layers,
                                          bidirectional=False)
    self.relpos_bias, self.decoder_norm, self.dropout = relpos, norm, dropout
    if c.scan_layers:
      self.decoder = stack
    else:
      self.layers = stack
    if not c.logits_via_embedding:
      self.logits_dense = layers.Dense(c.vocab_size, ("embed", "vocab"),
                                       dtype=c.activation_dtype)

  def _logits(self, y, enable_dropout):
    y = self.dropout(self.decoder_norm(y), deterministic=not enable_dropout)
    if self.config.logits_via_embedding:
      # T5 1.0: tied output layer, rescaled because the embedding init has stddev 1.
      logits = self.embedder.attend(y) / jnp.sqrt(y.shape[-1]).astype(y.dtype)
    else:
      logits = self.logits_dense(y)
    return constrain(logits, ("batch", "length", "vocab"))

  def __call__(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Optional[Array] = None,
               enable_dropout: bool = False) -> Array:
    """Teacher-forced logits [batch, target_len, vocab].

    Padding (target == 0) is masked out of self- and cross-attention as in T5X.
    """
    length = decoder_input_tokens.shape[1]
    if decoder_target_tokens is None:
      valid = jnp.ones(decoder_input_tokens.shape, bool)
    else:
      valid = decoder_target_tokens > 0
    y = self.embedder(decoder_input_tokens)
    y = self.dropout(y, deterministic=not enable_dropout)
    causal = jnp.tril(jnp.ones((length, length), bool))
    self_mask = causal[None, None] & valid[:, None, :, None] & valid[:, None, None, :]
    self_bias = attention_bias(self_mask) + self.relpos_bias(length, length)
    cross_bias = attention_bias(valid[:, None, :, None] & (encoder_mask > 0)[:, None, None, :])
    if self.config.scan_layers:
      def body(layer, y, encoded, self_bias, cross_bias):
        return layer(y, encoded, self_bias, cross_bias, enable_dropout), None
      y, _ = _scan(body, self.config, self.config.num_decoder_layers, nn.broadcast,
                   remat=True)(self.decoder, y, encoded, self_bias, cross_bias)
    else:
      for layer in self.layers:
        y = layer(y, encoded, self_bias, cross_bias, enable_dropout)
    return self._logits(y, enable_dropout)

  def init_cache(self, encoded: Array, max_length: int) -> DecodeCache:
    """Zero self-attention caches of `max_length` and projected encoder keys/values."""
    c = self.config
    shape = (encoded.shape[0], max_length, c.num_heads, c.head_dim)
    zeros = jnp.zeros(shape, c.activation_dtype)
    cache = {"position": jnp.zeros((), jnp.int32)}
    if c.scan_layers:
      # One projection per layer, stacked by the scan on axis 0, then moved behind batch.
      _, cross = _scan(lambda layer, carry, enc: (carry, layer.project_encoded(enc)), c,
                       c.num_decoder_layers, nn.broadcast)(self.decoder, 0, encoded)
      stacked = zeros[:, None].repeat(c.num_decoder_layers, axis=1)
      cache["layers"] = {"self": (stacked, stacked),
                         "cross": tuple(jnp.moveaxis(a, 0, 1) for a in cross)}
      return cache
    for i, layer in enumerate(self.layers):
      cache[f"layers_{i}"] = {"self": (zeros, zeros), "cross": layer.project_encoded(encoded)}
    return cache

  def decode_step(self, tokens: Array, encoder_mask: Array,
                  cache: DecodeCache) -> tuple[Array, DecodeCache]:
    """tokens: [batch, 1] at `cache['position']` -> logits [batch, vocab], new cache."""
    position = cache["position"]
    scanned = self.config.scan_layers
    max_length = (cache["layers"]["self"][0].shape[2] if scanned
                  else cache["layers_0"]["self"][0].shape[1])
    y = self.embedder(tokens)
    seen = jnp.arange(max_length) <= position
    self_bias = (attention_bias(seen[None, None, None, :])
                 + self.relpos_bias(1, max_length, query_position=position))
    cross_bias = attention_bias((encoder_mask > 0)[:, None, None, :])
    new_cache = {"position": position + 1}
    if scanned:
      y, new_cache["layers"] = self._scanned_decode_step(
          y, self_bias, cross_bias, position, cache["layers"])
      return self._logits(y, False)[:, 0], new_cache
    for i, layer in enumerate(self.layers):
      y, new_cache[f"layers_{i}"] = layer.decode_step(
          y, self_bias, cross_bias, position, cache[f"layers_{i}"])
    return self._logits(y, False)[:, 0], new_cache


  def _scanned_decode_step(self, y, self_bias, cross_bias, position, cache):
    """One step through the scanned layers. Each layer reads its slice of the broadcast
    cache [batch, layers, ...] by index and returns only this step's keys/values
    [batch, 1, heads, head_dim], written into the stacked cache once after the scan
    (scanning the cache itself would move its layers axis first: a copy every step)."""
    def body(layer, y, i, self_bias, cross_bias, position, cache):
      mine = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 1, False), cache)
      y, new = layer.decode_step(y, self_bias, cross_bias, position, mine)
      return y, tuple(jax.lax.dynamic_slice_in_dim(a, position, 1, axis=1)
                      for a in new["self"])

    n = self.config.num_decoder_layers
    broadcast = (nn.broadcast,) * 4
    y, steps = _scan(body, self.config, n, (0,) + broadcast)(
        self.decoder, y, jnp.arange(n), self_bias, cross_bias, position, cache)
    # steps: [layers, batch, 1, heads, head_dim] -> into [batch, layers, max_len, ...].
    new_self = tuple(jax.lax.dynamic_update_slice_in_dim(old, jnp.moveaxis(step, 0, 1)
                                                         .astype(old.dtype), position, axis=2)
                     for old, step in zip(cache["self"], steps))
    return y, {"self": new_self, "cross": cache["cross"]}


class T5(nn.Module):
  """T5 encoder-decoder with T5X's call signature and parameter names."""
  config: T5Config

  def setup(self):
    c = self.config
    self.token_embedder = layers.Embed(c.vocab_size, c.emb_dim, c.activation_dtype)
    self.encoder = Encoder(c)
    self.decoder = Decoder(c, embedder=self.token_embedder)

  def embed(self, tokens: Array) -> Array:
    """tokens: [batch, length] -> [batch, length, embed] in the activation dtype."""
    return self.token_embedder(tokens)

  def encode(self, encoder_input_tokens: Optional[Array] = None, enable_dropout: bool = False,
             *, encoder_embeddings: Optional[Array] = None,
             encoder_mask: Optional[Array] = None) -> Array:
    """Encodes tokens [batch, length], or embeddings [batch, length, embed] with an
    explicit mask [batch, length] (the path a prompt takes). -> [batch, length, embed]."""
    if encoder_embeddings is None:
      if encoder_input_tokens is None:
        raise ValueError("T5.encode needs encoder_input_tokens or encoder_embeddings.")
      encoder_embeddings = self.embed(encoder_input_tokens)
      encoder_mask = encoder_input_tokens > 0
    elif encoder_mask is None:
      raise ValueError("T5.encode(encoder_embeddings=...) also needs encoder_mask "
                       "[batch, length]: padding cannot be inferred from embeddings.")
    return self.encoder(encoder_embeddings, encoder_mask, enable_dropout)

  def encode_inputs(self, encoder_input_tokens: Array,
                    enable_dropout: bool = False) -> tuple[Array, Array]:
    """Tokens [batch, length] -> (encoded [batch, length', embed], mask [batch, length']).

    The one place models that add encoder positions (prompts) override; `__call__`,
    `inference.generate` and `inference.score` all go through it.
    """
    return self.encode(encoder_input_tokens, enable_dropout), encoder_input_tokens > 0

  def decode(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
             decoder_target_tokens: Optional[Array] = None,
             enable_dropout: bool = False) -> Array:
    """Teacher-forced logits [batch, target_len, vocab] given encoded [batch, len, embed]."""
    return self.decoder(encoded, encoder_mask, decoder_input_tokens, decoder_target_tokens,
                        enable_dropout)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Optional[Array] = None,
               enable_dropout: bool = False) -> Array:
    """T5X's signature: token ids in, logits [batch, target_len, vocab] out."""
    encoded, encoder_mask = self.encode_inputs(encoder_input_tokens, enable_dropout)
    return self.decode(encoded, encoder_mask, decoder_input_tokens, decoder_target_tokens,
                       enable_dropout)

  def init_decode_cache(self, encoded: Array, max_decode_length: int) -> DecodeCache:
    return self.decoder.init_cache(encoded, max_decode_length)

  def decode_step(self, tokens: Array, encoder_mask: Array,
                  cache: DecodeCache) -> tuple[Array, DecodeCache]:
    return self.decoder.decode_step(tokens, encoder_mask, cache)


def _dummy_inputs():
  return jnp.ones((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32)


def abstract_params(config: T5Config):
  """Boxed parameter shapes (`jax.ShapeDtypeStruct` in `nn.LogicallyPartitioned`), no allocation."""
  return jax.eval_shape(lambda: T5(config).init(jax.random.key(0), *_dummy_inputs()))["params"]


def init_params(config: T5Config, rng: Array) -> dict:
  """Freshly initialised float32 params (unboxed) with T5X names."""
  init = jax.jit(lambda key: nn.meta.unbox(T5(config).init(key, *_dummy_inputs())["params"]))
  return init(rng)


def param_shapes(config: T5Config) -> dict:
  """Tree of `jax.ShapeDtypeStruct`, the shape every loaded checkpoint must have."""
  return nn.meta.unbox(abstract_params(config))


def param_axes(config: T5Config) -> dict:
  """Tree of `PartitionSpec` of logical axis names, one per parameter."""
  return nn.get_partition_spec(abstract_params(config))


def count_params(config: T5Config) -> int:
  return sum(x.size for x in jax.tree.leaves(param_shapes(config)))
