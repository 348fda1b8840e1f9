"""The train state: everything that changes during training, and nothing frozen."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """step: int32 []; trainable: the trained variables ({'prompt': ...} for prompt tuning);
  opt_state: optimizer state of `trainable` only; rng: raw uint32 [2] key, folded with
  the step for dropout so a resumed run draws the same masks."""
  step: jax.Array
  trainable: Any
  opt_state: Any
  rng: jax.Array

  @classmethod
  def create(cls, trainable: Any, optimizer: optax.GradientTransformation,
             seed: int, step: int = 0) -> "TrainState":
    """`step`: where counting starts (T5X: the initial checkpoint's step)."""
    return cls(step=jnp.asarray(step, jnp.int32), trainable=trainable,
               opt_state=optimizer.init(trainable), rng=jax.random.PRNGKey(seed))
