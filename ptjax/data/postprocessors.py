"""seqio postprocessors `(output, example=None, is_target=False)`: decoded text -> what the
metrics compare. Illegal predictions become -1 (always wrong, and counted)."""

import functools
import math
from typing import Callable, Optional, Sequence

INVALID = -1
_DETERMINERS = {"a", "an", "few", "her", "his", "each", "every", "many", "much", "my", "our",
                "some", "that", "the", "their", "these", "this", "those", "which", "whose",
                "your"}


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def label_to_id(output, example=None, is_target=False, *, labels: Sequence[str],
                translate: Optional[Callable[[str], str]] = None) -> int:
  """'entailment' -> its index in `labels`; anything else -> -1. `translate` maps another
  task's label words first (zero-shot transfer, e.g. QQP's 'duplicate' -> 'equivalent')."""
  del example
  text = _text(output).strip()
  if translate is not None and not is_target:
    text = translate(text)
  return labels.index(text) if text in labels else INVALID


def classifier(labels: Sequence[str], translate: Optional[Callable[[str], str]] = None):
  return functools.partial(label_to_id, labels=tuple(labels), translate=translate)


def string_to_float(output, example=None, is_target=False) -> float:
  """Regression (STS-B): '3.8' -> 3.8; text that is no finite number -> -1.0, as T5's
  `string_to_float` (an illegal prediction is a score far from every target)."""
  del example, is_target
  try:
    value = float(_text(output).strip())
  except ValueError:
    return float(INVALID)
  return value if math.isfinite(value) else float(INVALID)


def multirc(output, example=None, is_target=False):
  """{'value': 0/1/-1} (+ 'group': the question id for targets)."""
  value = label_to_id(output, labels=("False", "True"))
  return {"value": value, "group": int(example["idx/question"])} if is_target else {
      "value": value}


def axg(output, example=None, is_target=False):
  """AX-g: examples 2i and 2i+1 form a male/female minimal pair."""
  value = label_to_id(output, labels=("entailment", "not_entailment"))
  return {"value": value, "group": int(example["idx"]) // 2} if is_target else {"value": value}


def answers(output, example=None, is_target=False):
  """QA: targets -> every reference answer; predictions unchanged."""
  if is_target:
    return [a for a in _text(example["answers"]).split("|||") if a] or [_text(output)]
  return _text(output)


def record(output, example=None, is_target=False):
  """ReCoRD: like `answers`, with the (passage, query) group for de-duplication."""
  if is_target:
    return {"value": answers(output, example, True),
            "group": (int(example["idx/passage"]), int(example["idx/query"]))}
  return {"value": _text(output)}


def _clean(text: str) -> set:
  return {w for w in text.strip().lower().split(" ") if w and w not in _DETERMINERS}


def wsc(output, example=None, is_target=False):
  """WSC: 1 if the generated referent matches the candidate (word-set inclusion after
  dropping determiners, possessives must agree), else 0; empty -> -1. Targets: label."""
  if is_target:
    return int(example["label"])
  prediction, referent = _clean(_text(output)), _clean(_text(example["targets_pretokenized"]))
  if not prediction:
    return INVALID
  if ("'" in _text(output)) != ("'" in _text(example["targets_pretokenized"])):
    return 0
  return int(prediction <= referent or referent <= prediction)
