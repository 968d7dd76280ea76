"""Deltas of every model against a baseline, per task and mode, with paired intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from evalbench.errors import EvalbenchError
from evalbench.records import unpack_correct, unpack_labels, unpack_predictions, unpack_subsets
from evalbench.report.stats import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    mcnemar_exact,
    paired_bootstrap,
    recover_labels,
)
from evalbench.report.runs import order_keys
from evalbench.report.tables import mode_order, model_order

DELTA_COLUMNS = [
    "mode", "task", "model", "baseline", "metric", "n", "score", "baseline_score",
    "delta", "ci_low", "ci_high", "p_value", "test", "significant", "note",
]
# Main metrics of matching tasks: per-item outcomes are stored, and the main score is their
# macro average over subsets (see evalbench.matching).
MATCHING_METRICS = ("acc", "text_score", "image_score", "group_score")


@dataclass(frozen=True)
class CompareOptions:
    """How deltas are tested: ``resamples`` of the paired percentile bootstrap, its ``seed``
    (one fresh generator per comparison, so a delta's interval does not depend on which other
    models are in the report), the interval's ``level``, and ``alpha`` for the significance mark."""

    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    level: float = DEFAULT_LEVEL
    alpha: float = 0.05


def _index(records: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(task, mode, model) -> that mode's results."""
    return {
        (r["task"]["name"], mode, r["model"]["name"]): result
        for r in records
        for mode, result in r.get("results", {}).items()
    }


def check_paired(records: list[dict]) -> None:
    """EvalbenchError naming the task if its records hold per-sample predictions of different
    lengths: they were not made on the same test rows (another ``--limit``, another split)."""
    seen: dict[str, tuple[int, str]] = {}
    for r in records:
        task, model = r["task"]["name"], r["model"]["name"]
        for mode, result in r.get("results", {}).items():
            if "per_sample" not in result:
                continue
            n = int(result["per_sample"]["n"])
            first = seen.setdefault(task, (n, f"{model} {mode}"))
            if first[0] != n:
                raise EvalbenchError(
                    f"task '{task}': per-sample predictions of {first[1]} cover {first[0]} test images, "
                    f"those of {model} {mode} cover {n}; deltas need the same test rows (rerun with the same --limit)"
                )


def _n_classes(records: list[dict], task: str) -> int | None:
    for r in records:
        if r["task"]["name"] == task:
            names = (r["task"].get("config") or {}).get("classnames")
            if isinstance(names, list):
                return len(names)
    return None


def _labels(records: list[dict], index: dict, task: str) -> np.ndarray | None:
    """The task's true classes recovered from every per-sample prediction of every model and mode."""
    samples = [res["per_sample"] for (t, _, _), res in index.items() if t == task and "per_sample" in res]
    stored = next((labels for labels in map(unpack_labels, samples) if labels is not None), None)
    if stored is not None:
        return stored
    preds = [unpack_predictions(s) for s in samples]
    if not preds:
        return None
    try:
        return recover_labels(preds, _n_classes(records, task))
    except ValueError as e:
        raise EvalbenchError(f"task '{task}': per-sample predictions disagree about the test rows ({e})") from None


def _main_metric(records: list[dict], task: str) -> str:
    return next((r["task"].get("main_metric", "acc1") for r in records if r["task"]["name"] == task), "acc1")


def _compare(base: dict, other: dict, metric: str, labels_of, options: CompareOptions) -> dict:
    """The interval, p-value, test and note of one (baseline, other) pair of results."""
    out = {"ci_low": None, "ci_high": None, "p_value": None, "test": None, "significant": None, "note": ""}
    if "per_sample" not in base or "per_sample" not in other:
        out["note"] = "no per-sample predictions (k-shot means over seeds, multi-label tasks)"
        return out
    correct_a = unpack_correct(base["per_sample"])
    correct_b = unpack_correct(other["per_sample"])
    out["n"] = len(correct_a)
    if metric == "acc1":
        groups = None
    elif metric in MATCHING_METRICS:
        # Resampling items within (subset, a right, b right) cells and averaging per subset
        # gives the interval of the macro average; one subset is plain accuracy (McNemar).
        subsets = unpack_subsets(base["per_sample"])
        groups = subsets if subsets is not None and len(np.unique(subsets)) > 1 else None
    elif metric == "mean_per_class_recall":
        groups = labels_of()
        if groups is None:
            out["note"] = "mean_per_class_recall needs labels: some test images are wrong for every model"
            return out
    else:
        out["note"] = f"{metric} needs scores; per-sample records keep predicted classes only"
        return out
    ci = paired_bootstrap(correct_a, correct_b, groups, options.resamples, options.seed, options.level)
    out.update(ci_low=ci.low, ci_high=ci.high)
    if groups is None:
        p = mcnemar_exact(correct_a, correct_b)
        out.update(p_value=p, test="mcnemar", significant=bool(p < options.alpha))
    else:
        out.update(test="bootstrap", significant=ci.excludes_zero())
    return out


def baseline_deltas(records: list[dict], baseline: str, options: CompareOptions | None = None) -> pd.DataFrame:
    """One row per (mode, task, other model) where both the model and the baseline have a main
    score: ``delta`` = score - baseline score (fractions), and where per-sample predictions allow,
    a paired bootstrap interval (``ci_low``, ``ci_high``; NaN otherwise), ``p_value`` (McNemar,
    acc1 only) and ``significant`` (True/False; None without a test), with a ``note`` saying why
    not where there is none.

    Significance: the exact McNemar test (p < alpha) when the main metric is acc1, or a
    matching task's metric with one subset; for mean_per_class_recall and a matching task's
    macro average over several subsets, the bootstrap interval excluding 0. Other metrics get a delta and a note.
    Raises EvalbenchError if ``baseline`` names no model, or a task's per-sample lengths differ.
    """
    options = options or CompareOptions()
    models = {r["model"]["name"] for r in records}
    if baseline not in models:
        raise EvalbenchError(f"--baseline: no results for model '{baseline}' (have: {', '.join(sorted(models))})")
    check_paired(records)
    index = _index(records)
    labels: dict[str, np.ndarray | None] = {}
    rows = []
    keys = sorted({(t, m) for t, m, _ in index}, key=lambda tm: (mode_order(tm[1]), tm[0]))
    others = model_order(models, baseline, order_keys(records))[1:]  # a run's checkpoints by step
    for task, mode in keys:
        base = index.get((task, mode, baseline))
        if base is None or "main_score" not in base:
            continue
        metric = _main_metric(records, task)
        for model in others:
            other = index.get((task, mode, model))
            if other is None or "main_score" not in other:
                continue

            def labels_of(task=task):
                if task not in labels:
                    labels[task] = _labels(records, index, task)
                return labels[task]

            row = {
                "mode": mode, "task": task, "model": model, "baseline": baseline, "metric": metric,
                "n": other.get("n"), "score": other["main_score"], "baseline_score": base["main_score"],
                "delta": other["main_score"] - base["main_score"],
            }
            row.update(_compare(base, other, metric, labels_of, options))
            rows.append(row)
    frame = pd.DataFrame(rows, columns=DELTA_COLUMNS)
    # One representation for gaps: NaN in the numeric columns, None in ``significant``, which
    # holds Python bools (so ``is True`` works whatever the mix of rows).
    for col in ("ci_low", "ci_high", "p_value"):
        frame[col] = frame[col].astype(float)
    frame["significant"] = pd.Series([None if v is None else bool(v) for v in frame["significant"]],
                                     index=frame.index, dtype=object)
    return frame
