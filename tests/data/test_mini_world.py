"""The mini world: deterministic corpus, its vocabulary and its SuperGLUE-like tasks."""

import collections

import numpy as np
import seqio

from ptjax.data import mini_tasks, mini_world


def test_world_and_corpus_are_deterministic_and_large_on_demand():
  a, b = mini_world.World(seed=0), mini_world.World(seed=0)
  assert [p.name for p in a.people] == [p.name for p in b.people]
  assert len({p.name for p in a.people}) == len(a.people) == 600
  assert mini_world.corpus_sample(a, 50) == mini_world.corpus_sample(b, 50)
  assert mini_world.corpus_sample(a, 50) != mini_world.corpus_sample(mini_world.World(seed=1), 50)
  words = sum(len(d.split()) for d in mini_world.corpus_sample(a, 20000))
  assert words > 500_000  # Millions of tokens are a matter of asking for more documents.
  docs = mini_world.corpus_sample(a, 2000)
  assert sum(d.startswith("A: ") for d in docs) > 150  # Dialogues,
  assert sum(d.startswith("NEWS:") or " daily: " in d for d in docs) > 150  # news,
  assert sum(d.startswith("People of ") for d in docs) > 100  # lists, biographies.


def test_vocabulary_covers_the_corpus_with_t5_ids():
  vocab = mini_tasks.mini_vocabulary()
  assert vocab.vocab_size == 1100 and vocab.eos_id == 1 and vocab.pad_id == 0
  text = " ".join(mini_world.corpus_sample(documents=200, seed=7))
  ids = vocab.encode(text)
  assert 2 not in ids  # No unknown pieces.
  assert vocab.decode(ids) == text
  assert len(ids) < 0.5 * len(text)  # Real compression, not characters.


def test_boolq_is_balanced_with_closed_book_questions():
  world = mini_world.default_world()
  examples = list(mini_tasks.boolq_examples(world, "train"))
  assert len(examples) == 480 * 8  # 480 train people, 8 questions each.
  assert 0.4 < np.mean([e["label"] for e in examples]) < 0.6
  closed = [e for e in examples if e["closed_book"]]
  assert 0.3 < len(closed) / len(examples) < 0.5
  for e in closed:
    # Biographies never tell where a firm is or which river a town is on: the answer must
    # come from pre-training (news items and town notes), though the passage names the
    # firm or town asked about.
    assert " based in " not in e["passage"] and "river" not in e["passage"]
    subject = e["question"].split(" based in ")[0].split(" on the ")[0].split(" ", 1)[1]
    assert subject in e["passage"]


def test_splits_are_disjoint_and_qa_answers_are_spans():
  world = mini_world.default_world()
  names = {s: {e["question"] for e in mini_tasks.squad_examples(world, s)} for s in
           mini_tasks.SPLITS}
  assert not names["train"] & names["test"]
  for e in list(mini_tasks.squad_ood_examples(world, "validation")):
    assert e["answers"][0] in e["context"] and e["context"].startswith("A: Where does")
  labels = collections.Counter(e["label"] for e in mini_tasks.rte_examples(world, "train"))
  assert set(labels) == {0, 1, 2} and min(labels.values()) > 100


def test_registered_tasks_yield_examples():
  for name in ("pt_mini_boolq_taskless", "pt_mini_rte", "pt_mini_squad", "pt_mini_squad_ood"):
    task = seqio.get_mixture_or_task(name)
    ex = next(iter(task.get_dataset({"inputs": 256, "targets": 16}, split="validation",
                                    shuffle=False, try_in_mem_cache=False)))
    assert ex["targets"][-1] == 1 and 2 not in ex["inputs"].numpy().tolist()
  ex = next(iter(seqio.get_mixture_or_task("pt_mini_boolq_taskless").get_dataset(
      {"inputs": 256, "targets": 4}, split="train", shuffle=False, try_in_mem_cache=False)))
  assert ex["inputs_pretokenized"].numpy().decode().startswith("passage: ")
  assert ex["targets_pretokenized"].numpy().decode() in ("yes", "no")
  corrupted = next(iter(seqio.get_mixture_or_task("pt_mini_corpus_span_corruption").get_dataset(
      {"inputs": 128, "targets": 32}, split="train", shuffle=False, try_in_mem_cache=False)))
  assert 1099 in corrupted["inputs"].numpy().tolist()  # <extra_id_0> = 1100 - 1.
