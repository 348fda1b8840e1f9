"""Vocabularies: T5's SentencePiece model (+100 extra ids = 32128 rows).

One switch says where T5's vocabulary is: the environment variable PTJAX_T5_VOCAB (a local
or gs:// path to cc_all.32000's sentencepiece.model). Every registered task and every gin
model file (VOCABULARY) obey it; `--gin.VOCAB_PATH` overrides it for the gin side only.
"""

import os
from typing import Optional

import seqio

from ptjax import files

T5_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
ENV = "PTJAX_T5_VOCAB"


def t5_vocab_path() -> str:
  """$PTJAX_T5_VOCAB, else T5's public gs:// file. A local path that does not exist is a
  one-line ValueError naming it and the switch."""
  path = os.environ.get(ENV) or T5_VOCAB_PATH
  check_path(path)
  return path


def check_path(path: str) -> None:
  if not files.is_remote(path) and not os.path.isfile(path):
    raise ValueError(f"T5 vocabulary {path} does not exist: point {ENV} (or --gin.VOCAB_PATH) "
                     f"at T5's sentencepiece.model (cc_all.32000).")


def t5_vocabulary(path: Optional[str] = None, extra_ids: int = 100) -> seqio.Vocabulary:
  """T5's vocabulary from `path` (None: `t5_vocab_path()`)."""
  if path is None:
    path = t5_vocab_path()
  check_path(path)
  return SentencePieceVocabulary(path, extra_ids=extra_ids)


class SentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """seqio's SentencePiece vocabulary, its model file read through `ptjax.files`.

  seqio reads the file with tf.io.gfile, whose gs:// client ignores STORAGE_EMULATOR_HOST;
  a remote file is read here and handed to seqio as an in-memory file (TensorFlow's ram://
  file system); the vocabulary keeps its real path (`sentencepiece_model_file`).
  """

  def _model_context(self):
    path = self._sentencepiece_model_file
    if self._model is None and files.is_remote(path):
      import hashlib

      import tensorflow as tf
      try:
        data = files.read_bytes(path)
      except files.StorageError as e:  # Offline, T5's public file is out of reach.
        raise files.StorageError(f"{e} Offline: point {ENV} at a local copy of T5's "
                                 f"sentencepiece.model.") from None
      local = f"ram://ptjax_vocab/{hashlib.sha256(data).hexdigest()}/sentencepiece.model"
      if not tf.io.gfile.exists(local):
        with tf.io.gfile.GFile(local, "wb") as f:
          f.write(data)
      self._sentencepiece_model_file = local
      try:
        return super()._model_context()
      finally:
        self._sentencepiece_model_file = path
    return super()._model_context()


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {"inputs": seqio.Feature(vocabulary, add_eos=True, required=False),
          "targets": seqio.Feature(vocabulary, add_eos=True)}
