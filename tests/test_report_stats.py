"""Paired deltas, intervals and significance, checked against independent computations on
constructed cases (normal approximation, a plain index-resampling bootstrap, the binomial law)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score
from test_report_fixtures import mode_result, plus_right, record, wrong_class

from evalbench.errors import EvalbenchError
from evalbench.report import CompareOptions, baseline_deltas
from evalbench.report.stats import mcnemar_exact, paired_bootstrap, paired_delta, recover_labels

N, C = 200, 10


@pytest.fixture()
def labels():
    return np.random.default_rng(0).integers(0, C, N)


def _right_on(y: np.ndarray, rows) -> np.ndarray:
    """Predictions right exactly on ``rows``."""
    pred = wrong_class(y, C)
    pred[rows] = y[rows]
    return pred


def _naive_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int, seed: int, groups=None) -> tuple[float, float]:
    """Index resampling, the textbook way; independent of the multinomial shortcut under test."""
    rng = np.random.default_rng(seed + 12345)
    idx = rng.integers(0, len(a), (resamples, len(a)))
    if groups is None:
        deltas = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    else:
        deltas = []
        for row in idx:
            g = groups[row]
            classes = np.unique(g)
            rec = lambda c: np.mean([c[row][g == k].mean() for k in classes])  # noqa: E731
            deltas.append(rec(b) - rec(a))
    return tuple(np.percentile(deltas, [2.5, 97.5]))


def test_thirty_more_right_of_200_is_significant(labels):
    a = _right_on(labels, np.arange(100))
    b = plus_right(labels, a, 30, C)
    records = [record("A", "t", {"zeroshot": mode_result(labels, a, C)}),
               record("B", "t", {"zeroshot": mode_result(labels, b, C)})]
    row = baseline_deltas(records, "A").iloc[0]
    assert row["delta"] == pytest.approx(0.15)
    # normal approximation of the paired difference: 30 of 200 images are +1, the rest 0
    se = math.sqrt(0.15 * 0.85 / N)
    assert row["ci_low"] == pytest.approx(0.15 - 1.96 * se, abs=0.01)
    assert row["ci_high"] == pytest.approx(0.15 + 1.96 * se, abs=0.01)
    assert row["ci_low"] > 0
    assert row["p_value"] == pytest.approx(2 * 0.5**30)  # all 30 discordant images favour B
    assert row["test"] == "mcnemar" and row["significant"] is True


def test_equal_accuracy_is_not_significant(labels):
    a = _right_on(labels, np.arange(0, 100))
    b = _right_on(labels, np.arange(20, 120))  # 20 images only A gets, 20 only B gets
    records = [record("A", "t", {"zeroshot": mode_result(labels, a, C)}),
               record("B", "t", {"zeroshot": mode_result(labels, b, C)})]
    row = baseline_deltas(records, "A").iloc[0]
    assert row["delta"] == 0
    assert row["p_value"] == pytest.approx(1.0)
    assert row["ci_low"] < 0 < row["ci_high"]
    assert row["significant"] is False


def test_bootstrap_matches_index_resampling(labels):
    a = _right_on(labels, np.arange(0, 120)) == labels
    b = _right_on(labels, np.arange(15, 150)) == labels
    ci = paired_bootstrap(a, b, resamples=4000, seed=3)
    low, high = _naive_bootstrap(a, b, 4000, 3)
    assert ci.low == pytest.approx(low, abs=0.01) and ci.high == pytest.approx(high, abs=0.01)


def test_bootstrap_is_seeded(labels):
    a, b = labels % 2 == 0, labels % 3 == 0
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) != paired_bootstrap(a, b, seed=8)


def test_identical_models_have_a_zero_width_interval(labels):
    a = labels < 5
    ci = paired_bootstrap(a, a)
    assert (ci.low, ci.high) == (0.0, 0.0) and not ci.excludes_zero()
    assert mcnemar_exact(a, a) == 1.0


def test_mcnemar_is_exact_where_the_bootstrap_is_optimistic():
    """5 of 1000 images discordant, all for B: the bootstrap interval excludes 0 (a resample
    misses all five with probability ~e^-5), the exact test does not (p = 2 / 2^5)."""
    a = np.zeros(1000, bool)
    b = a.copy()
    b[:5] = True
    assert paired_bootstrap(a, b).low > 0
    assert mcnemar_exact(a, b) == pytest.approx(0.0625)
    y = np.arange(1000) % 2
    records = [record("A", "t", {"zeroshot": mode_result(y, np.where(a, y, 1 - y), 2)}),
               record("B", "t", {"zeroshot": mode_result(y, np.where(b, y, 1 - y), 2)})]
    assert baseline_deltas(records, "A").iloc[0]["significant"] is False


def test_mean_per_class_recall_is_bootstrapped_with_recovered_labels():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), [20, 40, 60, 80])  # unbalanced, so recall != accuracy
    right_a = rng.random(len(y)) < 0.6
    right_b = np.where(right_a, rng.random(len(y)) < 0.95, rng.random(len(y)) < 0.5)
    right_b[~right_a & ~right_b] = True  # every image right for some model: labels recoverable
    pred_a, pred_b = np.where(right_a, y, (y + 1) % 4), np.where(right_b, y, (y + 2) % 4)
    mpcr = "mean_per_class_recall"
    names = list("abcd")
    records = [record("A", "t", {"zeroshot": mode_result(y, pred_a, 4, mpcr)}, mpcr, names),
               record("B", "t", {"zeroshot": mode_result(y, pred_b, 4, mpcr)}, mpcr, names)]
    row = baseline_deltas(records, "A", CompareOptions(resamples=2000)).iloc[0]
    expected = balanced_accuracy_score(y, pred_b) - balanced_accuracy_score(y, pred_a)
    assert row["delta"] == pytest.approx(expected)
    assert paired_delta(right_a, right_b, y) == pytest.approx(expected)
    assert paired_delta(right_a, right_b) != pytest.approx(expected)  # plain accuracy differs
    low, high = _naive_bootstrap(right_a, right_b, 1000, 0, groups=y)
    assert row["ci_low"] == pytest.approx(low, abs=0.015) and row["ci_high"] == pytest.approx(high, abs=0.015)
    assert row["test"] == "bootstrap" and row["significant"] == (row["ci_low"] > 0 or row["ci_high"] < 0)


def test_labels_recovered_where_some_model_is_right_or_the_task_is_binary():
    y = np.array([0, 1, 2, 2])
    right = (np.array([0, 1, 0, 2]), np.array([True, True, False, True]))
    other = (np.array([1, 0, 2, 1]), np.array([False, False, True, False]))
    assert recover_labels([right, other], 3).tolist() == y.tolist()
    assert recover_labels([right], 3) is None  # image 2: nobody right, three classes
    yb = np.array([0, 1, 1])
    wrong = (1 - yb, np.zeros(3, bool))
    assert recover_labels([wrong], 2).tolist() == yb.tolist()
    with pytest.raises(ValueError, match="two different labels"):
        recover_labels([right, (np.array([1, 1, 2, 2]), np.ones(4, bool))], 3)


def test_unrecoverable_labels_give_a_delta_with_a_note(labels):
    a = _right_on(labels, np.arange(100))
    mpcr = "mean_per_class_recall"
    records = [record("A", "t", {"zeroshot": mode_result(labels, a, C, mpcr)}, mpcr),
               record("B", "t", {"zeroshot": mode_result(labels, plus_right(labels, a, 10, C), C, mpcr)}, mpcr)]
    for r in records:  # records written before true labels were stored per image
        del r["results"]["zeroshot"]["per_sample"]["label"]
    row = baseline_deltas(records, "A").iloc[0]
    assert row["delta"] > 0 and np.isnan(row["ci_low"]) and row["significant"] is None
    assert "needs labels" in row["note"]


def test_roc_auc_and_kshot_deltas_have_notes(labels):
    y = labels % 2
    pred = _right_on(y, np.arange(100)) % 2
    auc = {"zeroshot": mode_result(y, pred, 2, "roc_auc")}
    kshot = {"main_score": 0.4, "acc1": 0.4, "acc1_std": 0.02, "n": N, "k": 4, "seeds": 3}
    records = [record("A", "bin", auc, "roc_auc"), record("B", "bin", auc, "roc_auc"),
               record("A", "t", {"linear_probe@4": kshot}), record("B", "t", {"linear_probe@4": {**kshot, "main_score": 0.5}})]
    deltas = baseline_deltas(records, "A").set_index("task")
    assert "needs scores" in deltas.loc["bin", "note"] and deltas.loc["bin", "significant"] is None
    assert deltas.loc["t", "delta"] == pytest.approx(0.1) and "no per-sample" in deltas.loc["t", "note"]


def test_different_test_sizes_name_the_task(labels):
    a = _right_on(labels, np.arange(100))
    records = [record("A", "cifar10", {"zeroshot": mode_result(labels, a, C)}),
               record("B", "cifar10", {"zeroshot": mode_result(labels[:150], a[:150], C)})]
    with pytest.raises(EvalbenchError, match="task 'cifar10'.*200.*150"):
        baseline_deltas(records, "A")


def test_stored_labels_give_an_interval_where_recovery_cannot(labels):
    a = _right_on(labels, np.arange(100))
    mpcr = "mean_per_class_recall"
    records = [record("A", "t", {"zeroshot": mode_result(labels, a, C, mpcr)}, mpcr),
               record("B", "t", {"zeroshot": mode_result(labels, plus_right(labels, a, 10, C), C, mpcr)}, mpcr)]
    row = baseline_deltas(records, "A").iloc[0]
    assert row["delta"] > 0 and row["ci_low"] <= row["delta"] <= row["ci_high"] and row["note"] == ""


def test_unknown_baseline_lists_the_models(labels):
    records = [record("A", "t", {"zeroshot": mode_result(labels, labels, C)})]
    with pytest.raises(EvalbenchError, match="--baseline: no results for model 'Z'.*A"):
        baseline_deltas(records, "Z")


def test_delta_independent_of_other_models(labels):
    """One generator per comparison: adding a model does not move another model's interval."""
    a = _right_on(labels, np.arange(100))
    two = [record("A", "t", {"zeroshot": mode_result(labels, a, C)}),
           record("B", "t", {"zeroshot": mode_result(labels, plus_right(labels, a, 12, C), C)})]
    three = two + [record("AA", "t", {"zeroshot": mode_result(labels, plus_right(labels, a, 40, C), C)})]
    row2 = baseline_deltas(two, "A").set_index("model").loc["B"]
    row3 = baseline_deltas(three, "A").set_index("model").loc["B"]
    assert (row2["ci_low"], row2["ci_high"]) == (row3["ci_low"], row3["ci_high"])
