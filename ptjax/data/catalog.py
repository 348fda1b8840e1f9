"""Registering a task in the three formats the paper uses, and what evaluation needs to
know about it (its label words, for rank classification and illegal-prediction counts)."""

import functools
from typing import Callable, Optional, Sequence

import seqio

from ptjax.data import preprocessors
from ptjax.data.vocabularies import output_features

# "" = T5's format (leading task word); "_taskless" = the paper's prompt-tuning default;
# "_task_index" = taskless with <extra_id_k> first, for multi-task prompts;
# "_taskless_sentinel" = taskless with the "span corruption + sentinel" ablation (inputs end
# and targets start with <extra_id_0>, as span-corruption targets do).
VARIANTS = ("", "_taskless", "_task_index", "_taskless_sentinel")

# Task name -> its label words (classification tasks only).
LABELS: dict[str, tuple[str, ...]] = {}

# Official name (T5's or google-research/prompt-tuning's) -> ptjax's task or mixture with the
# same preprocessing. Consulted only for names no module registered (`pipeline.get_task`):
# importing prompt_tuning.data.glue or t5.data.tasks registers theirs, which then win.
ALIASES: dict[str, str] = {}


def add_task_variants(name: str, source: seqio.DataSource, text_preprocessors: Sequence,
                      vocabulary: seqio.Vocabulary, postprocess_fn: Callable,
                      metric_fns: Sequence[Callable], task_index: int,
                      labels: Optional[Sequence[str]] = None,
                      variants: Sequence[str] = VARIANTS,
                      has_task_word: bool = True) -> list[str]:
  """Registers `name` + each variant suffix; returns the names. Formats without a leading
  task word (SQuAD's 'question: ...') are the same in T5's and the taskless variant."""
  names = []
  for suffix in variants:
    steps = list(text_preprocessors)
    if suffix and has_task_word:
      steps.append(preprocessors.remove_first_word)
    steps.append(seqio.preprocessors.tokenize)
    if suffix == "_task_index":
      steps.append(functools.partial(preprocessors.add_task_index, index=task_index))
    if suffix == "_taskless_sentinel":
      steps.append(preprocessors.add_sentinel)
    steps.append(seqio.preprocessors.append_eos_after_trim)
    task = name + suffix
    seqio.TaskRegistry.remove(task)
    post = postprocess_fn
    if suffix == "_taskless_sentinel":
      post = functools.partial(_strip_sentinel, postprocess_fn=postprocess_fn)
    seqio.TaskRegistry.add(task, source=source, preprocessors=steps,
                           output_features=output_features(vocabulary),
                           postprocess_fn=post, metric_fns=list(metric_fns))
    if labels is not None:
      LABELS[task] = tuple(labels)
    names.append(task)
  return names


def _strip_sentinel(output, example=None, is_target=False, *, postprocess_fn):
  """Drops the leading '<extra_id_0>' of a sentinel-variant prediction."""
  text = output.decode("utf-8") if isinstance(output, bytes) else str(output)
  if not is_target and text.startswith("<extra_id_0>"):
    text = text[len("<extra_id_0>"):].strip()
  return postprocess_fn(text, example=example, is_target=is_target)


def add_mixture(name: str, tasks: Sequence[str]) -> str:
  seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, [(t, 1.0) for t in tasks])
  return name


def add_alias(official: str, name: str) -> None:
  """`official` resolves to ptjax's registered task or mixture `name`."""
  if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
    raise ValueError(f"alias {official!r}: {name!r} is not a registered task or mixture.")
  ALIASES[official] = name


def resolve(name: str) -> str:
  """ptjax's name for an official alias that no module registered; any other name
  unchanged (a registered task or mixture of that name wins)."""
  if name in ALIASES and name not in seqio.TaskRegistry.names() and \
      name not in seqio.MixtureRegistry.names():
    return ALIASES[name]
  return name


def labels_of(task_name: str) -> Optional[tuple[str, ...]]:
  return LABELS.get(task_name) or LABELS.get(resolve(task_name))


def legal_predictions(task, example=None) -> Optional[list]:
  """What a legal prediction of `task` postprocesses to: its label words as its own
  postprocessor reads a prediction of them (for `example`). A prediction is legal when its
  postprocessed form is one of these, whatever its raw text (a sentinel variant's
  '<extra_id_0> entailment'; a zero-shot task's source or target label words). None for a
  task without label words."""
  labels = labels_of(task.name)
  if labels is None:
    return None
  post = task.postprocess_fn or (lambda output, **_: output)
  return [post(label, example=example, is_target=False) for label in labels]
