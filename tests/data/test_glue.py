"""All of GLUE (issue 17): T5's text formats (golden strings written from T5's preprocessor
code), the official metrics against hand-computed values, every task and split from TFDS
mock data, and the official T5 / prompt-tuning task names resolving to ptjax's tasks."""

import itertools
import math
import os
import re

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import ROOT, shared_fixture
from ptjax.data import catalog, metrics, pipeline, postprocessors

LENGTHS = {"inputs": 128, "targets": 16}
SENTINEL0 = 32099  # <extra_id_0> in T5's vocabulary (32100 pieces).


@pytest.fixture(scope="module")
def registered():
  import ptjax.data.tasks as tasks
  vocab = seqio.SentencePieceVocabulary(shared_fixture("t5_vocab/sentencepiece.model"), 100)
  tasks.register_all(vocab)
  return tasks


def through(task_name: str, example: dict, split: str = "validation") -> dict:
  """A hand-built TFDS-like example through every preprocessor of the registered task."""
  task = seqio.get_mixture_or_task(task_name)

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensors(example)

  probe = seqio.Task("glue_golden_probe",
                     source=seqio.FunctionDataSource(dataset_fn, splits=[split]),
                     preprocessors=task.preprocessors, output_features=task.output_features,
                     postprocess_fn=task.postprocess_fn, metric_fns=[])
  ds = probe.get_dataset(LENGTHS, split=split, shuffle=False, try_in_mem_cache=False)
  out = next(ds.as_numpy_iterator())
  return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in out.items()}


# --- 1. Golden T5-format strings --------------------------------------------------------
# Written from google-research/text-to-text-transfer-transformer, t5/data/preprocessors.py:
# `glue` joins "{benchmark_name} {key}: {value} ..." over the features sorted by name
# (without 'label' and 'idx'; t5/data/glue_utils.py get_glue_text_preprocessor passes
# feature_names=None and benchmark_name='mnli' for every MNLI config) and targets the label's
# name (TFDS glue's label_classes) or '<unk>' for label -1; `stsb` joins
# "stsb sentence1: {s1} sentence2: {s2}" and targets tf.as_string(tf.round(label * 5) / 5,
# precision=1). The QQP and STS-B texts are the examples of T5's own docstrings.
GOLDEN = [
    ("cola", {"sentence": "The more I read, the more I understood.", "label": 1},
     "cola sentence: The more I read, the more I understood.", "acceptable"),
    ("sst2", {"sentence": "it 's a charming journey .", "label": 1},
     "sst2 sentence: it 's a charming journey .", "positive"),
    ("mrpc", {"sentence1": "He said the food was cold.",
              "sentence2": "The food was cold, he said.", "label": 1},
     "mrpc sentence1: He said the food was cold. sentence2: The food was cold, he said.",
     "equivalent"),
    ("qqp", {"question1": "Why do I easily get bored of my friends?",
             "question2": "Why do I get bored of friends so quickly?", "label": 1},
     "qqp question1: Why do I easily get bored of my friends? question2: Why do I get bored "
     "of friends so quickly?", "duplicate"),
    ("stsb", {"sentence1": "Three more US soldiers killed in Afghanistan",
              "sentence2": "NATO Soldier Killed in Afghanistan", "label": 1.8},
     "stsb sentence1: Three more US soldiers killed in Afghanistan sentence2: NATO Soldier "
     "Killed in Afghanistan", "1.8"),
    ("mnli", {"premise": "A man is playing a guitar on stage.",
              "hypothesis": "A man is performing music.", "label": 1},
     "mnli hypothesis: A man is performing music. premise: A man is playing a guitar on "
     "stage.", "neutral"),
    ("mnli_matched", {"premise": "The cat sat.", "hypothesis": "No cat sat.", "label": 2},
     "mnli hypothesis: No cat sat. premise: The cat sat.", "contradiction"),
    ("mnli_mismatched", {"premise": "It rained.", "hypothesis": "It was wet.", "label": 0},
     "mnli hypothesis: It was wet. premise: It rained.", "entailment"),
    ("qnli", {"question": "Where did the cat sit?", "sentence": "The cat sat on the mat.",
              "label": 0},
     "qnli question: Where did the cat sit? sentence: The cat sat on the mat.", "entailment"),
    ("rte", {"sentence1": "Paris is the capital of France.",
             "sentence2": "France has no capital.", "label": 1},
     "rte sentence1: Paris is the capital of France. sentence2: France has no capital.",
     "not_entailment"),
    ("wnli", {"sentence1": "The trophy did not fit in the case because it was too big.",
              "sentence2": "The trophy was too big.", "label": 1},
     "wnli sentence1: The trophy did not fit in the case because it was too big. sentence2: "
     "The trophy was too big.", "entailment"),
]
# prompt-tuning's task indices (prompt_tuning/data/glue.py: utils.task_mapping over TFDS
# glue's configs, sorted, with ax and mnli_{matched,mismatched} as aliases of mnli).
OFFICIAL_INDEX = {name: i for i, name in enumerate(sorted(
    ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]))}
OFFICIAL_INDEX.update(mnli_matched=OFFICIAL_INDEX["mnli"], mnli_mismatched=OFFICIAL_INDEX["mnli"])


@pytest.mark.parametrize("name,example,inputs,targets", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_t5_format_and_every_variant(registered, name, example, inputs, targets):
  example = dict(example, idx=7)
  task = f"pt_glue_{name}_v002"
  split = "validation"
  t5 = through(task, example, split)
  assert (t5["inputs_pretokenized"], t5["targets_pretokenized"]) == (inputs, targets)
  assert t5["idx"] == 7 and t5["inputs"][-1] == t5["targets"][-1] == 1  # EOS.
  taskless = through(f"{task}_taskless", example, split)
  assert taskless["inputs_pretokenized"] == inputs.split(" ", 1)[1]  # T5's minus its task word.
  np.testing.assert_array_equal(taskless["targets"], t5["targets"])
  index = through(f"{task}_task_index", example, split)
  assert int(index["inputs"][0]) == SENTINEL0 - OFFICIAL_INDEX[name]
  np.testing.assert_array_equal(index["inputs"][1:], taskless["inputs"])
  sentinel = through(f"{task}_taskless_sentinel", example, split)
  assert sentinel["inputs"].tolist() == taskless["inputs"][:-1].tolist() + [SENTINEL0, 1]
  assert sentinel["targets"].tolist() == [SENTINEL0] + taskless["targets"].tolist()


def test_golden_unlabelled_examples_target_unk(registered):
  out = through("pt_glue_rte_v002", {"sentence1": "A.", "sentence2": "B.", "label": -1,
                                     "idx": 0}, "test")
  assert (out["inputs_pretokenized"], out["targets_pretokenized"]) == (
      "rte sentence1: A. sentence2: B.", "<unk>")


# t5/data/preprocessors_test.py test_stsb: 2.8 -> '2.8', 1.66 -> '1.6'. tf.round rounds
# halves to even: 2.5 * 5 = 12.5 -> 12 -> '2.4'.
@pytest.mark.parametrize("label,target", [(2.8, "2.8"), (1.66, "1.6"), (3.76, "3.8"),
                                          (2.5, "2.4"), (0.0, "0.0"), (5.0, "5.0"),
                                          (4.91, "5.0")])
def test_golden_stsb_rounds_to_the_nearest_fifth(registered, label, target):
  out = through("pt_glue_stsb_v002", {"sentence1": "Big news.", "sentence2": "No idea.",
                                      "label": label, "idx": 10})
  assert out["inputs_pretokenized"] == "stsb sentence1: Big news. sentence2: No idea."
  assert out["targets_pretokenized"] == target


def test_label_words_are_tfds_glue_label_names(registered):
  """The label words that rank classification and class-label prompts use."""
  from tensorflow_datasets.text import glue
  configs = glue.Glue.builder_configs
  for name in registered.GLUE_TASKS:
    expected = None if name == "stsb" else tuple(configs[name].label_classes)
    for suffix in catalog.VARIANTS:
      assert catalog.labels_of(f"pt_glue_{name}_v002{suffix}") == expected, (name, suffix)


# --- 2. Metrics against hand-computed values ---------------------------------------------

def score(task_name, targets, predictions):
  """The registered task's metrics (and illegal count) of predicted texts, as evaluation
  computes them."""
  from ptjax.train import evaluation
  task = seqio.get_mixture_or_task(task_name)
  examples = [{"targets_pretokenized": t.encode()} for t in targets]
  return evaluation.score_texts(task, examples, predictions)


def test_stsb_pearson_and_spearman_by_hand(registered):
  targets = ["1.0", "2.0", "3.0", "4.0", "5.0"]
  predictions = ["1.2", "1.8", "3.4", "3.4", "5.0"]
  # By hand. Targets: mean 3, deviations -2 -1 0 1 2, sum of squares 10. Predictions: mean
  # 14.8 / 5 = 2.96, deviations -1.76 -1.16 0.44 0.44 2.04, sum of squares 8.992; sum of
  # products 3.52 + 1.16 + 0 + 0.44 + 4.08 = 9.2.
  pearson = 9.2 / math.sqrt(10 * 8.992)
  # Ranks: targets 1..5; predictions 1 2 3.5 3.5 5 (the tie shares ranks 3 and 4): mean 3,
  # deviations -2 -1 .5 .5 2, sum of squares 9.5; sum of products 4 + 1 + 0 + .5 + 4 = 9.5.
  spearman = 9.5 / math.sqrt(10 * 9.5)
  got = score("pt_glue_stsb_v002", targets, predictions)
  assert got == pytest.approx({"pearson_corrcoef": 100 * pearson,
                               "spearman_corrcoef": 100 * spearman})
  assert "illegal_predictions" not in got  # Regression: no label words.
  t = np.array([1.0, 2, 3, 4, 5])
  p = np.array([1.2, 1.8, 3.4, 3.4, 5.0])
  numpy_r = np.sum((t - t.mean()) * (p - p.mean())) / (len(t) * t.std() * p.std())
  assert metrics.pearson(t, p)["pearson_corrcoef"] == pytest.approx(100 * numpy_r)
  assert metrics.spearman(t, p)["spearman_corrcoef"] == pytest.approx(100 * spearman)


def test_stsb_reads_predictions_as_t5s_string_to_float(registered):
  assert postprocessors.string_to_float(b"3.8") == 3.8
  assert postprocessors.string_to_float(" 4 ") == 4.0
  for bad in ("positive", "", "nan", "inf", "3.8.1"):
    assert postprocessors.string_to_float(bad) == -1.0, bad
  sentinel = seqio.get_mixture_or_task("pt_glue_stsb_v002_taskless_sentinel").postprocess_fn
  assert sentinel("<extra_id_0> 3.8", example={}, is_target=False) == 3.8
  # An unreadable prediction counts as -1.0, as in T5: far from every target.
  got = score("pt_glue_stsb_v002", ["1.0", "2.0", "3.0"], ["1.0", "2.0", "three"])
  t, p = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, -1.0])
  r = np.sum((t - 2) * (p - p.mean())) / math.sqrt(2 * np.sum((p - p.mean()) ** 2))
  assert got["pearson_corrcoef"] == pytest.approx(100 * r)


def test_correlations_of_a_constant_prediction_are_zero_not_nan():
  assert metrics.pearson([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == {"pearson_corrcoef": 0.0}
  assert metrics.spearman([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == {"spearman_corrcoef": 0.0}
  with pytest.raises(ValueError, match="3 targets but 2 predictions"):
    metrics.pearson([1.0, 2.0, 3.0], [1.0, 2.0])


def test_correlations_match_scipy_on_random_scores():
  from scipy import stats
  rng = np.random.default_rng(3)
  t = np.round(rng.uniform(0, 5, 300) * 5) / 5  # Many ties, as STS-B's fifths.
  p = np.round(rng.uniform(0, 5, 300) * 5) / 5
  assert metrics.pearson(t, p)["pearson_corrcoef"] == pytest.approx(
      100 * stats.pearsonr(t, p)[0])
  assert metrics.spearman(t, p)["spearman_corrcoef"] == pytest.approx(
      100 * stats.spearmanr(t, p)[0])


def test_cola_mcc_from_a_hand_confusion_matrix(registered):
  # tp 3, tn 4, fp 1, fn 2: MCC = (3*4 - 1*2) / sqrt((3+1) (3+2) (4+1) (4+2)) = 10 / sqrt(600).
  yes, no = "acceptable", "unacceptable"
  targets = [yes] * 3 + [no] * 4 + [no] + [yes] * 2
  predictions = [yes] * 3 + [no] * 4 + [yes] + [no] * 2
  got = score("pt_glue_cola_v002", targets, predictions)
  assert got["mcc"] == pytest.approx(100 * 10 / math.sqrt(600))
  assert got["accuracy"] == pytest.approx(70.0) and got["illegal_predictions"] == 0
  # An illegal prediction is wrong: a true positive becomes a false negative (tp 2, fn 3):
  # (2*4 - 1*3) / sqrt((2+1) (2+3) (4+1) (4+3)) = 5 / sqrt(525).
  got = score("pt_glue_cola_v002_taskless", targets, ["maybe"] + predictions[1:])
  assert got["mcc"] == pytest.approx(100 * 5 / math.sqrt(525))
  assert got["illegal_predictions"] == 1


@pytest.mark.parametrize("name,yes,no", [("mrpc", "equivalent", "not_equivalent"),
                                         ("qqp", "duplicate", "not_duplicate")])
def test_mrpc_and_qqp_f1_and_accuracy(registered, name, yes, no):
  # targets 1 1 1 0 0 1, predictions 1 0 1 1 0 1: tp 3, fp 1, fn 1 -> F1 = 6 / 8.
  targets = [yes, yes, yes, no, no, yes]
  predictions = [yes, no, yes, yes, no, yes]
  got = score(f"pt_glue_{name}_v002", targets, predictions)
  assert got == pytest.approx({"f1": 75.0, "accuracy": 100 * 4 / 6,
                               "illegal_predictions": 0.0})


@pytest.mark.parametrize("name", ["sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli",
                                  "rte", "wnli"])
def test_accuracy_tasks(registered, name):
  labels = catalog.labels_of(f"pt_glue_{name}_v002")
  targets = [labels[i % len(labels)] for i in range(6)]
  predictions = targets[:4] + [targets[5], "nonsense"]
  got = score(f"pt_glue_{name}_v002", targets, predictions)
  assert got == pytest.approx({"accuracy": 100 * 4 / 6, "illegal_predictions": 1.0})


# --- 3. Every task, variant and split from TFDS mock data -------------------------------

def test_every_glue_task_variant_and_split_yields_examples_from_mock_data(registered):
  names = sorted(n for n in seqio.TaskRegistry.names() if n.startswith("pt_glue_"))
  bases = [f"pt_glue_{n}_v002" for n in registered.GLUE_TASKS] + [
      "pt_glue_mrpc_from_qqp_v002", "pt_glue_qqp_from_mrpc_v002"]
  assert names == sorted(b + s for b in bases for s in catalog.VARIANTS)
  assert set(seqio.get_mixture_or_task("pt_glue_mnli_v002").splits) == {
      "train", "validation_matched", "validation_mismatched", "test_matched",
      "test_mismatched"}
  seen = set()
  with tfds.testing.mock_data(num_examples=2):
    for name in names:
      task = seqio.get_mixture_or_task(name)
      # Every split of T5's format (and MNLI's two dev sets in every format); the variants
      # only differ after the source.
      splits = task.splits if not name.endswith(catalog.VARIANTS[1:]) else [task.splits[0]] + [
          s for s in task.splits if s.startswith("validation_")]
      for split in splits:
        ds = task.get_dataset({"inputs": 64, "targets": 16}, split=split, shuffle=False,
                              try_in_mem_cache=False)
        examples = list(ds.as_numpy_iterator())
        assert len(examples) == 2, (name, split)
        for ex in examples:
          assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1, (name, split)
          target = ex["targets_pretokenized"].decode()
          if "stsb" in name:
            assert re.fullmatch(r"-?\d\.\d", target) and float(target) * 5 == round(
                float(target) * 5), (name, target)
          else:
            assert target in catalog.labels_of(name) or "_from_" in name, (name, target)
        seen.add((name, split))
  for suffix in catalog.VARIANTS:
    for split in ("validation_matched", "validation_mismatched"):
      assert (f"pt_glue_mnli_v002{suffix}", split) in seen


def test_mnli_and_dev_trains_on_mnli_and_evaluates_both_dev_sets(registered):
  for suffix in catalog.VARIANTS:
    mixture = pipeline.get_task(f"pt_glue_mnli_and_dev_v002{suffix}")
    members = {t.name for t in mixture.tasks}
    assert members == {f"pt_glue_mnli{kind}_v002{suffix}"
                       for kind in ("", "_matched", "_mismatched")}
    assert [t.name for t in mixture.tasks if "validation" in t.splits] == [
        f"pt_glue_mnli_matched_v002{suffix}", f"pt_glue_mnli_mismatched_v002{suffix}"]
  with tfds.testing.mock_data(num_examples=4):
    batch = next(pipeline.batches("pt_glue_mnli_and_dev_v002_taskless", LENGTHS, "train", 4,
                                  shuffle=False, repeat=False))
    assert batch["encoder_input_tokens"].shape == (4, LENGTHS["inputs"])


def test_show_tasks_lists_the_glue_tasks(registered, capsys):
  from ptjax.data import show_tasks
  assert show_tasks.main(["--list"]) == 0
  listed = capsys.readouterr().out
  assert "task     pt_glue_cola_v002_taskless  labels: unacceptable, acceptable\n" in listed
  assert "task     pt_glue_stsb_v002\n" in listed
  assert "mixture  pt_glue_mnli_and_dev_v002_taskless\n" in listed
  assert show_tasks.main(["taskless_glue_sst2_v200_examples", "--mock", "-n", "1"]) == 0
  shown = capsys.readouterr().out
  assert "[pt_glue_sst2_v002_taskless validation 0]" in shown
  assert "inputs:  sentence: " in shown


# --- 4. Official task names --------------------------------------------------------------

def test_the_readme_demo_name_resolves_as_the_trainer_reads_it(registered):
  """prompt-tuning's README / sst2-demo.sh: MIXTURE_OR_TASK_NAME='taskless_glue_sst2_v200_
  examples' (T5's glue preprocessor, then remove_first_text_token)."""
  official = "taskless_glue_sst2_v200_examples"
  assert official not in seqio.TaskRegistry.names()
  task = pipeline.get_task(official)
  assert task.name == "pt_glue_sst2_v002_taskless"
  assert catalog.labels_of(official) == ("negative", "positive")
  with tfds.testing.mock_data(num_examples=4):
    # The trainer's batches and the evaluator's examples, by the official name.
    by_official = next(pipeline.batches(official, LENGTHS, "train", 4, shuffle=False,
                                        repeat=False))
    by_ptjax = next(pipeline.batches(task.name, LENGTHS, "train", 4, shuffle=False,
                                     repeat=False))
    for key in by_ptjax:
      np.testing.assert_array_equal(by_official[key], by_ptjax[key])
    examples = pipeline.eval_examples(official, LENGTHS, "validation", 2)
  assert all(not ex["inputs_pretokenized"].startswith(b"sst2 ") for ex in examples)


def test_every_official_name_resolves_with_the_same_preprocessing(registered):
  names = registered.official_names()
  assert catalog.ALIASES == names
  checked = set()
  for official, name in names.items():
    assert pipeline.get_task(official).name == name, official
    # The format the official name's prefix stands for (the MNLI dev mixtures excepted:
    # every prefix's official mixture holds T5-format tasks).
    if "mnli_and_dev" in official:
      assert name == "pt_glue_mnli_and_dev_v002"
    elif official.startswith("taskless_"):
      assert name.endswith("_taskless")
    elif official.startswith("task_index_"):
      assert name.endswith("_task_index")
    else:
      assert not name.endswith(catalog.VARIANTS[1:])
    checked.add(name)
  # Every GLUE task in each of prompt-tuning's three formats, at both versions.
  for glue in registered.GLUE_TASKS:
    for version in ("v002", "v200"):
      assert names[f"glue_{glue}_{version}_examples"] == f"pt_glue_{glue}_v002"
      assert names[f"taskless_glue_{glue}_{version}_examples"] == \
          f"pt_glue_{glue}_v002_taskless"
      assert names[f"task_index_glue_{glue}_{version}"] == f"pt_glue_{glue}_v002_task_index"
  assert names["glue_mrpc_from_qqp_zeroshot_v002_examples"] == \
      "pt_glue_mrpc_from_qqp_zeroshot_v002"
  assert names["taskless_super_glue_rte_v102_examples"] == "pt_super_glue_rte_v102_taskless"
  # Task indices as prompt-tuning's: the first token of each task_index task.
  with tfds.testing.mock_data(num_examples=1):
    for glue in registered.GLUE_TASKS:
      ex = pipeline.eval_examples(f"task_index_glue_{glue}_v200_examples", LENGTHS,
                                  "train" if glue == "mnli" else "validation", 1)[0]
      assert int(ex["inputs"][0]) == SENTINEL0 - OFFICIAL_INDEX[glue], glue


def test_a_registered_official_name_wins_and_unknown_names_still_fail(registered):
  """A module that registers the official name (the docs' demo: MIXTURE_OR_TASK_MODULE with
  a TSV task of that name) gets its own task, not ptjax's."""
  official = "taskless_glue_sst2_v200_examples"

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensors({"inputs": "a", "targets": "b"})
  seqio.TaskRegistry.add(official, source=seqio.FunctionDataSource(dataset_fn, ["validation"]),
                         preprocessors=[], output_features={}, metric_fns=[])
  try:
    assert pipeline.get_task(official).name == official
    assert catalog.labels_of(official) is None  # The user's task has no label words.
  finally:
    seqio.TaskRegistry.remove(official)
  assert pipeline.get_task(official).name == "pt_glue_sst2_v002_taskless"
  with pytest.raises(ValueError, match="Unknown task 'taskless_glue_ax_v200_examples'"):
    pipeline.get_task("taskless_glue_ax_v200_examples")


def _expand(text: str) -> list[str]:
  """`{a,b}` -> a | b; `[x]` -> '' | x (the notation of the docs' table)."""
  match = re.search(r"\{([^{}]*,[^{}]*)\}|\[([^\[\]]*)\]", text)
  if not match:
    return [text]
  options = match.group(1).split(",") if match.group(1) is not None else ["", match.group(2)]
  return [out for option in options
          for out in _expand(text[:match.start()] + option + text[match.end():])]


def test_docs_table_is_the_alias_table(registered):
  doc = open(os.path.join(ROOT, "docs", "coming_from_t5x.md")).read()
  section = doc.split("\n## Official task names\n")[1].split("\n## ")[0]
  placeholders = {
      "glue": registered.GLUE_TASKS, "sg": registered.SUPER_GLUE_TASKS,
      "zs": ("mrpc_from_qqp", "qqp_from_mrpc", "mrpc_from_qqp_zeroshot",
             "qqp_from_mrpc_zeroshot"), "split": ("train", "eval")}
  prose = " ".join(section.split("\n| official name")[0].split())
  for key, values in placeholders.items():
    described = ", ".join(values) if key != "split" else "train or eval"
    assert f"`{{{key}}}` " in prose and described in prose, key
  table = {}
  for line in section.split("\n"):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if not line.startswith("| `") or len(cells) != 2:
      continue
    officials = re.findall(r"`([^`]+)`", cells[0])
    target = re.findall(r"`([^`]+)`", cells[1])[0]
    used = sorted({k for k in placeholders if f"{{{k}}}" in cells[0] + cells[1]})
    for values in itertools.product(*(placeholders[k] for k in used)):
      fill = dict(zip(used, values))

      def sub(text):
        for k, v in fill.items():
          text = text.replace(f"{{{k}}}", v)
        return text
      for official in officials:
        for name in _expand(sub(official)):
          assert name not in table, name
          table[name] = sub(target)
  assert table == registered.official_names()
