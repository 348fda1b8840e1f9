"""Files shipped inside the package: the mini world's SentencePiece vocabulary and the
default pre-trained mini T5 (T5X checkpoint), so the main job runs offline, and the
paper's numbers (for tables that put ours beside them)."""

import os

ROOT = os.path.dirname(os.path.abspath(__file__))
MINI_WORLD_VOCAB = os.path.join(ROOT, "mini_world", "sentencepiece.model")
# t5_1_1_mini_large, span corruption then LM adaptation (scripts/pretrain_mini.sh large).
MINI_T5_CHECKPOINT = os.path.join(ROOT, "mini_t5_1_1_large")


def mini_t5_checkpoint() -> str:
  """Path of the shipped pre-trained mini T5 (for gin: `@assets.mini_t5_checkpoint()`)."""
  return MINI_T5_CHECKPOINT


# Lester et al. (2021): setup, Tables 1-5 and 7, Figure 3's grid, the text's claims.
PAPER_NUMBERS = os.path.join(ROOT, "paper", "lester2021.json")
