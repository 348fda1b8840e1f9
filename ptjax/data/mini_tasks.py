"""SuperGLUE-like tasks over the mini world, registered as seqio tasks (`import
ptjax.data.mini_tasks`), in the same three formats and with the same metrics as the
paper's tasks:

  pt_mini_boolq    yes/no question over a biography; two in five are closed-book (about a
                   firm's town or a town's river: facts only the corpus states)
  pt_mini_rte      premise biography + hypothesis -> entailment / contradiction / neutral
  pt_mini_cb       CommitmentBank-like: does B, in a dialogue, commit to the clause A asked
                   about (entailment / contradiction / neutral)?
  pt_mini_squad    extractive QA over biographies
  pt_mini_squad_ood  the same questions over dialogues and news items (domain shift);
                   pt_mini_squad_to_ood: both, to evaluate a mini SQuAD run on each
  pt_mini_qqp      question pairs: duplicate / not_duplicate (QQP-like)
  pt_mini_mrpc     statement pairs: equivalent / not_equivalent (MRPC-like);
                   pt_mini_{mrpc_from_qqp,qqp_from_mrpc}: the target read with the source's
                   label words, for zero-shot transfer; pt_mini_X_from_Y_zeroshot: Y and
                   that, to evaluate a run trained on Y
  pt_mini_corpus_{span_corruption,prefix_lm}   pre-training objectives over the corpus

Splits: people are split 80/10/10 (train/validation/test) by index, so no person of a
validation question appears in a train question; examples are generated deterministically
from the world's seed.
"""

import functools
import itertools
import os
import random
from typing import Iterator

import seqio
import tensorflow as tf

from ptjax import assets
from ptjax.data import catalog, metrics, mini_world, postprocessors
from ptjax.data import preprocessors as pre
from ptjax.data import tasks as paper_tasks

VOCAB_PATH = assets.MINI_WORLD_VOCAB
SPLITS = ("train", "validation", "test")
BOOLQ_LABELS, RTE_LABELS = ("no", "yes"), mini_world.World.LABELS


def mini_vocabulary() -> seqio.Vocabulary:
  """The SentencePiece model ptjax trained on the mini-world corpus (+100 extra ids)."""
  return seqio.SentencePieceVocabulary(VOCAB_PATH, extra_ids=100)


def train_vocabulary(path: str = VOCAB_PATH, vocab_size: int = 1000,
                     documents: int = 20000) -> str:
  """Trains the unigram SentencePiece model on the corpus (pad 0, eos 1, unk 2: T5's ids)."""
  import io

  import sentencepiece as spm
  model = io.BytesIO()
  # The corpus plus the tasks' format words (task names, field names, labels).
  formats = [f"mini_boolq passage: {e['passage']} question: {e['question']} yes no"
             for e in boolq_examples(mini_world.default_world(), "train")]
  formats += [f"mini_rte hypothesis: {e['hypothesis']} premise: {e['premise']} "
              f"{' '.join(RTE_LABELS)}" for e in rte_examples(mini_world.default_world(), "train")]
  formats += [f"question: {e['question']} context: {e['context']}"
              for e in squad_ood_examples(mini_world.default_world(), "train")]
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(mini_world.corpus_sample(documents=documents) + formats),
      model_writer=model,
      vocab_size=vocab_size, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      # Label words whole: a label split into 4-6 pieces is far harder for a frozen mini
      # model to emit through a prompt (rank classification also favours short labels).
      user_defined_symbols=[f"▁{w}" for w in BOOLQ_LABELS + RTE_LABELS],
      character_coverage=1.0, num_threads=1, minloglevel=2)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(model.getvalue())
  return path


# Several examples per person (other questions, other renderings of the biography): 3,840
# train, 240 validation and 240 test examples per task.
EXAMPLES_PER_PERSON = {"train": 8, "validation": 4, "test": 4}


def _people(world, split):
  """The split's people, each repeated EXAMPLES_PER_PERSON times (round-robin)."""
  people = [p for i, p in enumerate(world.people) if mini_world.split_of(i) == split]
  return people * EXAMPLES_PER_PERSON[split]


def boolq_examples(world: mini_world.World, split: str) -> Iterator[dict]:
  rng = random.Random(f"boolq-{split}")
  for i, p in enumerate(_people(world, split)):
    passage = world.biography(p, rng)
    truth = rng.random() < 0.5
    kind = rng.choice(["town", "job", "pet", "firm_town", "river"])
    if kind == "town":
      town = p.town if truth else rng.choice([t.name for t in world.towns if t.name != p.town])
      question = f"does {p.name} live in {town}?"
    elif kind == "job":
      job = p.job if truth else rng.choice([j for j in mini_world.PROFESSIONS if j != p.job])
      question = f"is {p.name} a {job}?"
    elif kind == "pet":
      pet = p.pet if truth else rng.choice([a for a in mini_world.ANIMALS if a != p.pet])
      question = f"does {p.name} keep a {pet}?"
    elif kind == "firm_town":  # Closed-book: the passage names the firm, not its town.
      firm = world.firm[p.firm]
      town = firm.town if truth else rng.choice(
          [t.name for t in world.towns if t.name != firm.town])
      question = f"is {p.firm} based in {town}?"
    else:  # Closed-book: which river a town lies on is told only by town notes.
      river = world.town[p.town].river if truth else rng.choice(
          [r for r in mini_world.RIVERS if r != world.town[p.town].river])
      question = f"is {p.town} on the {river} river?"
    yield {"passage": passage, "question": question, "label": int(truth), "idx": i,
           "closed_book": kind in ("firm_town", "river")}


def rte_examples(world: mini_world.World, split: str) -> Iterator[dict]:
  rng = random.Random(f"rte-{split}")
  for i, p in enumerate(_people(world, split)):
    label = rng.randrange(3)
    if label == 0:
      hypothesis = rng.choice([f"{p.name} lives in {p.town}.", f"{p.name} works at {p.firm}."])
    elif label == 1:
      other = rng.choice([t.name for t in world.towns if t.name != p.town])
      hypothesis = f"{p.name} lives in {other}."
    else:  # Neutral: true or false in the world, but the premise does not say.
      firm = world.firm[rng.choice(world.firms).name]
      hypothesis = f"{firm.name} makes {rng.choice(mini_world.PRODUCTS)}."
    yield {"premise": world.biography(p, rng), "hypothesis": hypothesis, "label": label,
           "idx": i}


def cb_examples(world: mini_world.World, split: str) -> Iterator[dict]:
  """CommitmentBank-like: a dialogue in which B answers A's question about a person; the
  hypothesis is the clause A asked about. B commits to it (entailment), denies it with a
  correction (contradiction) or does not commit (neutral), as CB's speakers do."""
  rng = random.Random(f"cb-{split}")
  for i, p in enumerate(_people(world, split)):
    label = rng.randrange(3)
    premise, hypothesis = world.commitment(p, label, rng)
    yield {"premise": premise, "hypothesis": hypothesis, "label": label, "idx": i}


def _qa(context, question, answer, i):
  assert answer in context, (answer, context)
  return {"context": context, "question": question, "answers": [answer], "id": str(i)}


def squad_examples(world: mini_world.World, split: str) -> Iterator[dict]:
  rng = random.Random(f"squad-{split}")
  for i, p in enumerate(_people(world, split)):
    context = world.biography(p, rng)
    question, answer = rng.choice([
        (f"Where does {p.name} live?", p.town), (f"Where does {p.name} work?", p.firm),
        (f"Who is the best friend of {p.name}?", p.friend),
        (f"What is the name of the {p.pet} of {p.name}?", p.pet_name)])
    yield _qa(context, question, answer, i)


def squad_ood_examples(world: mini_world.World, split: str) -> Iterator[dict]:
  """Dialogues and news items instead of biographies."""
  rng = random.Random(f"squad-ood-{split}")
  for i, p in enumerate(_people(world, split)):
    firm = world.firm[p.firm]
    context = (f"A: Where does {p.name} live? B: In {p.town}. A: And what does {p.pronoun} "
               f"do? B: {p.pronoun.capitalize()} is a {p.job}. " + world.news(firm, rng))
    question, answer = rng.choice([
        (f"Where does {p.name} live?", p.town), (f"What does {p.firm} make?", firm.product),
        (f"What is the job of {p.name}?", p.job)])
    yield _qa(context, question, answer, i)


# Paraphrase pairs (the paper's QQP <-> MRPC transfer in miniature): question pairs and
# statement pairs about a person, the same meaning in other words or not.
QQP_LABELS, MRPC_LABELS = ("not_duplicate", "duplicate"), ("not_equivalent", "equivalent")
_QUESTIONS = {"town": ["Where does {n} live?", "In which town does {n} live?",
                       "What is the home town of {n}?"],
              "firm": ["Where does {n} work?", "Who employs {n}?",
                       "Which firm does {n} work for?"],
              "pet": ["What pet does {n} keep?", "Which animal lives with {n}?"],
              "friend": ["Who is the best friend of {n}?", "Who is {n}'s best friend?"]}
_STATEMENTS = {"town": ["{n} lives in {v}.", "{v} is home to {n}.", "{n} makes a home in {v}."],
               "firm": ["{n} is employed by {v}.", "{v} employs {n}.", "{n} works at {v}."],
               "job": ["{n} works as a {v}.", "By trade {n} is a {v}."]}


def _pair(rng, templates, fill):
  """(text1, text2, same): two wordings of one slot, or of two different slots."""
  slot = rng.choice(sorted(templates))
  first, second = rng.sample(templates[slot], 2)
  same = rng.random() < 0.5
  if not same:
    other = rng.choice([k for k in sorted(templates) if k != slot])
    second = rng.choice(templates[other])
    return fill(first, slot), fill(second, other), 0
  return fill(first, slot), fill(second, slot), 1


def qqp_examples(world: mini_world.World, split: str) -> Iterator[dict]:
  rng = random.Random(f"qqp-{split}")
  for i, p in enumerate(_people(world, split)):
    q1, q2, label = _pair(rng, _QUESTIONS, lambda t, slot: t.format(n=p.name))
    yield {"question1": q1, "question2": q2, "label": label, "idx": i}


def mrpc_examples(world: mini_world.World, split: str) -> Iterator[dict]:
  rng = random.Random(f"mrpc-{split}")
  for i, p in enumerate(_people(world, split)):
    value = {"town": p.town, "firm": p.firm, "job": p.job}
    s1, s2, label = _pair(rng, _STATEMENTS, lambda t, slot: t.format(n=p.name, v=value[slot]))
    yield {"sentence1": s1, "sentence2": s2, "label": label, "idx": i}


def _source(generator, output_signature) -> seqio.FunctionDataSource:
  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    rows = list(generator(mini_world.default_world(), split))
    return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=output_signature)
  return seqio.FunctionDataSource(dataset_fn, splits=SPLITS)


_TEXT = tf.TensorSpec([], tf.string)
_INT = tf.TensorSpec([], tf.int32)


@seqio.map_over_dataset
def _qa_format(x):
  return {"inputs": tf.strings.join(["question:", x["question"], "context:", x["context"]],
                                    separator=" "),
          "targets": x["answers"][0],
          "answers": tf.strings.reduce_join(x["answers"], separator="|||"), "id": x["id"]}


EVAL_CORPUS_DOCUMENTS = 2000


def _corpus_dataset(split, shuffle_files, seed=None):
  """train: endless documents; validation / test: the first 2,000 of other seeds."""
  del shuffle_files, seed
  def documents():
    stream = mini_world.default_world().corpus(
        seed={"train": 0, "validation": 1, "test": 2}[split])
    if split != "train":
      stream = itertools.islice(stream, EVAL_CORPUS_DOCUMENTS)
    return ({"text": t} for t in stream)
  return tf.data.Dataset.from_generator(documents, output_signature={"text": _TEXT})


def register(vocabulary: seqio.Vocabulary) -> None:
  catalog.add_task_variants(
      "pt_mini_boolq", _source(lambda w, s: ({k: v for k, v in e.items() if k != "closed_book"}
                                             for e in boolq_examples(w, s)),
                               {"passage": _TEXT, "question": _TEXT, "label": _INT, "idx": _INT}),
      [functools.partial(pre.glue, benchmark_name="mini_boolq", label_names=BOOLQ_LABELS)],
      vocabulary, postprocessors.classifier(BOOLQ_LABELS), [metrics.accuracy], 0, BOOLQ_LABELS)
  for name, generator, index in (("rte", rte_examples, 1), ("cb", cb_examples, 6)):
    catalog.add_task_variants(
        f"pt_mini_{name}", _source(generator, {"premise": _TEXT, "hypothesis": _TEXT,
                                               "label": _INT, "idx": _INT}),
        [functools.partial(pre.glue, benchmark_name=f"mini_{name}", label_names=RTE_LABELS)],
        vocabulary, postprocessors.classifier(RTE_LABELS),
        [metrics.macro_f1(3), metrics.accuracy], index, RTE_LABELS)
  paraphrase = {"qqp": (qqp_examples, QQP_LABELS, ("question1", "question2"), 4),
                "mrpc": (mrpc_examples, MRPC_LABELS, ("sentence1", "sentence2"), 5)}
  for name, (generator, labels, keys, index) in paraphrase.items():
    catalog.add_task_variants(
        f"pt_mini_{name}", _source(generator, {keys[0]: _TEXT, keys[1]: _TEXT, "label": _INT,
                                                "idx": _INT}),
        [functools.partial(pre.glue, benchmark_name=f"mini_{name}", label_names=labels,
                           feature_names=keys)],
        vocabulary, postprocessors.classifier(labels), [metrics.binary_f1, metrics.accuracy],
        index, labels)
  # Zero-shot transfer: the target task, read with the source's label words (the task's
  # labels are those words: rank classification scores them, anything else is illegal).
  for (source, target), words in {("qqp", "mrpc"): ("duplicate", "equivalent"),
                                  ("mrpc", "qqp"): ("equivalent", "duplicate")}.items():
    generator, labels, keys, index = paraphrase[target]
    catalog.add_task_variants(
        f"pt_mini_{target}_from_{source}",
        _source(generator, {keys[0]: _TEXT, keys[1]: _TEXT, "label": _INT, "idx": _INT}),
        [functools.partial(pre.glue, benchmark_name=f"mini_{target}", label_names=labels,
                           feature_names=keys)],
        vocabulary, postprocessors.classifier(
            labels, translate=lambda text, w=words: text.replace(*w)),
        [metrics.binary_f1, metrics.accuracy], index, paraphrase[source][1])
    # Evaluated together: the source in domain (checkpoints are chosen on it), the target.
    for suffix in catalog.VARIANTS:
      catalog.add_mixture(f"pt_mini_{target}_from_{source}_zeroshot{suffix}",
                          [f"pt_mini_{source}{suffix}", f"pt_mini_{target}_from_{source}{suffix}"])
  qa_signature = {"context": _TEXT, "question": _TEXT, "id": _TEXT,
                  "answers": tf.TensorSpec([None], tf.string)}
  for i, (name, generator) in enumerate((("pt_mini_squad", squad_examples),
                                         ("pt_mini_squad_ood", squad_ood_examples))):
    catalog.add_task_variants(name, _source(generator, qa_signature), [_qa_format], vocabulary,
                              postprocessors.answers, [metrics.squad], 2 + i,
                              has_task_word=False)
  # Train on mini SQuAD, evaluate on it and zero-shot on its out-of-domain variant.
  for suffix in catalog.VARIANTS:
    catalog.add_mixture(f"pt_mini_squad_to_ood{suffix}",
                        [f"pt_mini_squad{suffix}", f"pt_mini_squad_ood{suffix}"])
  corpus = seqio.FunctionDataSource(_corpus_dataset, splits=SPLITS)
  paper_tasks.register_pretraining("pt_mini_corpus", corpus, vocabulary)


register(mini_vocabulary())
