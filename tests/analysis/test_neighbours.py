"""Prompt interpretability: cosine nearest vocabulary neighbours, on the real fixtures."""

import numpy as np
import pytest
import seqio

from conftest import shared_fixture
from ptjax.analysis import nearest_neighbours, neighbour_report


def test_cosine_neighbours_by_hand():
  embedding = np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [0, 0]], np.float32)
  ids, cosine = nearest_neighbours(np.array([[2.0, 0.1], [0.0, -3.0]]), embedding, k=3)
  # Second row: [1, 0], [-1, 0] and the zero vector tie at 0; ties keep vocabulary order.
  assert ids.tolist() == [[0, 2, 1], [0, 3, 4]]
  expected = np.array([2.0, 0.1]) / np.hypot(2.0, 0.1)
  np.testing.assert_allclose(cosine[0], [expected[0], expected.sum() / np.sqrt(2), expected[1]])
  np.testing.assert_allclose(cosine[1], 0.0, atol=1e-12)
  with pytest.raises(ValueError, match="one embed size"):
    nearest_neighbours(np.zeros((2, 3)), embedding)


def test_report_on_the_real_vocabulary_embeddings_and_prompt():
  vocab = seqio.SentencePieceVocabulary(shared_fixture("t5_vocab/sentencepiece.model"),
                                        extra_ids=100)
  table = np.load(shared_fixture("t5x/tiny_embeddings_32128x4.npy"))
  yes, no = vocab.encode("yes")[0], vocab.encode("no")[0]
  # Scaled rows of the table: cosine 1 with their own piece.
  report = neighbour_report(np.stack([3 * table[yes], 0.5 * table[no]]), table, vocab, k=2)
  lines = report.splitlines()
  assert lines[0].startswith("0: ▁yes (1.00), ") and lines[1].startswith("1: ▁no (1.00), ")
  # A real trained prompt [100, 768]: positions planted into a random table come back first.
  prompt = np.load(shared_fixture("pretrained_prompts/t5_1_1_lm100k_base/rte.npy"))
  big = np.random.default_rng(0).normal(size=(32128, 768)).astype(np.float32)
  big[yes], big[no] = prompt[7], -prompt[9]
  ids, cosine = nearest_neighbours(prompt[[7, 9]], big, k=3)
  assert ids[0, 0] == yes and np.isclose(cosine[0, 0], 1.0)
  assert no not in ids[1]  # Opposite direction: cosine -1, the very last.
  assert len(neighbour_report(prompt, big, vocab, k=1, rows=4).splitlines()) == 4
