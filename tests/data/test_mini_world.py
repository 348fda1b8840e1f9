"""The mini world: deterministic corpus, its vocabulary and its SuperGLUE-like tasks."""

import collections

import numpy as np
import seqio

from ptjax.data import catalog, mini_tasks, mini_world
from ptjax.train import evaluation


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
  assert sum(d.startswith("People of ") for d in docs) > 50  # lists, biographies.


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


def test_cb_labels_are_the_speakers_commitment_and_agree_with_the_world():
  world = mini_world.default_world()
  person = {p.name: p for p in world.people}
  examples = list(mini_tasks.cb_examples(world, "train"))
  labels = collections.Counter(e["label"] for e in examples)
  assert set(labels) == {0, 1, 2} and min(labels.values()) > 0.3 * len(examples)
  for e in examples:
    name = e["hypothesis"].split(" lives in ")[0].split(" is a ")[0].split(" keeps a ")[0]
    p = person[name]
    true = e["hypothesis"] in (f"{name} lives in {p.town}.", f"{name} is a {p.job}.",
                               f"{name} keeps a {p.pet}.")
    reply = e["premise"].rsplit(" B: ", 1)[1]
    if e["label"] == 0:  # B commits: the clause holds in the world.
      assert true and reply in ("yes.", "yes, he is.", "yes, she is.", "yes, he does.",
                                "yes, she does.", "I am sure of it."), e
    elif e["label"] == 1:  # B denies: it does not.
      assert not true and (reply.startswith("no") or reply == "certainly not."), e
    else:
      assert reply in ("I do not know.", "I am not sure.", "who knows?"), e
    # An opening exchange is about another subject: it never settles the clause.
    if e["premise"].count(" B: ") == 2:
      opening = e["premise"].split(" A: ")[0]
      topic = ("live" if " lives in " in e["hypothesis"] else
               "looks after" if " keeps a " in e["hypothesis"] else " a ")
      assert topic not in opening, e


def test_registered_tasks_yield_examples():
  for name in ("pt_mini_boolq_taskless", "pt_mini_rte", "pt_mini_cb", "pt_mini_squad",
               "pt_mini_squad_ood"):
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


def _subject(world, text):
  """The person named first in `text` (a biography's subject)."""
  found = [(text.find(p.name), p) for p in world.people if p.name in text]
  return min(found, key=lambda x: x[0])[1]


def test_reading_exercises_answer_by_the_world():
  """The corpus's exercises (where a frozen model learns to say the label words and copy
  answers) are right about the biography they follow."""
  world = mini_world.default_world()
  docs = [d for d in mini_world.corpus_sample(world, 3000) if " Claim: " in d or
          " Answer: " in d or " Q: " in d]
  assert len(docs) > 400
  labels = collections.Counter()
  for d in docs:
    p = _subject(world, d)
    facts = {"lives in": p.town, "works at": p.firm, "is a": p.job, "keeps a": p.pet}
    if d.startswith("A: "):  # A dialogue: the label is what B commits to.
      reply, claim = d.split(" Claim: ")[0].rsplit(" B: ", 1)[1], d.split(" Claim: ")[1]
      label = d.rsplit(" ", 1)[1].rstrip(".")
      labels[label] += 1
      true = any(claim.startswith(f"{p.name} {f} {v}.") for f, v in facts.items())
      if label == "entailment":
        assert true and (reply.startswith("yes") or reply == "I am sure of it."), d
      elif label == "contradiction":
        assert not true and (reply.startswith("no") or reply == "certainly not."), d
      else:
        assert reply in ("I do not know.", "I am not sure.", "who knows?"), d
    elif " Claim: " in d:
      claim, label = d.split(" Claim: ")[1], d.rsplit(" ", 1)[1].rstrip(".")
      labels[label] += 1
      if claim.startswith(p.name + " "):
        true = any(claim.startswith(f"{p.name} {f} {v}.") for f, v in facts.items())
        assert label == ("entailment" if true else "contradiction"), d
      else:
        assert label == "neutral", d
    elif " Answer: " in d:
      question, answer = d.split(" Question: ")[1].split(" Answer: ")
      true = question.rstrip("?").endswith(tuple(f" {v}" for v in facts.values()))
      assert answer == ("yes." if true else "no."), d
    else:
      answer = d.split(" A: ")[1][:-1]
      assert answer in d.split(" Q: ")[0], d  # Extractive: a span of the biography.
  assert set(labels) == {"entailment", "contradiction", "neutral"}
  assert min(labels.values()) > 0.25 * sum(labels.values())


def test_paraphrase_pairs_and_zero_shot_transfer_tasks():
  world = mini_world.default_world()
  def slot(question):
    p = _subject(world, question)
    return next(k for k, ts in mini_tasks._QUESTIONS.items()
                if question in [t.format(n=p.name) for t in ts])
  for e in mini_tasks.qqp_examples(world, "validation"):
    assert e["label"] == int(slot(e["question1"]) == slot(e["question2"])), e
  labels = [e["label"] for e in mini_tasks.mrpc_examples(world, "train")]
  assert 0.4 < np.mean(labels) < 0.6
  task = seqio.get_mixture_or_task("pt_mini_mrpc_from_qqp_taskless")
  # Read with QQP's words: a prompt trained on QQP answering "duplicate" means equivalent.
  assert task.postprocess_fn("duplicate", is_target=False) == 1
  assert task.postprocess_fn("not_duplicate", is_target=False) == 0
  # Its label words are QQP's: they are what rank classification scores and what is legal.
  assert catalog.labels_of(task.name) == mini_tasks.QQP_LABELS
  examples = [{"targets_pretokenized": t} for t in ("equivalent", "not_equivalent", "equivalent")]
  scored = evaluation.score_texts(task, examples, ["duplicate", "duplicate", "maybe"])
  # Read as [1, 1, wrong] against [1, 0, 1]: one hit; tp 1, fp 1, fn 1.
  assert scored == {"accuracy": 100 / 3, "f1": 50.0, "illegal_predictions": 1.0}
  mixture = seqio.get_mixture_or_task("pt_mini_squad_to_ood_taskless")
  assert sorted(t.name for t in mixture.tasks) == ["pt_mini_squad_ood_taskless",
                                                   "pt_mini_squad_taskless"]
