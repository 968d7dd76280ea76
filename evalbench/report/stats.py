"""Paired statistics on per-test-image correctness: bootstrap intervals and McNemar's test.

Everything here is a small pure function of numpy arrays. Two models are *paired* when their
arrays describe the same test images in the same order, which records guarantee for one task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _cell_counts(correct_a: np.ndarray, correct_b: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Counts of images per (group, a right, b right): shape (n_groups, 4), the last axis indexed
    by ``2 * a + b``."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {b.shape}")
    g = np.zeros(len(a), dtype=np.int64) if groups is None else np.unique(groups, return_inverse=True)[1]
    n_groups = int(g.max()) + 1 if len(g) else 1
    counts = np.bincount(g * 4 + 2 * a + b, minlength=4 * n_groups)
    return counts.reshape(n_groups, 4)


def _metrics_from_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(metric of a, metric of b) from cell counts of shape (..., n_groups, 4): the mean over
    groups with at least one image of each group's accuracy. With one group this is accuracy;
    with classes as groups it is mean per-class recall (balanced accuracy)."""
    total = counts.sum(axis=-1).astype(float)
    present = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        rec_a = (counts[..., 2] + counts[..., 3]) / total
        rec_b = (counts[..., 1] + counts[..., 3]) / total
    n_present = present.sum(axis=-1)
    return (
        np.where(present, rec_a, 0).sum(axis=-1) / n_present,
        np.where(present, rec_b, 0).sum(axis=-1) / n_present,
    )


def paired_delta(correct_a: np.ndarray, correct_b: np.ndarray, groups: np.ndarray | None = None) -> float:
    """metric(b) - metric(a): accuracy, or with ``groups`` (true classes) mean per-class recall."""
    m_a, m_b = _metrics_from_counts(_cell_counts(correct_a, correct_b, groups))
    return float(m_b - m_a)


def paired_bootstrap(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    groups: np.ndarray | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Percentile bootstrap interval of ``metric(b) - metric(a)`` over test images.

    Each resample draws n images with replacement and scores both models on the *same* draw
    (paired). A draw only matters through how many images fall in each (class, a right, b right)
    cell, so the draws are made as one multinomial over those cells: exactly the distribution of
    index resampling, in memory (resamples x 4 x classes) rather than (resamples x n).
    ``groups`` are the true classes when the metric is mean per-class recall; None for accuracy.
    """
    counts = _cell_counts(correct_a, correct_b, groups)
    n = int(counts.sum())
    if n == 0:
        raise ValueError("no test images to resample")
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts.ravel() / n, size=resamples).reshape(resamples, *counts.shape)
    m_a, m_b = _metrics_from_counts(draws)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(m_b - m_a, [tail, 100 - tail])
    return Interval(float(low), float(high))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the images where exactly one model is
    right (b right, a wrong) against half of all discordant images. 1.0 when none are discordant."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_b, only_a = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_b, only_a + only_b, 0.5).pvalue)


def recover_labels(predictions: list[tuple[np.ndarray, np.ndarray]], n_classes: int | None) -> np.ndarray | None:
    """True classes of the test images from predictions alone, or None where some stay unknown.

    Records keep (predicted class, correct) per image, not the label. Where any model is right,
    its prediction is the label; for two classes a wrong prediction names the other class.
    Raises ValueError if two predictions claim different labels for one image (the records do
    not describe the same test rows).
    """
    n = len(predictions[0][0])
    labels = np.full(n, -1, dtype=np.int64)
    for pred, correct in predictions:
        claimed = np.where(correct, pred, 1 - pred if n_classes == 2 else -1)
        known = claimed >= 0
        clash = known & (labels >= 0) & (labels != claimed)
        if clash.any():
            raise ValueError(f"test image {int(np.flatnonzero(clash)[0])} has two different labels")
        labels[known] = claimed[known]
    return labels if (labels >= 0).all() else None


def worst_group_bootstrap(
    correct: np.ndarray,
    groups: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Percentile bootstrap interval of the worst group's accuracy (the minimum over groups of
    the mean of ``correct``), resampling *within* groups: each resample redraws every group's
    n_g images with replacement from that group, so every group keeps its size and none can
    vanish from a resample. A group's redrawn number of correct images is exactly
    Binomial(n_g, its accuracy), so the draws are made that way, in memory resamples x groups.
    ``correct`` may be top-1 or top-5 correctness."""
    correct, groups = np.asarray(correct, bool), np.asarray(groups)
    if len(correct) == 0:
        raise ValueError("no test images to resample")
    _, index = np.unique(groups, return_inverse=True)
    n = np.bincount(index)
    right = np.bincount(index, weights=correct).astype(np.int64)
    rng = np.random.default_rng(seed)
    worst = (rng.binomial(n, right / n, size=(resamples, len(n))) / n).min(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(worst, [tail, 100 - tail])
    return Interval(float(low), float(high))
