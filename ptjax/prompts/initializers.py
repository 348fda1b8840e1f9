"""Prompt initialisers: `init(rng, shape [P, embed], embedding [vocab, embed]) -> [P, embed]`.

Built as closures so gin can select one (`prompt_init = @initializers.sampled_vocab()`);
`embedding` is the *frozen, loaded* token embedding, needed by the vocabulary-based ones;
the others are marked `uses_embedding = False` and get None (`needs_embedding`), so a run
reads no embedding for them.
"""

from typing import Callable, Protocol, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from ptjax.prompts import io as prompt_io

Array = jax.Array
Initializer = Callable[[Array, tuple[int, int], Array], Array]


class Vocabulary(Protocol):  # seqio.Vocabulary satisfies this.
  def encode(self, s: str) -> Sequence[int]:
    ...


def needs_embedding(init: Callable) -> bool:
  """Whether an initialiser reads the frozen embedding (so a run loads it for the prompt):
  False for those marked `uses_embedding = False` (random_uniform, from_array, from_file);
  True for the vocabulary-based ones and for any other callable (it may use it)."""
  return getattr(init, "uses_embedding", True)


def random_uniform(scale: float = 0.5, nonnegative: bool = False) -> Initializer:
  """Uniform in [-scale, scale] (the paper), or [0, scale) as the original code did."""
  def init(rng, shape, embedding):
    del embedding
    low = 0.0 if nonnegative else -scale
    return jax.random.uniform(rng, shape, jnp.float32, low, scale)
  init.uses_embedding = False
  return init


def sampled_vocab(max_id: int = 5000) -> Initializer:
  """Rows of the embedding among the `max_id` most frequent tokens (SentencePiece ids are
  frequency-ordered), without replacement while P <= max_id."""
  def init(rng, shape, embedding):
    ids = jax.random.choice(rng, min(max_id, embedding.shape[0]), (shape[0],),
                            replace=shape[0] > min(max_id, embedding.shape[0]))
    return jnp.asarray(embedding, jnp.float32)[ids]
  return init


def _label_rows(texts: Sequence[str], vocabulary: Vocabulary, embedding: Array) -> Array:
  rows = []
  for text in texts:
    ids = list(vocabulary.encode(text))
    if not ids:
      raise ValueError(f"Prompt initialiser: {text!r} encodes to no tokens.")
    rows.append(jnp.mean(jnp.asarray(embedding, jnp.float32)[jnp.asarray(ids)], axis=0))
  return jnp.stack(rows)


def class_labels(labels: Sequence[str], vocabulary: Vocabulary,
                 fill: Initializer | None = None) -> Initializer:
  """The paper's best init: position i is the embedding of label i (mean over its
  SentencePiece pieces); the remaining positions come from `fill` (sampled vocab).
  A prompt shorter than the label list (Figure 3a's 1-token prompts) takes the first
  labels that fit, as the paper's code does, with a warning."""
  if labels is None:  # CLASS_LABELS's default (None: a registered task's catalog labels).
    raise ValueError("CLASS_LABELS is not set: gin/prompts/class_labels.gin initialises the "
                     "prompt from the task's label words; pass --gin.CLASS_LABELS=\"['yes', "
                     "'no']\" (the words its targets use).")
  fill = fill or sampled_vocab()

  def init(rng, shape, embedding):
    used = list(labels)[:shape[0]]
    if len(used) < len(labels):
      logging.warning("class_labels: a %d-token prompt holds only the labels %s; %s are "
                      "not used for its initialisation.", shape[0], used,
                      list(labels)[shape[0]:])
    rows = _label_rows(used, vocabulary, embedding)
    return jnp.concatenate([rows, fill(rng, (shape[0] - len(used), shape[1]), embedding)])
  return init


def from_text(text: str, vocabulary: Vocabulary, fill: Initializer | None = None) -> Initializer:
  """Embeddings of the tokens of `text`, then `fill` (sampled vocab) for the rest."""
  fill = fill or sampled_vocab()

  def init(rng, shape, embedding):
    ids = list(vocabulary.encode(text))
    if len(ids) > shape[0]:
      raise ValueError(f"from_text: the text has {len(ids)} tokens, more than the prompt "
                       f"length {shape[0]}.")
    rows = jnp.asarray(embedding, jnp.float32)[jnp.asarray(ids, jnp.int32)]
    return jnp.concatenate([rows, fill(rng, (shape[0] - len(ids), shape[1]), embedding)])
  return init


def from_array(array) -> Initializer:
  """A given [P, embed] array, shape-checked."""
  def init(rng, shape, embedding):
    del rng, embedding
    value = np.asarray(array, np.float32)
    if value.shape != tuple(shape):
      raise ValueError(f"Prompt of shape {value.shape} does not fit the model: expected "
                       f"[PROMPT_LENGTH, emb_dim] = {tuple(shape)}.")
    return jnp.asarray(value)
  init.uses_embedding = False
  return init


def from_file(path: str) -> Initializer:
  """A prompt from a `.npy` file (no pickle), a PEFT adapter or a ptjax run, shape-checked."""
  def init(rng, shape, embedding):
    try:
      value = prompt_io.load_prompt(path)
    except prompt_io.PromptFileError as e:
      raise ValueError(f"PROMPT_FILE: {e}") from None
    if value.shape != tuple(shape):
      raise ValueError(f"PROMPT_FILE {path} has shape {value.shape} but the model needs "
                       f"[PROMPT_LENGTH, emb_dim] = {tuple(shape)}.")
    return from_array(value)(rng, shape, embedding)
  init.path = path  # Lets the trainer see that PROMPT_INIT and PROMPT_FILE agree.
  init.uses_embedding = False
  return init
