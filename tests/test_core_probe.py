"""The linear probe's C sweep and refit, checked against scikit-learn used directly.

Expectations come from brute force: scikit-learn's LogisticRegression fitted at every point of
the 97-point grid lambda = 10**(k/8), k = -48..48 (C = 1/lambda), scored on the validation set.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from evalbench.probe import choose_c, linear_probe

GRID = range(-48, 49)  # log10(lambda) in eighths of a decade


@pytest.fixture(autouse=True)
def one_blas_thread():
    # Tiny lbfgs fits are ~50x slower when two BLAS threads contend on a 2-core machine; one
    # thread also keeps the harness and the brute force on identical arithmetic.
    with threadpool_limits(1):
        yield


def blobs(seed: int, n_train: int, n_val: int, n_test: int = 0, d: int = 40, sep: float = 0.3, k: int = 3):
    """Noisy Gaussian blobs: many features, few samples, so C matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, (k, d))

    def draw(n):
        y = np.arange(n) % k
        return centres[y] + rng.normal(0, 1, (n, d)), y

    return draw(n_train), draw(n_val), draw(n_test)


def fit(x, y, c):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=1000).fit(x, y)


def brute_force(train, val) -> dict[int, float]:
    """Validation accuracy at every eighth-of-a-decade lambda: k -> score."""
    return {k: fit(*train, 10 ** (-k / 8)).score(*val) for k in GRID}


def eighth(c: float) -> int:
    """k such that C = 1 / 10**(k/8); asserts C lies on the grid."""
    k = -8 * math.log10(c)
    assert abs(k - round(k)) < 1e-6, f"C={c} is not on the eighth-of-a-decade grid"
    return round(k)


def is_unimodal(scores: list[float]) -> bool:
    top = int(np.argmax(scores))
    return bool(np.all(np.diff(scores[: top + 1]) >= 0) and np.all(np.diff(scores[top:]) <= 0))


@pytest.fixture(scope="module")
def unimodal_problem():
    # Seed chosen so that the brute-force validation curve is unimodal with an interior plateau
    # of maxima; the test re-checks this below rather than trusting it.
    with threadpool_limits(1):
        train, val, _ = blobs(seed=62, n_train=24, n_val=45)
        table = brute_force(train, val)
    return train, val, table


def test_unimodal_curve_finds_the_brute_force_best(unimodal_problem):
    train, val, table = unimodal_problem
    curve = [table[k] for k in GRID]
    assert is_unimodal(curve), "precondition: the brute-force curve should be unimodal"
    best_score = max(curve)
    argmaxes = [k for k in GRID if table[k] == best_score]
    assert -40 < min(argmaxes) and max(argmaxes) < 40, "precondition: the best C should be interior"

    sweep = choose_c(*train, *val, n_classes=3, metric="acc1", progress=False)
    chosen = eighth(sweep.best_c)
    assert table[chosen] == pytest.approx(best_score)
    assert min(abs(chosen - k) for k in argmaxes) <= 1
    # Ties go to the strongest regularisation: the largest lambda (smallest C) among the maxima.
    assert chosen == max(argmaxes)


def test_sweep_grid_and_recorded_scores(unimodal_problem):
    train, val, table = unimodal_problem
    sweep = choose_c(*train, *val, n_classes=3, metric="acc1", progress=False)
    points = {eighth(c): s for c, s in sweep.scores.items()}
    # Every decade from 1e-6 to 1e6 is tried first: 13 values.
    decades = {k for k in points if k % 8 == 0}
    assert decades == set(range(-48, 49, 8))
    # Refinement halves the step down to an eighth of a decade around the best.
    best = eighth(sweep.best_c)
    assert {best - 1, best + 1} <= set(points) or best in (-48, 48)
    assert any(k % 8 != 0 and k % 2 != 0 for k in points), "no point at an odd eighth: no 1/8 refinement"
    assert len(points) <= 13 + 6  # a binary search, not a full grid
    # Each recorded score is scikit-learn's validation accuracy at that C = 1/lambda.
    for k, s in points.items():
        assert s == pytest.approx(table[k]), f"score at lambda=10**({k}/8)"


def simulate_clip_search(table: dict[int, float]) -> int:
    """The CLIP paper's search replayed on brute-force scores: decades, then halve the step
    around the best (ties to larger lambda) down to an eighth of a decade."""
    seen = {k: table[k] for k in range(-48, 49, 8)}
    for step in (4, 2, 1):
        centre = max(seen, key=lambda k: (seen[k], k))
        for k in (centre - step, centre + step):
            if -48 <= k <= 48:
                seen[k] = table[k]
    return max(seen, key=lambda k: (seen[k], k))


@pytest.mark.parametrize("seed", [0, 3])
def test_search_path_matches_replay_on_jagged_curve(seed):
    """On a realistic, jagged curve the search must still follow the documented path exactly."""
    train, val, _ = blobs(seed=seed, n_train=30, n_val=90, d=60, sep=0.25)
    table = brute_force(train, val)
    sweep = choose_c(*train, *val, n_classes=3, metric="acc1", progress=False)
    assert eighth(sweep.best_c) == simulate_clip_search(table)


def test_choose_c_uses_the_requested_metric():
    """With imbalanced validation data, mean per-class recall and accuracy disagree; each sweep
    scores with its own metric."""
    from sklearn.metrics import balanced_accuracy_score

    train, (xv, yv), _ = blobs(seed=5, n_train=30, n_val=120, d=30, sep=0.3)
    keep = (yv == 0) | (np.arange(len(yv)) % 6 == 1) | (np.arange(len(yv)) % 12 == 2)  # class 0 dominates
    xv, yv = xv[keep], yv[keep]
    sweep = choose_c(*train, xv, yv, n_classes=3, metric="mean_per_class_recall", progress=False)
    for c, s in sweep.scores.items():
        assert s == pytest.approx(balanced_accuracy_score(yv, fit(*train, c).predict(xv)))


def test_linear_probe_refits_on_train_and_val():
    train, val, test = blobs(seed=62, n_train=24, n_val=45, n_test=600)
    result = linear_probe(train, val, test, n_classes=3, metric="acc1", progress=False)
    c = result["C"]
    assert c == pytest.approx(choose_c(*train, *val, n_classes=3, progress=False).best_c)
    both = fit(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]), c)
    train_only = fit(*train, c)
    assert both.score(*test) != pytest.approx(train_only.score(*test)), "precondition: refit must matter"
    assert result["acc1"] == pytest.approx(both.score(*test))
    assert result["main_score"] == pytest.approx(result["acc1"])
    assert (result["n_train"], result["n_val"], result["n"]) == (24, 45, 600)


def test_linear_probe_scores_classes_absent_from_training():
    """A class missing from the training labels is never predicted, and indices stay aligned:
    scikit-learn's classes_ are [0, 2] here, not [0, 1]."""
    (xt, yt), (xv, yv), (xs, ys) = blobs(seed=1, n_train=60, n_val=30, n_test=90, d=10, sep=2.0)
    train = (xt[yt != 1], yt[yt != 1])
    val = (xv[yv != 1], yv[yv != 1])
    result = linear_probe(train, val, (xs, ys), n_classes=3, metric="acc1", progress=False)
    clf = fit(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]), result["C"])
    assert result["acc1"] == pytest.approx(np.mean(clf.predict(xs) == ys))
    assert result["acc1"] <= 2 / 3 + 1e-9  # class 1 (a third of the test set) is always wrong
