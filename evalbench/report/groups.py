"""Group metrics in reports: worst-group scores with bootstrap intervals, and per-group tables.

A zero-shot result of a task with ``group_by`` holds ``per_group`` ({group: {metric, n}}) and
per-sample groups; see :func:`evalbench.records.pack_groups`.
"""

from __future__ import annotations

import pandas as pd

from evalbench.records import unpack_groups, unpack_predictions
from evalbench.report.compare import CompareOptions
from evalbench.report.stats import worst_group_bootstrap

WORST_COLUMNS = ["mode", "task", "model", "metric", "value", "ci_low", "ci_high", "groups", "n"]
PER_GROUP_COLUMNS = ["mode", "task", "model", "group", "metric", "value", "n"]


def worst_group_table(records: list[dict], options: CompareOptions | None = None) -> pd.DataFrame:
    """One row per (mode, task, model, worst-group metric): the value and its percentile
    bootstrap interval resampling within groups (``ci_low``/``ci_high`` are None for records
    without per-sample groups)."""
    options = options or CompareOptions()
    rows = []
    for r in records:
        for mode, result in r.get("results", {}).items():
            if "per_group" not in result:
                continue
            packed = unpack_groups(result.get("per_sample", {})) if "per_sample" in result else None
            for metric, k in (("worst_group_acc1", 1), ("worst_group_acc5", 5)):
                if metric not in result:
                    continue
                low = high = None
                if packed is not None:
                    groups, correct5 = packed
                    correct = unpack_predictions(result["per_sample"])[1] if k == 1 else correct5
                    if correct is not None:
                        ci = worst_group_bootstrap(correct, groups, options.resamples, options.seed, options.level)
                        low, high = ci.low, ci.high
                rows.append([mode, r["task"]["name"], r["model"]["name"], metric, result[metric], low, high,
                             len(result["per_group"]), result.get("n")])
    return pd.DataFrame(rows, columns=WORST_COLUMNS)


def per_group_table(records: list[dict]) -> pd.DataFrame:
    """One row per (mode, task, model, group, metric) from each result's ``per_group``."""
    rows = [
        [mode, r["task"]["name"], r["model"]["name"], group, metric, value, values.get("n")]
        for r in records
        for mode, result in r.get("results", {}).items()
        for group, values in result.get("per_group", {}).items()
        for metric, value in values.items()
        if metric != "n"
    ]
    return pd.DataFrame(rows, columns=PER_GROUP_COLUMNS)
