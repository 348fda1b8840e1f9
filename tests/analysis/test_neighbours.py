"""Prompt interpretability: cosine nearest vocabulary neighbours, on the real fixtures and
the shipped mini model (gin/runs/neighbours.gin)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import seqio

from conftest import ROOT, shared_fixture
from ptjax import assets
from ptjax.analysis import frequent_neighbours, nearest_neighbours, neighbour_report, neighbours
from ptjax.checkpoints import load_checkpoint
from ptjax.data import mini_tasks
from ptjax.model import config as presets


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


def test_frequent_neighbours_by_hand():
  ids = np.array([[1, 2], [2, 3], [2, 1], [4, 4]])
  # A repeated id counts once per position.
  assert frequent_neighbours(ids) == [(2, 3), (1, 2), (3, 1), (4, 1)]
  assert frequent_neighbours(ids, top=1) == [(2, 3)]


def test_neighbours_gin_run_on_the_shipped_model(tmp_path):
  config = presets.preset("mini_large")
  table = load_checkpoint(assets.MINI_T5_CHECKPOINT, config)[1]["token_embedder"]["embedding"]
  vocab = mini_tasks.mini_vocabulary()
  ent, con = vocab.encode("entailment"), vocab.encode("contradiction")
  assert len(ent) == len(con) == 1
  # Scaled label rows: cosine 1 with their own piece whatever the scale.
  np.save(tmp_path / "p.npy", np.stack([2 * table[ent[0]], 0.5 * table[con[0]],
                                        3 * table[ent[0]]]).astype(np.float32))
  args = [sys.executable, "-m", "ptjax.main", "--gin_file=gin/models/t5_1_1_mini_large.gin",
          "--gin_file=gin/runs/neighbours.gin", f"--gin.MODEL_DIR='{tmp_path / 'nn'}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{assets.MINI_T5_CHECKPOINT}'",
          f"--gin.PROMPT_FILES={{'cb': '{tmp_path / 'p.npy'}'}}", "--gin.NUM_NEIGHBOURS=3"]
  subprocess.run(args, cwd=ROOT, check=True, capture_output=True,
                 env={**os.environ, "JAX_PLATFORMS": "cpu"})
  with open(tmp_path / "nn" / "neighbours.json") as f:
    cb = json.load(f)["cb"]
  assert [row[0][0] for row in cb["positions"]] == ["▁entailment", "▁contradiction",
                                                    "▁entailment"]
  assert all(abs(row[0][1] - 1.0) < 1e-4 and len(row) == 3 for row in cb["positions"])
  # The labels are each other's neighbours too: count the positions listing each piece.
  count = lambda piece: sum(any(n[0] == piece for n in row) for row in cb["positions"])
  assert cb["frequent"][0] == ["▁entailment", 3] and count("▁entailment") == 3
  assert ["▁contradiction", count("▁contradiction")] in cb["frequent"]
  text = (tmp_path / "nn" / "neighbours.txt").read_text()
  assert "most frequent: ▁entailment (3)" in text and "\n1: ▁contradiction (1.00)" in text
  np.save(tmp_path / "small.npy", np.zeros((2, 64), np.float32))
  with pytest.raises(ValueError, match=r"embed size is 128 \(wrong model gin"):
    neighbours.report(model_dir=str(tmp_path / "x"), model_config=config, vocabulary=vocab,
                      prompt_files={"s": str(tmp_path / "small.npy")},
                      initial_checkpoint_path=assets.MINI_T5_CHECKPOINT)
