"""The paper's tasks as seqio tasks, registered on import (`import ptjax.data.tasks`).

Names start with `pt_` (no clash with the `t5` package). Each comes in three variants:
`<name>` (T5's format), `<name>_taskless` (the paper's default), `<name>_task_index`.

  SuperGLUE v1.0.2  pt_super_glue_{boolq,cb,copa,multirc,record,rte,wic}_v102,
                    pt_super_glue_wsc_v102_simple_{train,eval}, pt_super_glue_{axb,axg}_v102
                    (RTE's format), mixture pt_super_glue_v102
  GLUE              pt_glue_{qqp,mrpc}_v002, zero-shot pt_glue_{mrpc_from_qqp,qqp_from_mrpc}_v002
  QA                pt_squad_v110, pt_mrqa_{bio_asq,drop,duo_rc,race,relation_extraction,
                    textbook_qa}_v100, mixtures pt_squad_to_<name>, pt_squad_to_mrqa
  Pre-training      pt_c4_span_corruption, pt_c4_prefix_lm (objectives over any text source:
                    `register_pretraining`)

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


def _glue(vocab):
  labels = {"qqp": ("not_duplicate", "duplicate"), "mrpc": ("not_equivalent", "equivalent")}
  for name in ("qqp", "mrpc"):
    catalog.add_task_variants(
        f"pt_glue_{name}_v002", _tfds(f"glue/{name}:2.0.0"),
        [functools.partial(pre.glue, benchmark_name=name, label_names=labels[name])],
        vocab, postprocessors.classifier(labels[name]), [metrics.binary_f1, metrics.accuracy],
        GLUE_INDEX[name], labels[name])
  # Zero-shot transfer: evaluate on the target task, mapping the source's label words (the
  # task's labels are those words: rank classification scores them, the rest is illegal).
  translate = {("qqp", "mrpc"): lambda s: s.replace("duplicate", "equivalent"),
               ("mrpc", "qqp"): lambda s: s.replace("equivalent", "duplicate")}
  for (source, target), fn in translate.items():
    names = catalog.add_task_variants(
        f"pt_glue_{target}_from_{source}_v002",
        _tfds(f"glue/{target}:2.0.0", ["validation"]),
        [functools.partial(pre.glue, benchmark_name=target, label_names=labels[target])],
        vocab, postprocessors.classifier(labels[target], translate=fn),
        [metrics.binary_f1, metrics.accuracy], GLUE_INDEX[target], labels[source])
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


# Not checked at import (a wrong $PTJAX_T5_VOCAB must not break `import ptjax`): a task
# whose vocabulary file is missing fails in pipeline.get_task, naming the switch.
register_all(vocabularies.SentencePieceVocabulary(
    os.environ.get(vocabularies.ENV) or vocabularies.T5_VOCAB_PATH, extra_ids=100))
