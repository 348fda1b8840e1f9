"""Building blocks of T5 1.1 with T5X parameter names and logical axis names.

Every parameter is created through `nn.with_logical_partitioning`, so
`nn.get_partition_spec` of an initialised tree names its logical axes
(vocab, embed, joined_kv, mlp, heads, relpos_buckets). Parameters are float32;
computation runs in the module's `dtype`.

Half-precision policy (bfloat16 activations; float16 is refused by `T5Config`):
every constant and reduction whose range or precision matters stays float32 whatever
the activation dtype: RMSNorm's mean of squares, the attention bias (mask + relative
position), the attention logits once the bias is added, and the softmax. Only the
softmax's output probabilities are cast to the activation dtype, for the product with
the values. `NEG_INF` is therefore only ever added in float32, where it is finite in
any sum with a logit, so a fully masked row (a padded query) gets uniform, finite
weights instead of NaN, and masked keys get weight exactly 0 in every other row.
"""

import functools
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ptjax.model.config import ACTIVATIONS

Array = jax.Array
NEG_INF = -1e10  # Added to masked attention logits (T5X's value); float32 only.
BIAS_DTYPE = jnp.float32  # Attention biases, logits + bias and the softmax.
KVCache = tuple[Array, Array]


def constrain(x: Array, axes: Sequence[Optional[str]]) -> Array:
  """Logical sharding hint for an activation; a no-op outside a mesh/rules context."""
  return nn.with_logical_constraint(x, tuple(axes))


def _param(module, name, init, shape, axes):
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), shape, jnp.float32)


class RMSNorm(nn.Module):
  """T5's layer norm: `x / sqrt(mean(x^2) + eps) * scale`, no mean, no bias.

  Computed in float32 whatever the activation dtype. x: [..., embed].
  """
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return (x * scale).astype(self.dtype)


class Dense(nn.Module):
  """A bias-free projection with a 2-D `kernel` [in, out] (T5X's layout).

  x: [..., in] -> [..., features].
  """
  features: int
  kernel_axes: tuple[str, str]
  kernel_init: Callable = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = _param(self, "kernel", self.kernel_init, (x.shape[-1], self.features),
                    self.kernel_axes)
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


class Embed(nn.Module):
  """Token embedding table `embedding` [vocab, embed]; `attend` is its transpose."""
  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embedding = _param(self, "embedding", nn.initializers.normal(stddev=1.0),
                            (self.num_embeddings, self.features), ("vocab", "embed"))

  def __call__(self, ids: Array) -> Array:
    """ids: [batch, length] int -> [batch, length, embed]."""
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x: Array) -> Array:
    """x: [batch, length, embed] -> logits [batch, length, vocab]."""
    return jnp.dot(x.astype(self.dtype), self.embedding.T.astype(self.dtype))


@functools.lru_cache(maxsize=64)
def relative_position_buckets(query_length: int, key_length: int, bidirectional: bool,
                              num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's relative-position bucket of every (query, key) pair, [query, key] int32.

  Half the buckets are exact offsets, the rest log-spaced up to `max_distance`;
  a bidirectional (encoder) table spends half of its buckets on keys to the
  right. Computed once per shape on the host: buckets depend only on lengths.
  """
  relative = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
  n = -relative
  bucket = np.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(n.dtype) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):
    log_ratio = np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
  large = max_exact + (log_ratio / np.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(n.dtype)
  large = np.minimum(large, num_buckets - 1)
  return (bucket + np.where(n < max_exact, n, large)).astype(np.int32)


class RelativePositionBiases(nn.Module):
  """One learned table `rel_embedding` [heads, buckets] per stack, shared by its layers."""
  num_buckets: int
  max_distance: int
  num_heads: int
  bidirectional: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query_length: int, key_length: int,
               query_position: Optional[Array] = None) -> Array:
    """Position bias [1, heads, query, key] added to attention logits; float32 whatever
    `dtype` (the policy in the module docstring).

    With `query_position` (a traced scalar, cached decoding) the single query sits at
    that position among `key_length` keys: returns [1, heads, 1, key].
    """
    table = _param(self, "rel_embedding",
                   nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                   (self.num_heads, self.num_buckets), ("heads", "relpos_buckets"))
    if query_position is None:
      buckets = jnp.asarray(relative_position_buckets(
          query_length, key_length, self.bidirectional, self.num_buckets, self.max_distance))
    else:
      full = jnp.asarray(relative_position_buckets(
          key_length, key_length, self.bidirectional, self.num_buckets, self.max_distance))
      buckets = jax.lax.dynamic_slice_in_dim(full, query_position, 1, axis=0)
    bias = jnp.take(table, buckets, axis=1)  # [heads, query, key]
    return bias[None].astype(BIAS_DTYPE)


def attention_bias(mask: Array) -> Array:
  """Boolean mask [batch, 1, q, k] -> float32 additive bias (0 where attended, NEG_INF
  elsewhere).

  Always float32: -1e10 is -inf in float16, and a row of -inf softmaxes to NaN.
  """
  return jnp.where(mask, 0.0, NEG_INF).astype(BIAS_DTYPE)


class MultiHeadAttention(nn.Module):
  """Dot-product attention without 1/sqrt(d) at run time (T5 folds it into `query`'s init).

  Parameters: query/key/value kernels [embed, heads*head_dim] ('embed', 'joined_kv'),
  out [heads*head_dim, embed] ('joined_kv', 'embed').

  Cached decoding is functional: the (keys, values) cache is passed in and
  returned, never stored in a Flax collection, so decoding loops carry it as state.
  """
  num_heads: int
  head_dim: int
  out_features: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  float32_logits: bool = True

  def setup(self):
    joined = self.num_heads * self.head_dim
    # T5 scales the query init by 1/sqrt(head_dim) instead of the logits at run time.
    query_init = nn.initializers.variance_scaling(1.0 / self.head_dim, "fan_in", "normal")
    kv_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    dense = functools.partial(Dense, features=joined, kernel_axes=("embed", "joined_kv"),
                              dtype=self.dtype)
    self.query = dense(kernel_init=query_init)
    self.key = dense(kernel_init=kv_init)
    self.value = dense(kernel_init=kv_init)
    self.out = Dense(self.out_features, ("joined_kv", "embed"), dtype=self.dtype)
    self.dropout = nn.Dropout(self.dropout_rate)

  def _heads(self, proj, x):
    y = proj(x)
    y = y.reshape(y.shape[:-1] + (self.num_heads, self.head_dim))
    return constrain(y, ("batch", "length", "heads", "kv"))

  def _attend(self, q, k, v, bias, enable_dropout):
    """q: [b, q, h, d], k/v: [b, k, h, d], bias: broadcastable to [b, h, q, k].

    `float32_logits` decides only the precision of q.k; the bias is added and the
    softmax taken in float32 either way (masks must not meet a half dtype).
    """
    if self.float32_logits:
      q, k = q.astype(jnp.float32), k.astype(jnp.float32)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(BIAS_DTYPE) + bias.astype(BIAS_DTYPE)
    weights = jax.nn.softmax(logits).astype(self.dtype)
    weights = self.dropout(weights, deterministic=not enable_dropout)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(self.dtype))
    out = out.reshape(out.shape[:2] + (self.num_heads * self.head_dim,))
    return self.out(out)

  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Array,
               enable_dropout: bool = False) -> Array:
    """inputs_q: [batch, q_len, embed], inputs_kv: [batch, kv_len, embed],
    bias: [batch|1, heads|1, q_len, kv_len] -> [batch, q_len, embed]."""
    q = self._heads(self.query, inputs_q)
    k = self._heads(self.key, inputs_kv)
    v = self._heads(self.value, inputs_kv)
    return self._attend(q, k, v, bias, enable_dropout)

  def project_kv(self, encoded: Array) -> KVCache:
    """encoded: [batch, enc_len, embed] -> (keys, values), each [batch, enc_len, heads, head_dim].

    Cross-attention projects the encoder output once for all decoding steps.
    """
    return self._heads(self.key, encoded), self._heads(self.value, encoded)

  def decode_self(self, x: Array, bias: Array, position: Array,
                  cache: KVCache) -> tuple[Array, KVCache]:
    """One causal step at `position`.

    x: [batch, 1, embed]; bias: [batch|1, heads|1, 1, max_len] (masks keys after
    `position`); cache: (keys, values) [batch, max_len, heads, head_dim].
    Returns the output [batch, 1, embed] and the cache with this step written in.
    """
    keys, values = cache
    k = self._heads(self.key, x).astype(keys.dtype)
    v = self._heads(self.value, x).astype(values.dtype)
    keys = jax.lax.dynamic_update_slice_in_dim(keys, k, position, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(values, v, position, axis=1)
    out = self._attend(self._heads(self.query, x), keys, values, bias, False)
    return out, (keys, values)

  def decode_cross(self, x: Array, bias: Array, cache: KVCache) -> Array:
    """x: [batch, 1, embed] attends to projected encoder keys/values `cache`."""
    keys, values = cache
    return self._attend(self._heads(self.query, x), keys, values, bias, False)


class MlpBlock(nn.Module):
  """T5X's feed-forward block: `wo(act_0(wi_0 x) * act_1(wi_1 x) ...)`.

  One activation -> a single `wi` (T5 1.0); several -> `wi_0`, `wi_1`, ... (gated).
  x: [batch, length, embed] -> [batch, length, embed].
  """
  mlp_dim: int
  activations: tuple[str, ...] = ("gelu", "linear")
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
    hidden = None
    for i, act in enumerate(self.activations):
      name = "wi" if len(self.activations) == 1 else f"wi_{i}"
      h = Dense(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype, name=name)(x)
      h = _activation(act)(h)
      hidden = h if hidden is None else hidden * h
    hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
        hidden, deterministic=not enable_dropout)
    hidden = constrain(hidden, ("batch", "length", "mlp"))
    return Dense(x.shape[-1], ("mlp", "embed"), dtype=self.dtype, name="wo")(hidden)


def _activation(name: str) -> Callable[[Array], Array]:
  assert name in ACTIVATIONS, name
  return {
      "gelu": functools.partial(jax.nn.gelu, approximate=True),
      "relu": jax.nn.relu,
      "linear": lambda x: x,
      "silu": jax.nn.silu,
      "swish": jax.nn.silu,
  }[name]
