"""Metrics against hand-computed values and scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as sk

from ptjax.data import metrics


def test_accuracy():
  assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, -1]) == {"accuracy": 50.0}
  with pytest.raises(ValueError, match="3 targets but 2 predictions"):
    metrics.accuracy([1, 0, 1], [1, 0])


def test_binary_f1_matches_sklearn_and_invalid_is_wrong():
  rng = np.random.default_rng(0)
  t, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
  assert metrics.binary_f1(t, p)["f1"] == pytest.approx(100 * sk.f1_score(t, p))
  # Hand case: targets 1 1 0 0, predictions 1 -1 1 0 -> the -1 becomes 0 (wrong): tp1 fp1 fn1.
  assert metrics.binary_f1([1, 1, 0, 0], [1, -1, 1, 0])["f1"] == pytest.approx(50.0)
  # An invalid prediction on a negative target becomes a false positive.
  assert metrics.binary_f1([1, 0], [1, -1])["f1"] == pytest.approx(100 * 2 / 3)


def test_macro_f1_matches_sklearn():
  rng = np.random.default_rng(1)
  t, p = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
  got = metrics.macro_f1(3)(t, p)["macro_f1"]
  assert got == pytest.approx(100 * sk.f1_score(t, p, average="macro"))
  # Invalid predictions (-1) are wrong for every class.
  assert metrics.macro_f1(3)([0, 1, 2], [0, -1, 2])["macro_f1"] == pytest.approx(
      100 * (1 + 0 + 1) / 3)


def test_mcc_matches_sklearn():
  rng = np.random.default_rng(2)
  t, p = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
  assert metrics.mcc(t, p)["mcc"] == pytest.approx(100 * sk.matthews_corrcoef(t, p))
  assert metrics.mcc([1, 1, 0, 0], [1, 1, 0, 0])["mcc"] == pytest.approx(100.0)
  assert metrics.mcc([1, 0], [1, 1])["mcc"] == 0.0  # Degenerate: defined as 0.


@pytest.mark.parametrize("text,want", [
    ("The Cat", "cat"), ("an apple, a pear.", "apple pear"), ("  Mr.  Smith  ", "mr smith"),
    ("theatre", "theatre"), ("Café «crème»", "café «crème»"), ("A-1!", "a1"),
    ("the\tend\n", "end"),
])
def test_squad_normalisation(text, want):
  assert metrics.normalize_answer(text) == want


def test_squad_em_f1_max_over_references():
  got = metrics.squad([["the Eiffel Tower", "Eiffel"], ["Paris France"]],
                      ["Eiffel tower!", "in Paris"])
  # Ex 1: exact match after normalisation. Ex 2: tokens {in, paris} vs {paris, france}:
  # precision 1/2, recall 1/2 -> F1 0.5.
  assert got["em"] == pytest.approx(50.0)
  assert got["f1"] == pytest.approx((100.0 + 50.0) / 2)


def test_multirc_f1a_over_all_answers_and_em_per_question():
  targets = [{"group": 0, "value": 1}, {"group": 0, "value": 0}, {"group": 1, "value": 1},
             {"group": 1, "value": 1}]
  predictions = [{"group": 0, "value": 1}, {"group": 0, "value": 0}, {"group": 1, "value": 1},
                 {"group": 1, "value": -1}]
  got = metrics.multirc(targets, predictions)
  assert got["em"] == pytest.approx(50.0)  # Question 0 all right, question 1 not.
  assert got["f1a"] == pytest.approx(100 * sk.f1_score([1, 0, 1, 1], [1, 0, 1, 0]))


def test_gender_parity_and_superglue_score():
  targets = [{"group": 0}, {"group": 0}, {"group": 1}, {"group": 1}]
  assert metrics.gender_parity(targets, [1, 1, 0, 1]) == {"gender_parity": 50.0}
  score = metrics.superglue_score({"cb": {"macro_f1": 80.0, "accuracy": 90.0},
                                   "rte": {"accuracy": 70.0}})
  assert score == pytest.approx((85.0 + 70.0) / 2)


def test_count_illegal():
  assert metrics.count_illegal(["yes", "no", "maybe", "Yes"], ["yes", "no"]) == 2
  # Postprocessed values of any type: class ids, MultiRC / AX-g's {'value': id}.
  assert metrics.count_illegal([0, 1, -1, 1], [0, 1]) == 1
  assert metrics.count_illegal([{"value": 1}, {"value": -1}],
                               [{"value": 0}, {"value": 1}]) == 1
