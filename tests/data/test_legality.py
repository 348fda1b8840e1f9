"""Prediction legality is judged after the task's postprocessor (issue 15): for every
registered task with label words, the outputs a perfect model emits count 0 illegal
predictions and score perfectly; anything the postprocessor cannot read as a label word is
still counted."""

import collections

import pytest
import seqio
import tensorflow_datasets as tfds

from conftest import shared_fixture
from ptjax.data import catalog, metrics, pipeline
from ptjax.train import evaluation

# Long enough for every label with EOS (mini MRPC's `not_equivalent`: 10 pieces + sentinel).
LENGTHS = {"inputs": 16, "targets": 16}
EXAMPLES = 6
# Variants differ in their inputs only; the sentinel variant also in its targets (token
# level) and postprocessor. Examples are read once per (source task, targets) pair.
SAME_TARGETS = ("_taskless", "_task_index")


@pytest.fixture(scope="module")
def labelled_tasks():
  import ptjax.data.tasks as tasks
  from ptjax.data import mini_tasks  # noqa: F401 (registers the mini tasks)
  tasks.register_all(seqio.SentencePieceVocabulary(
      shared_fixture("t5_vocab/sentencepiece.model"), 100))
  names = sorted(n for n in seqio.TaskRegistry.names() if catalog.labels_of(n) is not None)
  # SuperGLUE (8), GLUE (2 + 2 zero-shot), mini (5 + 2 zero-shot), each in 4 variants.
  assert len([n for n in names if n.startswith("pt_")]) >= 19 * len(catalog.VARIANTS)
  return names


def reading_task(name: str) -> str:
  """The task whose examples `name` shares (same source, preprocessors and targets)."""
  for suffix in SAME_TARGETS:
    base = name[:-len(suffix)]
    if name.endswith(suffix) and catalog.labels_of(base) == catalog.labels_of(name) and \
        base in seqio.TaskRegistry.names():
      return base
  return name


def perfect_outputs(task, examples) -> list[str]:
  """What a model emits when it generates each example's target tokens exactly (decoded as
  the evaluator decodes; a sentinel variant's start with '<extra_id_0>')."""
  vocab = task.output_features["targets"].vocabulary
  return [vocab.decode([int(t) for t in ex["targets"] if t > 0]) for ex in examples]


def test_perfect_outputs_of_every_registered_task_count_no_illegal_predictions(
    labelled_tasks):
  read = {}
  checked = collections.Counter()
  with tfds.testing.mock_data(num_examples=EXAMPLES):
    for name in labelled_tasks:
      task = seqio.get_mixture_or_task(name)
      split = "validation" if "validation" in task.splits else task.splits[0]
      source = reading_task(name)
      if source not in read:
        read[source] = pipeline.eval_examples(source, LENGTHS, split, EXAMPLES)
      examples = read[source]
      assert len(examples) == EXAMPLES, name
      labels = catalog.labels_of(name)
      legal = catalog.legal_predictions(task)
      # Distinct label words read as distinct labels, none of them as an illegal one.
      assert all(legal.count(v) == 1 for v in legal), (name, legal)
      assert metrics.count_illegal(legal, [postprocess_illegal(task)]) == len(legal), name
      post = task.postprocess_fn
      targets = [post(evaluation.as_text(ex["targets_pretokenized"]), example=ex,
                      is_target=True) for ex in examples]
      perfect = {}  # The metrics of the targets as predictions.
      for fn in task.predict_metric_fns:
        perfect.update(fn(targets, targets))
      generated = perfect_outputs(task, examples)
      if name.endswith("_sentinel"):
        assert all(g.startswith("<extra_id_0>") for g in generated), (name, generated)
      else:
        assert generated == [evaluation.as_text(ex["targets_pretokenized"])
                             for ex in examples], name
      # Rank classification's output: the label word read as the same label.
      ranked = [next(l for l in labels if post(l, example=ex, is_target=False) ==
                     post(g, example=ex, is_target=False))
                for g, ex in zip(generated, examples)]
      for kind, texts in (("generated", generated), ("ranked", ranked)):
        scored = evaluation.score_texts(task, examples, texts)
        assert scored["illegal_predictions"] == 0, (name, kind, texts)
        main = "f1a" if "multirc" in name else "accuracy"
        assert scored[main] == pytest.approx(perfect[main]), (name, kind)
        assert scored["em" if "multirc" in name else "accuracy"] == 100.0, (name, kind)
        assert {k: v for k, v in scored.items() if k != "illegal_predictions"} == \
            pytest.approx(perfect), (name, kind)
        # A clearly illegal output is still counted (and wrong), whatever the variant.
        for bad in ("maybe", "<extra_id_0> maybe", "<extra_id_1> " + labels[0]):
          worse = evaluation.score_texts(task, examples, [bad] + texts[1:])
          assert worse["illegal_predictions"] == 1, (name, kind, bad)
          assert worse["em" if "multirc" in name else "accuracy"] < 100.0, (name, kind, bad)
        checked[kind] += 1
  assert checked == {"generated": len(labelled_tasks), "ranked": len(labelled_tasks)}


def postprocess_illegal(task):
  """What the task's postprocessor makes of text that is no label word."""
  return task.postprocess_fn("certainly not a label", example=None, is_target=False)


def test_the_issue_example_sentinel_outputs_are_legal(labelled_tasks):
  task = seqio.get_mixture_or_task("pt_super_glue_rte_v102_taskless_sentinel")
  examples = [{"targets_pretokenized": b"entailment"}] * 4
  scored = evaluation.score_texts(task, examples, ["<extra_id_0> entailment"] * 4)
  assert scored == {"accuracy": 100.0, "illegal_predictions": 0.0}
  # Without the sentinel variant's postprocessor the same text is no label.
  plain = seqio.get_mixture_or_task("pt_super_glue_rte_v102_taskless")
  assert evaluation.score_texts(plain, examples, ["<extra_id_0> entailment"] * 4) == {
      "accuracy": 0.0, "illegal_predictions": 4.0}
