"""Vocabularies: T5's SentencePiece model (+100 extra ids = 32128 rows)."""

import seqio

T5_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"


def t5_vocabulary(path: str = T5_VOCAB_PATH, extra_ids: int = 100) -> seqio.Vocabulary:
  return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {"inputs": seqio.Feature(vocabulary, add_eos=True, required=False),
          "targets": seqio.Feature(vocabulary, add_eos=True)}
