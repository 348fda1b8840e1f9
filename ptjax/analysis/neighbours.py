"""Prompt interpretability (the paper's section 7): the vocabulary items whose embeddings
are nearest, by cosine similarity, to each learned prompt position.

gin/runs/neighbours.gin: PROMPT_FILES {name: prompt} on INITIAL_CHECKPOINT_PATH's embedding
-> MODEL_DIR/neighbours.txt (per prompt: its most frequent neighbours, then every position)
and neighbours.json.
"""

import collections
from typing import Mapping, Optional

import numpy as np
import seqio

from ptjax import files, prompts
from ptjax.checkpoints import load_checkpoint
from ptjax.model import T5Config


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


def frequent_neighbours(ids: np.ndarray, top: int = 10) -> list[tuple[int, int]]:
  """ids [P, k] -> [(vocabulary id, number of positions with it among their k)], most
  frequent first (ties: lower id first); a prompt's recurring neighbours, such as the
  class labels the paper found."""
  counts = collections.Counter(int(i) for row in ids for i in set(row.tolist()))
  return sorted(counts.items(), key=lambda c: (-c[1], c[0]))[:top]


def input_embedding(path: str, config: T5Config) -> np.ndarray:
  """The checkpoint's token embedding [vocab, embed], checked against `config`; from a
  T5X checkpoint only that array is read."""
  params = load_checkpoint(path, config, names={"token_embedder/embedding"})[1]
  return np.asarray(params["token_embedder"]["embedding"])


def report(*, model_dir: str, prompt_files: Mapping[str, str], model_config: T5Config,
           vocabulary: seqio.Vocabulary, initial_checkpoint_path: str, k: int = 5) -> dict:
  """Nearest neighbours of each prompt in {name: .npy, PEFT adapter or ptjax run} among
  the checkpoint's input embeddings; writes MODEL_DIR/neighbours.txt and .json and
  returns {name: {'frequent': [[piece, positions]], 'positions': [[[piece, cosine]] * k]}}."""
  if not prompt_files:
    raise ValueError("PROMPT_FILES is empty: give {name: prompt file or run folder}.")
  embedding = input_embedding(initial_checkpoint_path, model_config)[:vocabulary.vocab_size]
  results, text = {}, []
  for name, path in prompt_files.items():
    prompt = prompts.load_prompt(path)
    if prompt.shape[-1] != embedding.shape[-1]:
      raise ValueError(f"Prompt {name!r} ({path}) is {prompt.shape}; the model's embed size "
                       f"is {embedding.shape[-1]} (wrong model gin or checkpoint?).")
    ids, cosine = nearest_neighbours(prompt, embedding, k)
    frequent = [[_piece(vocabulary, i), n] for i, n in frequent_neighbours(ids)]
    results[name] = {"prompt_file": path, "frequent": frequent,
                     "positions": [[[_piece(vocabulary, int(i)), round(float(c), 4)]
                                    for i, c in zip(row_ids, row_cos)]
                                   for row_ids, row_cos in zip(ids, cosine)]}
    text += [f"# {name} ({path}): {len(prompt)} positions, {k} neighbours each",
             "most frequent: " + ", ".join(f"{p} ({n})" for p, n in frequent),
             neighbour_report(prompt, embedding, vocabulary, k), ""]
  files.write_text(files.join(model_dir, "neighbours.txt"), "\n".join(text))
  files.write_json(files.join(model_dir, "neighbours.json"), results, indent=1)
  print("\n".join(text), flush=True)
  return results
