"""Metrics: small functions ``(y_true, scores) -> float``, scores being (n, n_classes)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score


def acc1(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float(np.mean(np.asarray(scores).argmax(axis=1) == np.asarray(y_true)))


def acc5(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Top-5 accuracy (scikit-learn's ``top_k_accuracy_score``)."""
    return float(top_k_accuracy_score(y_true, scores, k=5, labels=np.arange(scores.shape[1])))


def mean_per_class_recall(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of each class's recall (balanced accuracy)."""
    return float(balanced_accuracy_score(y_true, np.asarray(scores).argmax(axis=1)))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "acc1": acc1,
    "acc5": acc5,
    "mean_per_class_recall": mean_per_class_recall,
}


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, main_metric: str) -> dict[str, float]:
    """Every applicable metric plus ``main_score``; acc5 only with at least 5 classes."""
    out = {"acc1": acc1(y_true, scores)}
    if scores.shape[1] >= 5:
        out["acc5"] = acc5(y_true, scores)
    out["mean_per_class_recall"] = mean_per_class_recall(y_true, scores)
    out["main_score"] = METRICS[main_metric](y_true, scores)
    return out
