"""Where a prompt enters the model: `PromptT5.encode_inputs`.

The prompt lives in its own variable collection, `{'prompt': {'prompt': [P, embed]}}`,
so the frozen `params` tree stays exactly T5X's and a prompt checkpoint is tiny.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ptjax.model.network import T5

Array = jax.Array
PROMPT_AXES = ("prompt", "prompt_embed")


def prepend_prompt(prompt: Array, embedded: Array, mask: Array) -> tuple[Array, Array]:
  """[P, embed] prompt + embedded inputs [batch, length, embed] and mask [batch, length]
  -> ([batch, P + length, embed], [batch, P + length]); prompt positions always attend."""
  batch = embedded.shape[0]
  prompt = jnp.broadcast_to(prompt.astype(embedded.dtype), (batch,) + prompt.shape)
  widened = jnp.concatenate([jnp.ones((batch, prompt.shape[1]), mask.dtype), mask], axis=1)
  return jnp.concatenate([prompt, embedded], axis=1), widened


class PromptT5(T5):
  """A T5 whose encoder sees `[prompt; embedded tokens]`.

  The prompt is stored float32 and cast to the activation dtype; it is added after
  the token embedding and before the encoder's input dropout. Relative positions run
  over the combined sequence and the widened mask reaches cross-attention.
  """
  prompt_length: int = 100

  def setup(self):
    super().setup()
    shape = (self.prompt_length, self.config.emb_dim)
    # Zeros only for shape inference: the trainer sets the initial value from a chosen
    # initialiser, which may need the *loaded* embedding table.
    self.prompt = self.variable(
        "prompt", "prompt",
        lambda: nn.LogicallyPartitioned(jnp.zeros(shape, jnp.float32), PROMPT_AXES))

  def encode_inputs(self, encoder_input_tokens: Array,
                    enable_dropout: bool = False) -> tuple[Array, Array]:
    embedded, mask = prepend_prompt(self.prompt.value, self.embed(encoder_input_tokens),
                                    encoder_input_tokens > 0)
    encoded = self.encode(enable_dropout=enable_dropout, encoder_embeddings=embedded,
                          encoder_mask=mask)
    return encoded, mask
