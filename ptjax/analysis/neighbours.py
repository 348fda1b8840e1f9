"""Prompt interpretability (the paper's section 7): the vocabulary items whose embeddings
are nearest, by cosine similarity, to each learned prompt position."""

from typing import Optional

import numpy as np
import seqio


def nearest_neighbours(prompt: np.ndarray, embedding: np.ndarray,
                       k: int = 5) -> tuple[np.ndarray, np.ndarray]:
  """prompt [P, embed], embedding table [vocab, embed] -> (ids [P, k], cosine [P, k]),
  most similar first: cos(p, e) = p.e / (|p| |e|) (zero vectors have similarity 0)."""
  prompt, embedding = np.asarray(prompt, np.float64), np.asarray(embedding, np.float64)
  if prompt.ndim != 2 or embedding.ndim != 2 or prompt.shape[1] != embedding.shape[1]:
    raise ValueError(f"nearest_neighbours needs prompt [P, embed] and embedding [vocab, "
                     f"embed] of one embed size; got {prompt.shape} and {embedding.shape}.")
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  cosine = unit(prompt) @ unit(embedding).T                     # [P, vocab]
  k = min(k, embedding.shape[0])
  ids = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
  return ids, np.take_along_axis(cosine, ids, axis=1)


def neighbour_report(prompt: np.ndarray, embedding: np.ndarray,
                     vocabulary: Optional[seqio.Vocabulary] = None, k: int = 5,
                     rows: Optional[int] = None) -> str:
  """One line per prompt position: `position: piece (cosine), ...`; ids beyond the
  vocabulary's pieces (extra ids, padding rows) are shown as `<id>`."""
  embedding = np.asarray(embedding)
  if vocabulary is not None:
    # Only rows that are real pieces or extra ids: T5 pads its table past the vocabulary.
    embedding = embedding[:vocabulary.vocab_size]
  ids, cosine = nearest_neighbours(prompt, embedding, k)
  pieces = {}

  def piece(i):
    if i not in pieces:
      pieces[i] = _piece(vocabulary, int(i))
    return pieces[i]

  lines = [f"{p}: " + ", ".join(f"{piece(i)} ({c:.2f})" for i, c in zip(ids[p], cosine[p]))
           for p in range(len(ids) if rows is None else min(rows, len(ids)))]
  return "\n".join(lines)


def _piece(vocabulary: Optional[seqio.Vocabulary], i: int) -> str:
  if vocabulary is None:
    return f"<{i}>"
  sp = getattr(vocabulary, "tokenizer", None)
  if sp is not None and i < sp.get_piece_size():
    return sp.id_to_piece(i)  # The piece itself ('▁yes'), as the paper's tables show.
  return f"<{i}>"
