"""The paper's tasks as seqio tasks, registered on import (`import ptjax.data.tasks`).

Names start with `pt_` (no clash with the `t5` package). Each comes in four variants:
`<name>` (T5's format), `<name>_taskless` (the paper's default), `<name>_task_index`,
`<name>_taskless_sentinel`.

  SuperGLUE v1.0.2  pt_super_glue_{boolq,cb,copa,multirc,record,rte,wic}_v102,
                    pt_super_glue_wsc_v102_simple_{train,eval}, pt_super_glue_{axb,axg}_v102
                    (RTE's format), mixture pt_super_glue_v102
  GLUE              pt_glue_{cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte,wnli}_v002 (TFDS glue 2.0.0,
                    T5's formats and metrics; STS-B as T5's regression),
                    pt_glue_mnli_{matched,mismatched}_v002 (MNLI's dev sets as 'validation'),
                    mixture pt_glue_mnli_and_dev_v002, zero-shot
                    pt_glue_{mrpc_from_qqp,qqp_from_mrpc}_v002
  QA                pt_squad_v110, pt_mrqa_{bio_asq,drop,duo_rc,race,relation_extraction,
                    textbook_qa}_v100, mixtures pt_squad_to_<name>, pt_squad_to_mrqa
  Pre-training      pt_c4_span_corruption, pt_c4_prefix_lm (objectives over any text source:
                    `register_pretraining`)

Official names (T5's, google-research/prompt-tuning's: `taskless_glue_sst2_v200_examples`)
resolve to these through `pipeline.get_task` when no module registered them (`official_names`).

The vocabulary is T5's SentencePiece model; `register_all(vocabulary)` re-registers
everything with another one (e.g. a local copy of the T5 vocab).
"""

import functools
import os

import seqio

from ptjax.data import catalog, metrics, objectives, postprocessors
from ptjax.data import preprocessors as pre
from ptjax.data import vocabularies

SUPER_GLUE = "super_glue/{}:1.0.2"
SPLITS = ("train", "validation", "test")


def _tfds(name: str, splits=SPLITS) -> seqio.TfdsDataSource:
  """Splits are named explicitly: without downloaded data TFDS cannot list them."""
  return seqio.TfdsDataSource(name, splits=splits)
# prompt-tuning's task indices (sorted names; aliases share their target's index).
SUPER_GLUE_INDEX = {"boolq": 0, "cb": 1, "copa": 2, "multirc": 3, "record": 4, "rte": 5,
                    "axb": 5, "axg": 5, "wic": 6, "wsc": 7}
GLUE_INDEX = {"cola": 0, "mnli": 1, "mrpc": 2, "qnli": 3, "qqp": 4, "rte": 5, "sst2": 6,
              "stsb": 7, "wnli": 8}
MRQA_SETS = ("bio_asq", "drop", "duo_rc", "race", "relation_extraction", "textbook_qa")


def _value_accuracy(targets, predictions):
  return metrics.accuracy([t["value"] for t in targets], [p["value"] for p in predictions])


def _by_variant(groups: dict, names: list) -> list:
  """Files each registered name under its variant suffix (names come in VARIANTS order)."""
  for suffix, name in zip(catalog.VARIANTS, names):
    groups.setdefault(suffix, []).append(name)
  return names


def _superglue(vocab):
  groups = {}
  classify = {  # name: (labels, feature_names, metric_fns)
      "boolq": (("False", "True"), None, [metrics.accuracy]),
      "cb": (("entailment", "contradiction", "neutral"), None,
             [metrics.macro_f1(3), metrics.accuracy]),
      "copa": (("choice1", "choice2"), None, [metrics.accuracy]),
      "rte": (("entailment", "not_entailment"), None, [metrics.accuracy]),
      "wic": (("False", "True"), ("sentence1", "sentence2", "word"), [metrics.accuracy]),
  }
  for name, (labels, features, metric_fns) in classify.items():
    _by_variant(groups, catalog.add_task_variants(
        f"pt_super_glue_{name}_v102", _tfds(SUPER_GLUE.format(name)),
        [functools.partial(pre.glue, benchmark_name=name, label_names=labels,
                           feature_names=features)],
        vocab, postprocessors.classifier(labels), metric_fns, SUPER_GLUE_INDEX[name], labels))
  _by_variant(groups, catalog.add_task_variants(
      "pt_super_glue_multirc_v102", _tfds(SUPER_GLUE.format("multirc")),
      [functools.partial(pre.glue, benchmark_name="multirc", label_names=("False", "True"),
                         feature_names=("question", "answer", "paragraph"))],
      vocab, postprocessors.multirc, [metrics.multirc], SUPER_GLUE_INDEX["multirc"],
      ("False", "True")))
  _by_variant(groups, catalog.add_task_variants(
      "pt_super_glue_record_v102", _tfds(SUPER_GLUE.format("record")),
      [pre.record], vocab, postprocessors.record, [metrics.record], SUPER_GLUE_INDEX["record"]))
  wsc_source = _tfds(SUPER_GLUE.format("wsc.fixed"))
  _by_variant(groups, catalog.add_task_variants(
      "pt_super_glue_wsc_v102_simple_train", wsc_source,
      [functools.partial(pre.wsc_simple, correct_referent_only=True)], vocab,
      postprocessors.wsc, [metrics.accuracy], SUPER_GLUE_INDEX["wsc"]))
  _by_variant(groups, catalog.add_task_variants(
      "pt_super_glue_wsc_v102_simple_eval", wsc_source, [pre.wsc_simple], vocab,
      postprocessors.wsc, [metrics.accuracy], SUPER_GLUE_INDEX["wsc"]))
  rte_labels = ("entailment", "not_entailment")
  catalog.add_task_variants(  # Cast as RTE: evaluate with the RTE prompt.
      "pt_super_glue_axb_v102", _tfds(SUPER_GLUE.format("axb"), ["test"]),
      [functools.partial(pre.rekey, key_map={"premise": "sentence1", "hypothesis": "sentence2",
                                             "label": "label", "idx": "idx"}),
       functools.partial(pre.glue, benchmark_name="rte", label_names=rte_labels)],
      vocab, postprocessors.classifier(rte_labels), [metrics.mcc, metrics.accuracy],
      SUPER_GLUE_INDEX["axb"], rte_labels)
  catalog.add_task_variants(
      "pt_super_glue_axg_v102", _tfds(SUPER_GLUE.format("axg"), ["test"]),
      [functools.partial(pre.glue, benchmark_name="rte", label_names=rte_labels)],
      vocab, postprocessors.axg, [metrics.gender_parity, _value_accuracy],
      SUPER_GLUE_INDEX["axg"], rte_labels)
  for suffix, members in groups.items():
    catalog.add_mixture(f"pt_super_glue_v102{suffix}", members)


# TFDS glue's label names (features["label"].names), class id order.
GLUE_LABELS = {"cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
               "mrpc": ("not_equivalent", "equivalent"), "qqp": ("not_duplicate", "duplicate"),
               "mnli": ("entailment", "neutral", "contradiction"),
               "qnli": ("entailment", "not_entailment"), "rte": ("entailment", "not_entailment"),
               "wnli": ("not_entailment", "entailment")}
# GLUE's official metrics (T5's glue_utils.GLUE_METRICS); CoLA also reports accuracy, as
# AX-b does, next to its official MCC.
GLUE_METRICS = {"cola": [metrics.mcc, metrics.accuracy], "sst2": [metrics.accuracy],
                "mrpc": [metrics.binary_f1, metrics.accuracy],
                "qqp": [metrics.binary_f1, metrics.accuracy], "mnli": [metrics.accuracy],
                "qnli": [metrics.accuracy], "rte": [metrics.accuracy],
                "wnli": [metrics.accuracy]}
MNLI_SPLITS = ("train", "validation_matched", "validation_mismatched", "test_matched",
               "test_mismatched")


def _glue(vocab):
  def classification(task, tfds_name, splits, benchmark):
    labels = GLUE_LABELS[benchmark]
    return catalog.add_task_variants(
        task, _tfds(f"glue/{tfds_name}:2.0.0", splits),
        [functools.partial(pre.glue, benchmark_name=benchmark, label_names=labels)],
        vocab, postprocessors.classifier(labels), GLUE_METRICS[benchmark],
        GLUE_INDEX[benchmark], labels)

  for name in ("cola", "sst2", "mrpc", "qqp", "qnli", "rte", "wnli"):
    classification(f"pt_glue_{name}_v002", name, SPLITS, name)
  # STS-B is regression: targets are scores as text ('3.8'), read back as floats.
  catalog.add_task_variants(
      "pt_glue_stsb_v002", _tfds("glue/stsb:2.0.0"), [pre.stsb], vocab,
      postprocessors.string_to_float, [metrics.pearson, metrics.spearman], GLUE_INDEX["stsb"])
  # MNLI: the task has MNLI's own splits (train, validation_matched, ...); its two dev sets
  # also as tasks with a 'validation' split (T5's glue_mnli_{matched,mismatched}_v002, read
  # from the same TFDS config), evaluated together by the mixture pt_glue_mnli_and_dev_v002
  # (prompt-tuning's glue_mnli_and_dev: train on MNLI, evaluate on both dev sets).
  mnli = classification("pt_glue_mnli_v002", "mnli", MNLI_SPLITS, "mnli")
  dev = {kind: classification(f"pt_glue_mnli_{kind}_v002", "mnli",
                              {"validation": f"validation_{kind}", "test": f"test_{kind}"},
                              "mnli") for kind in ("mismatched", "matched")}
  for suffix, *members in zip(catalog.VARIANTS, mnli, dev["mismatched"], dev["matched"]):
    catalog.add_mixture(f"pt_glue_mnli_and_dev_v002{suffix}", members)
  # Zero-shot transfer: evaluate on the target task, mapping the source's label words (the
  # task's labels are those words: rank classification scores them, the rest is illegal).
  translate = {("qqp", "mrpc"): lambda s: s.replace("duplicate", "equivalent"),
               ("mrpc", "qqp"): lambda s: s.replace("equivalent", "duplicate")}
  for (source, target), fn in translate.items():
    names = catalog.add_task_variants(
        f"pt_glue_{target}_from_{source}_v002",
        _tfds(f"glue/{target}:2.0.0", ["validation"]),
        [functools.partial(pre.glue, benchmark_name=target, label_names=GLUE_LABELS[target])],
        vocab, postprocessors.classifier(GLUE_LABELS[target], translate=fn),
        GLUE_METRICS[target], GLUE_INDEX[target], GLUE_LABELS[source])
    for suffix, name in zip(catalog.VARIANTS, names):
      catalog.add_mixture(f"pt_glue_{target}_from_{source}_zeroshot_v002{suffix}",
                          [f"pt_glue_{source}_v002{suffix}", name])


def _qa(vocab):
  squad = catalog.add_task_variants(
      "pt_squad_v110", _tfds("squad/v1.1:3.0.0", ["train", "validation"]), [pre.squad], vocab,
      postprocessors.answers, [metrics.squad], task_index=0, has_task_word=False)
  every = {suffix: [] for suffix in catalog.VARIANTS}
  for i, name in enumerate(MRQA_SETS):
    names = catalog.add_task_variants(
        f"pt_mrqa_{name}_v100",
        _tfds(f"mrqa/{name}:1.0.0", {"validation": "test"}),
        [pre.mrqa], vocab, postprocessors.answers, [metrics.squad], task_index=0,
        has_task_word=False)
    for suffix, task, squad_task in zip(catalog.VARIANTS, names, squad):
      catalog.add_mixture(f"pt_squad_to_{name}{suffix}", [squad_task, task])
      every[suffix].append(task)
  for suffix, squad_task in zip(catalog.VARIANTS, squad):
    catalog.add_mixture(f"pt_squad_to_mrqa{suffix}", [squad_task, *every[suffix]])


# Official names -> ptjax's task or mixture with the same preprocessing: google-research/
# prompt-tuning's (prompt_tuning/data/{glue,glue_transfer,super_glue}.py, T5's vocabulary:
# no mt5_/byt5_ prefix) and T5's own (t5/data/tasks.py). '_examples' only adds TensorBoard
# text summaries there; v002 reads TFDS glue 1.0.0 and v200 2.0.0, which differ only in QQP's
# source (ptjax reads 2.0.0). docs/coming_from_t5x.md ("Official task names") shows them.
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli_mismatched", "mnli_matched",
              "qnli", "rte", "wnli")
SUPER_GLUE_TASKS = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "axb", "axg")
OFFICIAL_PREFIXES = {"": "", "taskless_": "_taskless", "task_index_": "_task_index"}


def official_names() -> dict[str, str]:
  """{official name: ptjax name}."""
  out = {}
  for prefix, suffix in OFFICIAL_PREFIXES.items():
    for examples in ("", "_examples"):
      for name in GLUE_TASKS:
        for version in ("v002", "v200"):
          if prefix or examples or version == "v002":  # No glue_{name}_v200 anywhere.
            out[f"{prefix}glue_{name}_{version}{examples}"] = f"pt_glue_{name}_v002{suffix}"
      for target, source in (("mrpc", "qqp"), ("qqp", "mrpc")):
        for kind in ("", "_zeroshot"):
          out[f"{prefix}glue_{target}_from_{source}{kind}_v002{examples}"] = \
              f"pt_glue_{target}_from_{source}{kind}_v002{suffix}"
      for name in SUPER_GLUE_TASKS:
        out[f"{prefix}super_glue_{name}_v102{examples}"] = f"pt_super_glue_{name}_v102{suffix}"
      for split in ("train", "eval"):
        if prefix or examples == "" or split == "eval":  # No ..._simple_train_examples.
          out[f"{prefix}super_glue_wsc_v102_simple_{split}{examples}"] = \
              f"pt_super_glue_wsc_v102_simple_{split}{suffix}"
    for version in ("v002", "v200"):
      # Every prefix's mixture holds the T5-format tasks there (its members' names lack the
      # prefix), so all three are T5's format.
      out[f"{prefix}glue_mnli_and_dev_{version}_examples"] = "pt_glue_mnli_and_dev_v002"
  return out


def register_pretraining(name: str, source: seqio.DataSource, vocab: seqio.Vocabulary,
                         text_key: str = "text") -> list[str]:
  """`{name}_span_corruption` (T5: density 0.15, mean span 3) and `{name}_prefix_lm` (LM
  adaptation) over a text source."""
  features = vocabularies.output_features(vocab)
  common = [functools.partial(pre.rekey, key_map={"targets": text_key}),
            seqio.preprocessors.tokenize]
  out = []
  for objective, fn in (("span_corruption", objectives.span_corruption),
                        ("prefix_lm", objectives.prefix_lm)):
    task = f"{name}_{objective}"
    seqio.TaskRegistry.remove(task)
    seqio.TaskRegistry.add(task, source=source,
                           preprocessors=[*common, fn, seqio.preprocessors.append_eos_after_trim],
                           output_features=features, metric_fns=[])
    out.append(task)
  return out


def register_all(vocabulary: seqio.Vocabulary) -> None:
  """(Re-)registers every task and mixture with `vocabulary`."""
  _superglue(vocabulary)
  _glue(vocabulary)
  _qa(vocabulary)
  register_pretraining("pt_c4", _tfds("c4/en:3.1.0", ["train", "validation"]), vocabulary)
  for official, name in official_names().items():
    catalog.add_alias(official, name)


# Not checked at import (a wrong $PTJAX_T5_VOCAB must not break `import ptjax`): a task
# whose vocabulary file is missing fails in pipeline.get_task, naming the switch.
register_all(vocabularies.SentencePieceVocabulary(
    os.environ.get(vocabularies.ENV) or vocabularies.T5_VOCAB_PATH, extra_ids=100))
