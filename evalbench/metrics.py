"""Metrics: small functions ``(y_true, scores) -> float``, and ``(y_true, scores, groups)`` for
metrics over groups of test images.

``scores`` is (n, n_classes). ``y_true`` is (n,) class indices, or for multi-label tasks an
(n, n_classes) 0/1 matrix. ``groups`` is (n,) group values (strings) read from per-sample
metadata (the task's ``group_by``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    jaccard_score,
    roc_auc_score,
    top_k_accuracy_score,
)


def acc1(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float(np.mean(np.asarray(scores).argmax(axis=1) == np.asarray(y_true)))


def acc5(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Top-5 accuracy (scikit-learn's ``top_k_accuracy_score``)."""
    return float(top_k_accuracy_score(y_true, scores, k=5, labels=np.arange(scores.shape[1])))


def mean_per_class_recall(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of each class's recall (balanced accuracy)."""
    return float(balanced_accuracy_score(y_true, np.asarray(scores).argmax(axis=1)))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC of class 1 against class 0, ranking by ``scores[:, 1] - scores[:, 0]``
    (monotone in the softmax probability of class 1, so the same for logits or cosines)."""
    if scores.shape[1] != 2:
        raise ValueError(f"roc_auc needs 2 classes, got {scores.shape[1]}")
    return float(roc_auc_score(y_true, scores[:, 1] - scores[:, 0]))


def average_precision_11pt(y_true: np.ndarray, scores: np.ndarray) -> float:
    """PASCAL VOC 2007's 11-point interpolated average precision of one class, as its devkit
    computes it (``VOCevalcls.m``): rank by descending score (ties in input order), take the
    precision at every rank of that list, and average over recall levels t = 0, 0.1, ..., 1 the
    highest precision at a recall of at least t (0 where no rank reaches t). NaN without positives.

    Not scikit-learn's ``precision_recall_curve``: it appends the point (recall 0, precision 1),
    which makes the t = 0 term 1 even when the top-ranked item is a negative.
    """
    positive = np.asarray(y_true) > 0
    if not positive.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.cumsum(positive[order])
    precision = hits / np.arange(1, len(hits) + 1)
    recall = hits / hits[-1]
    # k / 10 rather than np.linspace: 3 / 10 is the same double as a recall of 3/10 (0.3), while
    # linspace's 0.30000000000000004 would skip the rank where recall reaches exactly 0.3.
    levels = np.arange(11) / 10
    return float(np.mean([precision[recall >= t].max(initial=0.0) for t in levels]))


def map_11pt(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes (those with a positive example) of the 11-point interpolated AP."""
    aps = [average_precision_11pt(y_true[:, k], scores[:, k]) for k in range(scores.shape[1])]
    return float(np.nanmean(aps))


def f1_macro(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro F1 of the top-1 predictions, averaged over the classes present in ``y_true`` (as
    WILDS' ``F1(average='macro')``, DataComp's ``F1-macro_all`` for iWildCam: a class that is
    only ever predicted, never true, does not count)."""
    y_true = np.asarray(y_true)
    pred = np.asarray(scores).argmax(axis=1)
    return float(f1_score(y_true, pred, average="macro", labels=np.unique(y_true)))


def per_group(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
    """``{group: {"acc1": ..., "acc5": ... (with >= 5 classes), "n": count}}`` for every group
    with at least one image, in sorted group order."""
    y_true, scores, groups = np.asarray(y_true), np.asarray(scores), np.asarray(groups)
    out = {}
    for g in sorted(set(groups.tolist())):
        rows = groups == g
        entry = {"acc1": acc1(y_true[rows], scores[rows])}
        if scores.shape[1] >= 5:
            entry["acc5"] = acc5(y_true[rows], scores[rows])
        out[str(g)] = {**entry, "n": int(rows.sum())}
    return out


def worst_group_acc1(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """The lowest top-1 accuracy of any group (WILDS' ``acc_wg``; DataComp's ``acc_wg`` for GeoDE
    by region, ``acc_worst_region`` for FMoW)."""
    return min(v["acc1"] for v in per_group(y_true, scores, groups).values())


def worst_group_acc5(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """The lowest top-5 accuracy of any group (DataComp's ``acc_top5_wg`` for Dollar Street by
    income group)."""
    if np.asarray(scores).shape[1] < 5:
        raise ValueError("worst_group_acc5 needs at least 5 classes")
    return min(v["acc5"] for v in per_group(y_true, scores, groups).values())


def jaccard_index(answers: np.ndarray, scores: np.ndarray) -> float:
    """One association question, scored as DataComp scores WinoGAViL: the candidates with the
    ``k`` highest ``scores`` are chosen, ``k`` being the number of true ``answers`` (a 0/1 vector
    over the candidates), and the score is the Jaccard index |chosen & true| / |chosen | true|
    (scikit-learn's ``jaccard_score``). DataComp takes ``np.argsort(scores)[-k:]``; here the
    sort is stable, so exact ties go to the later candidate deterministically."""
    answers = np.asarray(answers).astype(bool)
    k = int(answers.sum())
    chosen = np.zeros(len(answers), dtype=bool)
    if k:
        chosen[np.argsort(np.asarray(scores), kind="stable")[-k:]] = True
    return float(jaccard_score(answers, chosen, zero_division=0.0))


def jaccard_metrics(jaccards: np.ndarray, n_candidates: np.ndarray) -> dict[str, float]:
    """DataComp's WinoGAViL summary of per-question Jaccard indices: the mean over all questions
    (``avg_jaccard_score``), per candidate count (``jaccard_score_5`` ...), and over questions
    with 5-6 and 10-12 candidates (``jaccard_score_10-12`` is DataComp's main score). A bucket
    without questions is left out."""
    jaccards, n_candidates = np.asarray(jaccards, dtype=float), np.asarray(n_candidates)
    buckets = {"avg_jaccard_score": np.ones(len(jaccards), dtype=bool)}
    buckets.update({f"jaccard_score_{n}": n_candidates == n for n in (5, 6, 10, 12)})
    buckets["jaccard_score_5-6"] = n_candidates <= 6
    buckets["jaccard_score_10-12"] = n_candidates >= 10
    return {name: float(jaccards[rows].mean()) for name, rows in buckets.items() if rows.any()}


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "acc1": acc1,
    "acc5": acc5,
    "mean_per_class_recall": mean_per_class_recall,
    "roc_auc": roc_auc,
    "map_11pt": map_11pt,
    "f1_macro": f1_macro,
}
GROUP_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "worst_group_acc1": worst_group_acc1,
    "worst_group_acc5": worst_group_acc5,
}


def classification_metrics(
    y_true: np.ndarray, scores: np.ndarray, main_metric: str, groups: np.ndarray | None = None
) -> dict:
    """Every applicable metric plus ``main_score``.

    Single-label: acc1, acc5 (with at least 5 classes), mean_per_class_recall, and roc_auc for
    two classes. Multi-label (2-D ``y_true``): map_11pt. With ``groups``: f1_macro,
    worst_group_acc1, worst_group_acc5 (with at least 5 classes) and ``per_group`` (a dict, see
    :func:`per_group`). A group metric as ``main_metric`` without ``groups`` is a ValueError.
    """
    if np.ndim(y_true) == 2:
        out = {"map_11pt": map_11pt(y_true, scores)}
    else:
        out = {"acc1": acc1(y_true, scores)}
        if scores.shape[1] >= 5:
            out["acc5"] = acc5(y_true, scores)
        out["mean_per_class_recall"] = mean_per_class_recall(y_true, scores)
        if scores.shape[1] == 2 and len(np.unique(y_true)) == 2:
            out["roc_auc"] = roc_auc(y_true, scores)
        if groups is not None or main_metric == "f1_macro":
            out["f1_macro"] = f1_macro(y_true, scores)
        if groups is not None:
            out["per_group"] = per_group(y_true, scores, groups)
            out["worst_group_acc1"] = min(v["acc1"] for v in out["per_group"].values())
            if scores.shape[1] >= 5:
                out["worst_group_acc5"] = min(v["acc5"] for v in out["per_group"].values())
    if main_metric in GROUP_METRICS and main_metric not in out:
        raise ValueError(f"{main_metric} needs per-sample groups")
    out["main_score"] = out[main_metric] if main_metric in out else METRICS[main_metric](y_true, scores)
    return out


# Matching tasks (compositionality benchmarks). Per-item outcomes are boolean arrays, so that
# records keep them for paired statistics; the scores are their means.


def caption_choice(scores: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item (one image against candidate captions): ``(correct, tie)``.

    ``scores`` is (n_items, n_candidates), padded with ``-inf`` where an item has fewer
    candidates; ``label[i]`` indexes the correct caption. Correct means the correct caption
    scores strictly above every other candidate, as in SugarCrepe's and ARO's code (a tie is
    wrong). ``tie`` marks items where the correct caption ties with the best other one."""
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(scores))
    right = scores[rows, label]
    others = scores.copy()
    others[rows, label] = -np.inf
    best_other = others.max(axis=1) if scores.shape[1] > 1 else np.full(len(scores), -np.inf)
    return right > best_other, right == best_other


def winoground_outcomes(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per 2x2 group, as the Winoground paper (Thrush et al., 2022) defines them.

    ``scores[g, c, i]`` is the similarity of caption c and image i; caption j belongs to image j.
    ``text_score``: for each image, its caption scores strictly above the other caption.
    ``image_score``: for each caption, its image scores strictly above the other image.
    ``group_score``: both."""
    s = np.asarray(scores, dtype=np.float64)
    text = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    image = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    return {"text_score": text, "image_score": image, "group_score": text & image}


def per_subset(outcomes: dict[str, np.ndarray], subsets: np.ndarray) -> dict[str, dict]:
    """``{subset: {metric: mean of its outcomes, ..., "n": items}}``, subsets in sorted order.
    Boolean outcomes become fractions; integer counts (``ties``) are summed."""
    frame = pd.DataFrame(outcomes).assign(_subset=np.asarray(subsets))
    out = {}
    for name, part in frame.groupby("_subset", sort=True):
        row = {m: float(part[m].mean()) if part[m].dtype == bool else int(part[m].sum()) for m in outcomes}
        out[str(name)] = {**row, "n": len(part)}
    return out


def macro_average(subsets: dict[str, dict], metric: str) -> float:
    """The mean over subsets of each subset's ``metric``: every subset weighs the same."""
    return float(np.mean([values[metric] for values in subsets.values()]))
