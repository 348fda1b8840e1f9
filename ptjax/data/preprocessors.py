"""Text-to-text formats of T5 (google-research/text-to-text-transfer-transformer), written
anew: GLUE-style `"{task} key1: v1 key2: v2"`, WSC, ReCoRD, SQuAD; plus the prompt-tuning
variants (taskless: no leading task word; task index: an <extra_id_k> first).

All are seqio preprocessors on tf.data examples.
"""

import functools
from typing import Optional, Sequence

import seqio
import tensorflow as tf

from ptjax.data import objectives

UNK = "<unk>"


def _label_text(label, label_names: Sequence[str]):
  """Class id -> label string; -1 (unlabelled test examples) -> '<unk>'."""
  return tf.cond(tf.equal(label, -1), lambda: tf.constant(UNK),
                 lambda: tf.gather(tf.constant(list(label_names)), label))


@seqio.map_over_dataset
def glue(x, benchmark_name: str, label_names: Sequence[str],
         feature_names: Optional[Sequence[str]] = None):
  """`"{benchmark} {k1}: {v1} {k2}: {v2} ..."` over `feature_names` or the sorted keys
  (without label/idx); target = the label's name. MultiRC's HTML is removed."""
  keys = feature_names or sorted(set(x.keys()) - {"label", "idx"})
  parts = [benchmark_name]
  for key in keys:
    parts += [f"{key}:", x[key]]
  joined = tf.strings.join(parts, separator=" ")
  out = {"targets": _label_text(x["label"], label_names)}
  if benchmark_name == "multirc":
    joined = tf.strings.regex_replace(joined, "<br>", " ")
    joined = tf.strings.regex_replace(joined, "<(/)?b>", "")
    for key in ("paragraph", "question", "answer"):
      out[f"idx/{key}"] = x["idx"][key]
  else:
    out["idx"] = x["idx"]
  out["inputs"] = joined
  return out


@seqio.map_over_dataset
def stsb(x):
  """STS-B as T5 casts it: `"stsb sentence1: {s1} sentence2: {s2}"` -> the similarity
  score rounded to the nearest 0.2, as text with one decimal ('3.8'; tf.round rounds
  halves to even, as T5's). Unlabelled test examples (-1) become '-1.0', as in T5."""
  inputs = tf.strings.join(["stsb sentence1:", x["sentence1"], "sentence2:", x["sentence2"]],
                           separator=" ")
  target = tf.strings.as_string(tf.round(x["label"] * 5) / 5, precision=1)
  return {"inputs": inputs, "targets": target, "idx": x["idx"]}


# Two WSC texts whose pronoun is not the word at span2_index; T5 fixes them by hand.
_WSC_SPECIAL = {
    'The boy continued to whip the pony , and eventually the pony threw him over. John '
    'laughed out quite loud. "Good for him," he said. ':
        'The boy continued to whip the pony , and eventually the pony threw him over. John '
        'laughed out quite loud. "Good for X ," he said.',
    'When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the '
    'magic pebble in an iron safe . Some day they might want to use it , but really for now, '
    'what more could they wish for?':
        'When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the '
        'magic pebble in an iron safe . Some day they might want to use X , but really for '
        'now, what more could they wish for?',
}


def _wsc_marked(x):
  """The text with the pronoun (word span2_index) marked as *pronoun*."""
  words = tf.strings.split(x["text"], sep=" ")
  index = x["span2_index"]
  with_x = tf.strings.join([tf.strings.reduce_join(words[:index], separator=" "), "X",
                            tf.strings.reduce_join(words[index + 1:], separator=" ")],
                           separator=" ")
  for text, fixed in _WSC_SPECIAL.items():
    with_x = tf.where(tf.equal(x["text"], text), tf.constant(fixed), with_x)
  return tf.strings.regex_replace(with_x, " X ", " *" + x["span2_text"] + "* ")


@seqio.map_over_dataset
def _wsc_format(x):
  return {"inputs": tf.strings.join(["wsc:", _wsc_marked(x)], separator=" "),
          "targets": x["span1_text"], "label": x["label"], "idx": x["idx"]}


def wsc_simple(dataset, correct_referent_only: bool = False):
  """WSC as generation of the referent: `"wsc: ... *pronoun* ..."` -> span1_text.
  With `correct_referent_only` (training) only positive examples remain (259 in v1.0.2)."""
  if correct_referent_only:
    dataset = dataset.filter(lambda x: x["label"] > 0)
  return _wsc_format(dataset)


def record(dataset):
  """ReCoRD: `"record query: {q} entities: {e1}, {e2} passage: {p}"`, one example per
  answer (or '<unk>'), the full answer list kept for evaluation."""
  def expand(x):
    passage = tf.strings.regex_replace(x["passage"], r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
    passage = tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")
    inputs = tf.strings.join(
        ["record query:", x["query"], "entities:",
         tf.strings.reduce_join(x["entities"], separator=", "), "passage:", passage],
        separator=" ")
    answers = x["answers"]
    targets = tf.cond(tf.size(answers) > 0, lambda: answers, lambda: tf.constant([UNK]))
    n = tf.size(targets)
    return tf.data.Dataset.from_tensor_slices({
        "inputs": tf.fill([n], inputs), "targets": targets,
        "answers": tf.tile(tf.expand_dims(tf.strings.reduce_join(
            answers, separator="|||"), 0), [n]),
        "idx/passage": tf.fill([n], x["idx"]["passage"]),
        "idx/query": tf.fill([n], x["idx"]["query"])})
  return dataset.flat_map(expand)


def pad_punctuation(text):
  """T5's SQuAD tokenisation hint: spaces around ASCII punctuation, single spaces."""
  text = tf.strings.regex_replace(text, r"([[:punct:]])", r" \1 ")
  return tf.strings.regex_replace(text, r"\s+", " ")


def _join(parts):
  return tf.strings.regex_replace(tf.strings.join(parts, separator=" "), r"\s+", " ")


def squad_format(question, context, answers):
  """`"question: {q} context: {c}"` -> the first answer, all punctuation-padded."""
  answers = pad_punctuation(answers)
  return {"inputs": _join(["question:", pad_punctuation(question), "context:",
                           pad_punctuation(context)]),
          "targets": answers[0],
          "answers": tf.strings.reduce_join(answers, separator="|||")}


@seqio.map_over_dataset
def squad(x):
  """SQuAD v1.1 (TFDS squad/v1.1)."""
  return {**squad_format(x["question"], x["context"], x["answers"]["text"]), "id": x["id"]}


@seqio.map_over_dataset
def mrqa(x):
  """MRQA out-of-domain sets (TFDS mrqa/*): SQuAD's format; the target is the first
  detected answer, evaluation uses every answer."""
  answers = tf.concat([x["detected_answers"]["text"][:1], x["answers"]], axis=0)
  out = squad_format(x["question"], x["context"], answers)
  out["answers"] = tf.strings.reduce_join(pad_punctuation(x["answers"]), separator="|||")
  out["id"] = x["qid"]
  return out


@seqio.map_over_dataset
def remove_first_word(x):
  """The taskless variant: drops the leading task word (`'rte hypothesis: ..'` ->
  `'hypothesis: ..'`)."""
  return {**x, "inputs": tf.strings.regex_replace(x["inputs"], r"^[^ ]* ", "",
                                                   replace_global=False)}


def add_task_index(dataset, output_features, index: int):
  """The task-index variant: token <extra_id_{index}> (= vocab_size - 1 - index) first.
  Runs after tokenization, before EOS."""
  vocab_size = output_features["inputs"].vocabulary.vocab_size

  def fn(x):
    token = tf.constant([vocab_size - 1 - index], x["inputs"].dtype)
    return {**x, "inputs": tf.concat([token, x["inputs"]], axis=0)}
  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def rekey(dataset, key_map: dict):
  """{new: x[old]}, other keys dropped."""
  return dataset.map(lambda x: {new: x[old] for new, old in key_map.items()})


def add_sentinel(dataset, output_features):
  """Token level, before EOS: inputs end with and targets start with <extra_id_0>."""
  vocab_size = output_features["targets"].vocabulary.vocab_size
  return dataset.map(functools.partial(objectives.add_sentinel, vocab_size=vocab_size),
                     num_parallel_calls=tf.data.AUTOTUNE)
