"""Official metric definitions with seqio's signature `(targets, predictions) -> {name: value}`,
all in percent.

Classification metrics take class ids; a prediction that is not a legal label arrives
as -1 (see `postprocessors.label_to_id`) and always counts as wrong.
"""

import collections
import re
import string
from typing import Mapping, Sequence

import numpy as np

INVALID = -1


def lower_is_better(metric: str) -> bool:
  """Losses and illegal-prediction counts improve downwards; every other metric upwards."""
  return metric.endswith("loss") or metric == "illegal_predictions"


def accuracy(targets: Sequence, predictions: Sequence) -> dict[str, float]:
  """Exact match of labels (ids or strings), in percent."""
  if len(targets) != len(predictions):
    raise ValueError(f"accuracy: {len(targets)} targets but {len(predictions)} predictions.")
  hits = sum(t == p for t, p in zip(targets, predictions))
  return {"accuracy": 100.0 * hits / max(len(targets), 1)}


def _wrong_for_invalid(targets, predictions):
  """An illegal prediction (-1) becomes the opposite of a binary target: always wrong."""
  t, p = np.asarray(targets), np.asarray(predictions)
  return t, np.where(p == INVALID, 1 - t, p)


def _f1(tp: float, fp: float, fn: float) -> float:
  return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def binary_f1(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """F1 of the positive class (1)."""
  t, p = _wrong_for_invalid(targets, predictions)
  tp, fp, fn = np.sum((p == 1) & (t == 1)), np.sum((p == 1) & (t != 1)), np.sum((p != 1) & (t == 1))
  return {"f1": 100.0 * _f1(tp, fp, fn)}


def macro_f1(num_classes: int):
  """Mean over classes of one-vs-rest F1 (CB's metric, 3 classes)."""
  def metric(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    t, p = np.asarray(targets), np.asarray(predictions)
    scores = [_f1(np.sum((p == c) & (t == c)), np.sum((p == c) & (t != c)),
                  np.sum((p != c) & (t == c))) for c in range(num_classes)]
    return {"macro_f1": 100.0 * float(np.mean(scores))}
  return metric


def mcc(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Matthews correlation of binary labels (AX-b), x100."""
  t, p = _wrong_for_invalid(targets, predictions)
  tp, tn = np.sum((p == 1) & (t == 1)), np.sum((p == 0) & (t == 0))
  fp, fn = np.sum((p == 1) & (t == 0)), np.sum((p == 0) & (t == 1))
  denom = np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
  return {"mcc": 0.0 if denom == 0 else 100.0 * float(tp * tn - fp * fn) / denom}


# --- Regression (STS-B) --------------------------------------------------------------

def _correlation(x, y) -> float:
  """Pearson's r of two equal-length sequences; 0 when either is constant (no linear
  relation; scipy would return NaN, and an evaluation result is never NaN)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape:
    raise ValueError(f"correlation: {x.size} targets but {y.size} predictions.")
  dx, dy = x - x.mean(), y - y.mean()
  denom = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
  return 0.0 if denom == 0 else float(np.clip(np.sum(dx * dy) / denom, -1.0, 1.0))


def _average_ranks(x) -> np.ndarray:
  """1-based ranks; tied values share the mean of their ranks (scipy's 'average')."""
  _, inverse, counts = np.unique(np.asarray(x, np.float64), return_inverse=True,
                                 return_counts=True)
  first = np.cumsum(counts) - counts  # 0-based position of each distinct value's first copy.
  return (first + (counts + 1) / 2.0)[inverse.reshape(-1)]


def pearson(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
  """Pearson correlation x100 (STS-B; T5's `pearson_corrcoef`). An unreadable prediction
  arrives as -1.0 (`postprocessors.string_to_float`) and counts as that score."""
  return {"pearson_corrcoef": 100.0 * _correlation(targets, predictions)}


def spearman(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
  """Spearman rank correlation x100 (STS-B; T5's `spearman_corrcoef`): Pearson's r of the
  average ranks."""
  return {"spearman_corrcoef": 100.0 * _correlation(_average_ranks(targets),
                                                    _average_ranks(predictions))}


# --- Extractive QA (SQuAD, ReCoRD, MRQA) ---------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
  """SQuAD's normalisation: lowercase, drop punctuation and articles, squeeze spaces."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in set(string.punctuation))
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def _token_f1(target: str, prediction: str) -> float:
  t, p = normalize_answer(target).split(), normalize_answer(prediction).split()
  common = sum((collections.Counter(t) & collections.Counter(p)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(p), common / len(t)
  return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """EM and token F1, each the max over an example's reference answers, in percent."""
  em = [max(normalize_answer(a) == normalize_answer(p) for a in answers)
        for answers, p in zip(targets, predictions)]
  f1 = [max(_token_f1(a, p) for a in answers) for answers, p in zip(targets, predictions)]
  return {"em": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}


def record(targets: Sequence[Mapping], predictions: Sequence[Mapping]) -> dict[str, float]:
  """ReCoRD: SQuAD EM/F1 (max over answers) on the first example of each (passage,
  query) group; training repeats a query once per answer."""
  seen, kept_t, kept_p = set(), [], []
  for target, prediction in zip(targets, predictions):
    if target["group"] not in seen:
      seen.add(target["group"])
      kept_t.append(target["value"])
      kept_p.append(prediction["value"])
  return squad(kept_t, kept_p)


# --- SuperGLUE specials --------------------------------------------------------------

def multirc(targets: Sequence[Mapping], predictions: Sequence[Mapping]) -> dict[str, float]:
  """MultiRC: F1a = binary F1 over all answer options; EM = share of questions whose
  every answer option is right. Items are {'group': question id, 'value': 0/1/-1}."""
  t = [x["value"] for x in targets]
  p = [x["value"] for x in predictions]
  by_question = collections.defaultdict(list)
  for target, prediction in zip(targets, predictions):
    by_question[target["group"]].append(target["value"] == prediction["value"])
  em = float(np.mean([all(v) for v in by_question.values()]))
  return {"f1a": binary_f1(t, p)["f1"], "em": 100.0 * em}


def gender_parity(targets: Sequence[Mapping], predictions: Sequence) -> dict[str, float]:
  """AX-g: share of male/female example pairs (same 'group') predicted identically."""
  groups = collections.defaultdict(list)
  for target, prediction in zip(targets, predictions):
    groups[target["group"]].append(
        prediction["value"] if isinstance(prediction, Mapping) else prediction)
  return {"gender_parity": 100.0 * float(np.mean([len(set(v)) == 1 for v in groups.values()]))}


def superglue_score(task_metrics: Mapping[str, Mapping[str, float]]) -> float:
  """Mean over tasks of each task's mean metric (SuperGLUE's leaderboard average)."""
  return float(np.mean([np.mean(list(m.values())) for m in task_metrics.values()]))


def count_illegal(predictions: Sequence, legal: Sequence) -> int:
  """Predictions that are not one of the `legal` values (the span-corruption failure mode).

  Compare like with like: evaluation passes postprocessed predictions and the task's label
  words postprocessed the same way (`catalog.legal_predictions`), so a sentinel variant's
  '<extra_id_0> entailment' is legal. Values of any type (ids, strings, dicts) compare with
  ==."""
  legal = list(legal)
  return sum(not any(p == value for value in legal) for p in predictions)
