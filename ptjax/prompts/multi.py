"""Many prompts on one frozen model in one forward pass: each input row picks its prompt.

The same primitive serves the paper's prompt ensembles (Table 3: N prompts, inputs
replicated N times) and mixed-task batches (Figure 2: one batch, a prompt per task).

Variables: `{'params': frozen T5X tree, 'prompt': {'prompts': [N, P, embed],
'lengths': [N]}, 'routing': {'prompt_ids': [batch]}}`. Prompts shorter than P are stored
*right-aligned* (padding first, masked out): every real prompt position then keeps its
relative distance to the input tokens, so a row computes exactly what a single-prompt
`PromptT5` with that prompt computes (masked positions add exact zeros to attention).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ptjax.model.network import T5

Array = jax.Array


def stack_prompts(prompts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
  """[P_i, embed] prompts -> the 'prompt' collection: {'prompts': [N, max P_i, embed]
  right-aligned (zeros first), 'lengths': [N] int32}."""
  if not prompts:
    raise ValueError("stack_prompts needs at least one prompt.")
  dims = {np.shape(p)[-1] for p in prompts}
  if len(dims) != 1 or any(np.ndim(p) != 2 for p in prompts):
    raise ValueError(f"Prompts must all be [length, embed] with one embed size; got shapes "
                     f"{[np.shape(p) for p in prompts]}.")
  longest = max(len(p) for p in prompts)
  table = np.zeros((len(prompts), longest, dims.pop()), np.float32)
  for i, p in enumerate(prompts):
    table[i, longest - len(p):] = p
  return {"prompts": table, "lengths": np.array([len(p) for p in prompts], np.int32)}


def variables_for(params, prompts: dict, prompt_ids) -> dict:
  """The variables dict for `MultiPromptT5` (row b uses prompt `prompt_ids[b]`)."""
  return {"params": params, "prompt": prompts,
          "routing": {"prompt_ids": jnp.asarray(prompt_ids, jnp.int32)}}


class MultiPromptT5(T5):
  """A T5 whose encoder sees `[prompts[prompt_ids[b]]; embedded tokens of row b]`."""

  def encode_inputs(self, encoder_input_tokens: Array,
                    enable_dropout: bool = False) -> tuple[Array, Array]:
    table = self.get_variable("prompt", "prompts")          # [N, P, embed]
    lengths = self.get_variable("prompt", "lengths")        # [N]
    ids = self.get_variable("routing", "prompt_ids")        # [batch]
    if table is None or ids is None:
      raise ValueError("MultiPromptT5 needs variables 'prompt' {'prompts', 'lengths'} and "
                       "'routing' {'prompt_ids'}: build them with prompts.variables_for.")
    embedded = self.embed(encoder_input_tokens)
    prompt = jnp.take(table, ids, axis=0).astype(embedded.dtype)   # [batch, P, embed]
    width = table.shape[1]
    # Right-aligned: position j holds a real prompt row iff j >= P - length.
    prompt_mask = jnp.arange(width)[None, :] >= (width - jnp.take(lengths, ids))[:, None]
    mask = jnp.concatenate([prompt_mask.astype(encoder_input_tokens.dtype),
                            (encoder_input_tokens > 0).astype(encoder_input_tokens.dtype)], 1)
    encoded = self.encode(enable_dropout=enable_dropout,
                          encoder_embeddings=jnp.concatenate([prompt, embedded], axis=1),
                          encoder_mask=mask)
    return encoded, mask


def replicate_for_ensemble(tokens: np.ndarray, num_prompts: int) -> tuple[np.ndarray, np.ndarray]:
  """tokens [batch, length] -> ([num_prompts * batch, length], prompt_ids [num_prompts *
  batch]): prompt-major, so row n * batch + b is example b under prompt n."""
  batch = tokens.shape[0]
  return (np.tile(tokens, (num_prompts, 1)),
          np.repeat(np.arange(num_prompts, dtype=np.int32), batch))


def majority_vote(predictions: Sequence[Sequence[str]]) -> list[str]:
  """predictions[n][b] of N prompts -> the most frequent per example b; ties go to the
  answer of the lowest-numbered prompt among the tied (deterministic)."""
  votes = []
  for answers in zip(*predictions):
    counts = {}
    for a in answers:
      counts[a] = counts.get(a, 0) + 1
    best = max(counts.values())
    votes.append(next(a for a in answers if counts[a] == best))
  return votes
