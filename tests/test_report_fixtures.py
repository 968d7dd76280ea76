"""Hand-made result records for the report tests (no model runs): helpers, no tests."""

from __future__ import annotations

import numpy as np

from evalbench.metrics import classification_metrics
from evalbench.records import SCHEMA_VERSION, pack_predictions


def scores_for(pred: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot scores whose argmax is ``pred``."""
    scores = np.zeros((len(pred), n_classes))
    scores[np.arange(len(pred)), pred] = 1.0
    return scores


def mode_result(y: np.ndarray, pred: np.ndarray, n_classes: int, main_metric: str = "acc1") -> dict:
    """What api.run_task stores for zeroshot/linear_probe, from true and predicted classes."""
    scores = scores_for(np.asarray(pred), n_classes)
    result = classification_metrics(np.asarray(y), scores, main_metric)
    result.update(n=len(y), duration_s=0.1, per_sample=pack_predictions(scores, y))
    return result


def record(model: str, task: str, results: dict, main_metric: str = "acc1", classnames: list[str] | None = None) -> dict:
    """A record as api.evaluate writes it, with only what the report reads filled in."""
    config = {"name": task, "main_metric": main_metric}
    if classnames is not None:
        config["classnames"] = classnames
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": model, "spec": model, "fingerprint": model},
        "task": {"name": task, "version": 1, "hash": "h", "main_metric": main_metric, "limit": None, "config": config},
        "results": results,
        "provenance": {},
    }


def plus_right(y: np.ndarray, base_pred: np.ndarray, extra: int, n_classes: int) -> np.ndarray:
    """``base_pred`` with ``extra`` of its wrong predictions made right (the first ones)."""
    pred = base_pred.copy()
    wrong = np.flatnonzero(pred != y)[:extra]
    pred[wrong] = y[wrong]
    return pred


def wrong_class(y: np.ndarray, n_classes: int) -> np.ndarray:
    return (y + 1) % n_classes
