"""Linear probe: logistic regression on frozen image features, C chosen on validation data.

The C sweep follows the CLIP paper: C = 1/lambda, lambda from 1e-6 to 1e6, first at every decade,
then refined around the best value by halving the step until it reaches 8 steps per decade. Ties
on the validation score go to the stronger regularisation (larger lambda).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from tqdm.auto import tqdm

from evalbench.metrics import METRICS, classification_metrics

LOG_LAMBDA_RANGE = (-6, 6)
FINEST_STEP = 1 / 8


@dataclass
class SweepResult:
    best_c: float
    scores: dict[float, float] = field(default_factory=dict)  # C -> validation score


def fit_logreg(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 1000):
    """Multinomial logistic regression (lbfgs); one-vs-rest for a multi-label (n, k) ``y``."""
    clf = LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs")
    if y.ndim == 2:
        clf = OneVsRestClassifier(clf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        return clf.fit(x, y)


def class_scores(clf, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities (n, n_classes), zero for classes absent from the training labels."""
    if isinstance(clf, OneVsRestClassifier):
        return clf.predict_proba(x)
    out = np.zeros((len(x), n_classes))
    out[:, clf.classes_] = clf.predict_proba(x)
    return out


def choose_c(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    metric: str = "acc1",
    progress: bool = True,
) -> SweepResult:
    """The CLIP paper's parametric search for C on a validation split."""
    scores_by_eighth: dict[int, float] = {}  # log10(lambda) in eighths of a decade -> score
    lo, hi = (v * 8 for v in LOG_LAMBDA_RANGE)
    bar = tqdm(desc="C sweep", unit="fit", disable=not progress, leave=False)

    def evaluate(eighth: int) -> None:
        if lo <= eighth <= hi and eighth not in scores_by_eighth:
            clf = fit_logreg(x_train, y_train, c=10 ** (-eighth / 8))
            scores_by_eighth[eighth] = METRICS[metric](y_val, class_scores(clf, x_val, n_classes))
            bar.update(1)

    def best() -> int:
        # Max score; among ties the largest lambda (strongest regularisation).
        return max(scores_by_eighth, key=lambda e: (scores_by_eighth[e], e))

    for decade in range(LOG_LAMBDA_RANGE[0], LOG_LAMBDA_RANGE[1] + 1):
        evaluate(decade * 8)
    step = 8
    while step > FINEST_STEP * 8:
        step //= 2
        centre = best()
        evaluate(centre - step)
        evaluate(centre + step)
    bar.close()
    return SweepResult(
        best_c=10 ** (-best() / 8),
        scores={10 ** (-e / 8): s for e, s in sorted(scores_by_eighth.items())},
    )


Split = tuple[np.ndarray, np.ndarray]  # (features, labels)


def linear_probe(train: Split, val: Split, test: Split, n_classes: int, metric: str, progress: bool = True) -> dict:
    """Choose C on ``val``, refit on train+val, score on ``test``: the metrics plus the choice."""
    sweep = choose_c(*train, *val, n_classes=n_classes, metric=metric, progress=progress)
    clf = fit_logreg(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]), sweep.best_c)
    result = classification_metrics(test[1], class_scores(clf, test[0], n_classes), metric)
    result.update(
        C=sweep.best_c,
        n_train=len(train[1]),
        n_val=len(val[1]),
        n=len(test[1]),
        normalize=False,
        val_scores=[[c, s] for c, s in sweep.scores.items()],
    )
    return result
