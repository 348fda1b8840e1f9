"""Token losses, T5X-style: summed (not averaged) cross-entropy with z-loss."""

import jax
import jax.numpy as jnp


def cross_entropy_with_z_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                              z_loss: float = 1e-4,
                              label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """logits [batch, length, vocab], targets/weights [batch, length] -> (loss, z_loss) sums.

  Per token: logsumexp(z) - sum(q * z) - H(q) + z_loss * logsumexp(z)^2, with q the
  (optionally smoothed) one-hot target; the constant H(q) makes a perfect prediction 0.
  """
  vocab = logits.shape[-1]
  logits = logits.astype(jnp.float32)
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
  soft = jax.nn.one_hot(targets, vocab) * (confidence - low) + low
  log_z = jax.nn.logsumexp(logits, axis=-1)
  token_loss = log_z - jnp.sum(soft * logits, axis=-1) - entropy
  token_z = z_loss * jnp.square(log_z)
  weights = weights.astype(jnp.float32)
  return jnp.sum((token_loss + token_z) * weights), jnp.sum(token_z * weights)
