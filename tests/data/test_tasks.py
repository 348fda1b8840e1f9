"""The paper's tasks: every registration yields examples from TFDS mock data, and the
text formats match T5's exactly (golden strings from T5's own code and tests)."""

import functools

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import shared_fixture
from ptjax.data import catalog, objectives
from ptjax.data import preprocessors as pre


@pytest.fixture(scope="module")
def registered():
  import ptjax.data.tasks as tasks
  vocab = seqio.SentencePieceVocabulary(shared_fixture("t5_vocab/sentencepiece.model"), 100)
  tasks.register_all(vocab)
  return vocab


def test_every_task_and_split_yields_examples_from_mock_data(registered):
  names = sorted(n for n in seqio.TaskRegistry.names()
                 if n.startswith("pt_") and not n.startswith("pt_mini_"))
  assert len(names) == 31 * len(catalog.VARIANTS) + 2  # + C4's two objectives.
  with tfds.testing.mock_data(num_examples=1):
    for name in names:
      task = seqio.get_mixture_or_task(name)
      # Every split of T5's format; the variants only differ after the source.
      splits = task.splits[:1] if name.endswith(catalog.VARIANTS[1:]) else task.splits
      for split in splits:
        ds = task.get_dataset({"inputs": 64, "targets": 16}, split=split, shuffle=False,
                              try_in_mem_cache=False)
        example = next(iter(ds))
        assert example["targets"].shape[0] > 0 and example["targets"][-1] == 1, name
  mixtures = [m for m in seqio.MixtureRegistry.names() if m.startswith("pt_")]
  assert {"pt_super_glue_v102_taskless", "pt_squad_to_mrqa_taskless",
          "pt_squad_to_bio_asq", "pt_glue_mrpc_from_qqp_zeroshot_v002_taskless"} <= set(mixtures)
  assert len(seqio.get_mixture_or_task("pt_super_glue_v102_taskless").tasks) == 9


def run(preprocessor, example):
  """One example through a text preprocessor -> {key: python value}."""
  ds = preprocessor(tf.data.Dataset.from_tensors(example))
  out = next(iter(ds))
  return {k: (v.numpy().decode() if v.dtype == tf.string and v.shape == () else v.numpy())
          for k, v in out.items()}


def glue(name, labels, features=None, bench=None):
  return functools.partial(pre.glue, benchmark_name=bench or name, label_names=labels,
                           feature_names=features)


GOLDEN = [
    ("boolq", glue("boolq", ("False", "True")),
     {"question": "is the sky blue", "passage": "The sky is blue.", "idx": 0, "label": 1},
     "boolq passage: The sky is blue. question: is the sky blue", "True"),
    ("cb", glue("cb", ("entailment", "contradiction", "neutral")),
     {"premise": "It rains.", "hypothesis": "It is wet.", "idx": 1, "label": 2},
     "cb hypothesis: It is wet. premise: It rains.", "neutral"),
    ("copa", glue("copa", ("choice1", "choice2")),
     {"premise": "The man broke his toe.", "choice1": "He dropped a hammer.",
      "choice2": "He got a hole.", "question": "cause", "idx": 2, "label": 0},
     "copa choice1: He dropped a hammer. choice2: He got a hole. premise: The man broke his "
     "toe. question: cause", "choice1"),
    ("rte", glue("rte", ("entailment", "not_entailment")),
     {"premise": "A dog runs.", "hypothesis": "An animal moves.", "idx": 3, "label": -1},
     "rte hypothesis: An animal moves. premise: A dog runs.", "<unk>"),
    ("wic", glue("wic", ("False", "True"), ("sentence1", "sentence2", "word")),
     {"sentence1": "A bank account.", "sentence2": "The river bank.", "word": "bank",
      "start1": 2, "start2": 10, "end1": 6, "end2": 14, "idx": 4, "label": 0},
     "wic sentence1: A bank account. sentence2: The river bank. word: bank", "False"),
    ("axg", glue("rte", ("entailment", "not_entailment")),
     {"premise": "The nurse ate.", "hypothesis": "She ate.", "idx": 5, "label": 0},
     "rte hypothesis: She ate. premise: The nurse ate.", "entailment"),
    ("qqp", glue("qqp", ("not_duplicate", "duplicate")),
     {"question1": "How old?", "question2": "What age?", "idx": 6, "label": 1},
     "qqp question1: How old? question2: What age?", "duplicate"),
    ("mrpc", glue("mrpc", ("not_equivalent", "equivalent")),
     {"sentence1": "He left.", "sentence2": "He went away.", "idx": 7, "label": 0},
     "mrpc sentence1: He left. sentence2: He went away.", "not_equivalent"),
]


@pytest.mark.parametrize("name,preprocessor,example,inputs,targets", GOLDEN,
                         ids=[g[0] for g in GOLDEN])
def test_golden_t5_format_and_taskless(name, preprocessor, example, inputs, targets):
  out = run(preprocessor, example)
  assert (out["inputs"], out["targets"]) == (inputs, targets)
  assert out["idx"] == example["idx"]
  taskless = run(lambda ds: pre.remove_first_word(preprocessor(ds)), example)
  assert taskless["inputs"] == inputs.split(" ", 1)[1]  # T5 minus the task word.


def test_golden_axb_is_cast_as_rte():
  out = run(lambda ds: glue("rte", ("entailment", "not_entailment"))(pre.rekey(ds, {
      "premise": "sentence1", "hypothesis": "sentence2", "label": "label", "idx": "idx"})),
      {"sentence1": "Cats sleep.", "sentence2": "Animals rest.", "idx": 0, "label": 1})
  assert (out["inputs"], out["targets"]) == (
      "rte hypothesis: Animals rest. premise: Cats sleep.", "not_entailment")


def test_golden_multirc_removes_html_and_keeps_question_ids():
  out = run(glue("multirc", ("False", "True"), ("question", "answer", "paragraph")), {
      "paragraph": "<b>Sent 1: </b>Once upon a time, Joey.<br><b>Sent 2: </b>Joey loved it.",
      "question": "Who?", "answer": "Joey", "label": 1,
      "idx": {"paragraph": 3, "question": 7, "answer": 1}})
  assert out["inputs"] == ("multirc question: Who? answer: Joey paragraph: Sent 1: Once upon a "
                           "time, Joey. Sent 2: Joey loved it.")
  assert out["targets"] == "True" and out["idx/question"] == 7 and out["idx/paragraph"] == 3


def test_golden_wsc_simple_and_positive_only_training():
  example = {"text": "Mitchell asked Tom if he could lend some money.", "span1_index": 0,
             "span2_index": 4, "span1_text": "Mitchell", "span2_text": "he", "label": 1,
             "idx": 0}
  out = run(pre.wsc_simple, example)
  assert out["inputs"] == "wsc: Mitchell asked Tom if *he* could lend some money."
  assert out["targets"] == "Mitchell"
  negative = dict(example, label=0)
  ds = pre.wsc_simple(tf.data.Dataset.from_tensor_slices(
      {k: [example[k], negative[k]] for k in example}), correct_referent_only=True)
  assert len(list(ds)) == 1
  special = run(pre.wsc_simple, dict(example, text=next(iter(pre._WSC_SPECIAL)), span2_index=28,
                                     span2_text="him"))
  assert special["inputs"].endswith('"Good for *him* ," he said.')


def test_golden_record_one_example_per_answer():
  example = {"passage": "This is the passage.\n@highlight\nAnother sentence\n@highlight\n"
                        "Third sentence.",
             "query": "It was @placeholder.", "entities": ["A", "B", "C"],
             "answers": ["A", "C"], "idx": {"passage": 1, "query": 2}}
  ds = pre.record(tf.data.Dataset.from_tensors(example))
  rows = [{k: v.numpy() for k, v in x.items()} for x in ds]
  assert [r["targets"] for r in rows] == [b"A", b"C"]
  assert rows[0]["inputs"].decode() == ("record query: It was @placeholder. entities: A, B, C "
                                        "passage: This is the passage. Another sentence. "
                                        "Third sentence.")
  assert rows[1]["answers"] == b"A|||C" and rows[1]["idx/query"] == 2
  empty = list(pre.record(tf.data.Dataset.from_tensors(dict(example, answers=tf.zeros(
      [0], tf.string)))))
  assert [x["targets"].numpy() for x in empty] == [b"<unk>"]


def test_golden_squad_and_pad_punctuation():
  text = tf.constant('"This  is a string with "punctuation (1845-1986) ".')
  assert pre.pad_punctuation(text).numpy().decode() == (
      ' " This is a string with " punctuation ( 1845 - 1986 ) " . ')
  out = run(pre.squad, {"id": "x1", "title": "T", "context": "Some context.",
                        "question": "A question?",
                        "answers": {"text": ["The answer.", "Answer"],
                                    "answer_start": [0, 4]}})
  assert out["inputs"] == "question: A question ? context: Some context . "
  assert out["targets"] == "The answer . "
  assert out["answers"] == "The answer . |||Answer"


def test_golden_mrqa_uses_squads_format_and_every_answer():
  out = run(pre.mrqa, {"qid": "q7", "question": "Which gene?", "context": "BRCA1 (a gene).",
                       "answers": ["BRCA1", "brca1 gene"],
                       "detected_answers": {"text": ["BRCA1"]}})
  assert out["inputs"] == "question: Which gene ? context: BRCA1 ( a gene ) . "
  assert out["targets"] == "BRCA1"
  assert out["answers"] == "BRCA1|||brca1 gene" and out["id"] == "q7"


def test_qa_taskless_keeps_the_question_word(registered):
  with tfds.testing.mock_data(num_examples=1):
    for name in ("pt_squad_v110_taskless", "pt_mrqa_race_v100_taskless"):
      task = seqio.get_mixture_or_task(name)
      ex = next(iter(task.get_dataset({"inputs": 64, "targets": 8}, split="validation",
                                      shuffle=False, try_in_mem_cache=False)))
      assert ex["inputs_pretokenized"].numpy().decode().startswith("question: ")


def test_task_index_variant_starts_with_its_sentinel(registered):
  with tfds.testing.mock_data(num_examples=1):
    for name, index in (("rte", 5), ("boolq", 0)):
      task = seqio.get_mixture_or_task(f"pt_super_glue_{name}_v102_task_index")
      ex = next(iter(task.get_dataset({"inputs": 64, "targets": 8}, split="validation",
                                      shuffle=False, try_in_mem_cache=False)))
      assert int(ex["inputs"][0]) == 32099 - index
      taskless = seqio.get_mixture_or_task(f"pt_super_glue_{name}_v102_taskless")
      ex2 = next(iter(taskless.get_dataset({"inputs": 64, "targets": 8}, split="validation",
                                           shuffle=False, try_in_mem_cache=False)))
      np.testing.assert_array_equal(ex["inputs"][1:], ex2["inputs"][:len(ex["inputs"]) - 1])
  with tfds.testing.mock_data(num_examples=1):
    sentinel = seqio.get_mixture_or_task("pt_super_glue_rte_v102_taskless_sentinel")
    ex = next(iter(sentinel.get_dataset({"inputs": 64, "targets": 8}, split="validation",
                                        shuffle=False, try_in_mem_cache=False)))
    assert int(ex["inputs"][-2]) == 32099 and int(ex["inputs"][-1]) == 1  # ... <X0> EOS
    assert int(ex["targets"][0]) == 32099
    post = sentinel.postprocess_fn
    assert post(b"<extra_id_0> entailment", example={}, is_target=False) == 0
    assert post(b"not_entailment", example={}, is_target=True) == 1
  assert catalog.labels_of("pt_super_glue_cb_v102_taskless") == (
      "entailment", "contradiction", "neutral")


def _token_dataset(lengths):
  def gen():
    for i, n in enumerate(lengths):
      yield {"targets": np.arange(10000 * i + 5, 10000 * i + 5 + n, dtype=np.int32)}
  return tf.data.Dataset.from_generator(
      gen, output_signature={"targets": tf.TensorSpec([None], tf.int32)})


def test_span_corruption_layout_and_density():
  vocab = seqio.PassThroughVocabulary(size=32100)  # T5's size: sentinels 32099, 32098, ...
  features = {"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)}
  assert objectives.segment_lengths(512) == (568, 114)  # T5's numbers for 512 inputs.
  out = list(objectives.span_corruption(_token_dataset([3000, 2000]), {"inputs": 512,
                                                                       "targets": 114},
                                        features).as_numpy_iterator())
  sentinel0 = vocab.vocab_size - 1
  densities = []
  for ex in out[:-1]:
    inputs, targets = ex["inputs"], ex["targets"]
    assert len(inputs) == 511 and len(targets) == 113  # + EOS = 512 / 114.
    in_sentinels = [t for t in inputs if t > sentinel0 - 100]
    out_sentinels = [t for t in targets if t > sentinel0 - 100]
    # Sentinels count down from extra_id_0, in the same order in inputs and targets.
    assert in_sentinels == out_sentinels == list(range(sentinel0, sentinel0 - len(in_sentinels), -1))
    assert targets[0] == sentinel0
    # Rebuild the segment: fill each sentinel in the inputs with its span from the targets.
    spans, current = {}, None
    for t in targets:
      if t in out_sentinels:
        current = t
        spans[current] = []
      else:
        spans[current].append(t)
    rebuilt = [tok for t in inputs for tok in (spans[t] if t in spans else [t])]
    assert rebuilt == sorted(rebuilt) and len(rebuilt) == 568  # The original tokens, in order.
    densities.append(sum(len(v) for v in spans.values()) / 568)
  assert abs(np.mean(densities) - 0.15) < 0.01


def test_prefix_lm_splits_into_prefix_and_continuation():
  vocab = seqio.ByteVocabulary()
  features = {"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)}
  out = list(objectives.prefix_lm(_token_dataset([100, 30]), {"inputs": 20, "targets": 10},
                                  features).as_numpy_iterator())
  assert len(out) == 5  # Per document: 100 = 30+30+30+10, 30 = 30.
  splits = set()
  for ex in out:
    whole = np.concatenate([ex["inputs"], ex["targets"]])
    assert len(ex["inputs"]) >= 1 and len(ex["targets"]) >= 1
    assert np.all(np.diff(whole) == 1)  # Prefix + continuation = the original segment.
    splits.add(len(ex["inputs"]))
  assert len(splits) > 1  # The split point is random.


def test_add_sentinel_ablation():
  out = objectives.add_sentinel({"inputs": tf.constant([5, 6]), "targets": tf.constant([7])},
                                vocab_size=32100)
  assert out["inputs"].numpy().tolist() == [5, 6, 32099]
  assert out["targets"].numpy().tolist() == [32099, 7]


def test_zero_shot_transfer_maps_label_words():
  from ptjax.data import postprocessors
  to_mrpc = postprocessors.classifier(("not_equivalent", "equivalent"),
                                      translate=lambda s: s.replace("duplicate", "equivalent"))
  assert to_mrpc("duplicate") == 1 and to_mrpc("not_duplicate") == 0
  assert to_mrpc("equivalent") == 1 and to_mrpc("maybe") == -1
  assert to_mrpc("not_equivalent", is_target=True) == 0


def test_show_tasks_lists_and_prints_mock_examples(registered, capsys):
  from ptjax.data import show_tasks
  assert show_tasks.main(["--list"]) == 0
  listed = capsys.readouterr().out
  assert "task     pt_super_glue_cb_v102_taskless  labels: entailment, contradiction, neutral" \
      in listed and "mixture  pt_squad_to_mrqa" in listed
  assert show_tasks.main(["pt_super_glue_wic_v102", "--mock", "-n", "2"]) == 0
  shown = capsys.readouterr().out
  assert shown.count("inputs:  wic sentence1: ") == 2
  assert show_tasks.main(["no_such_task"]) == 2
