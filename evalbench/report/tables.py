"""Records -> pandas: the long table of metrics, main-score tables with suite means, ranks."""

from __future__ import annotations

import pandas as pd

from evalbench.records import MODES
from evalbench.tasks.loader import SuiteSpec

# Float results that describe the run, not the model's quality.
NOT_METRICS = frozenset({"duration_s", "C"})


def mode_order(mode: str) -> tuple:
    """zeroshot, linear_probe, then k-shot probes by k."""
    base, _, k = mode.partition("@")
    return (MODES.index(base) if base in MODES else len(MODES), int(k) if k.isdigit() else -1, mode)


def mode_label(mode: str) -> str:
    """Short column labels: ``linear_probe@4`` -> ``lp@4``."""
    return mode.replace("linear_probe@", "lp@")


def _metrics(result: dict):
    """(metric, value) for every float of one mode's result; a matching task's ``per_subset``
    results as ``SUBSET/METRIC``."""
    for metric, value in result.items():
        if isinstance(value, float) and metric not in NOT_METRICS:
            yield metric, value
    for subset, values in (result.get("per_subset") or {}).items():
        for metric, value in values.items():
            if isinstance(value, float):
                yield f"{subset}/{metric}", value


LONG_COLUMNS = ["model", "task", "mode", "metric", "value", "step"]


def long_table(records: list[dict]) -> pd.DataFrame:
    """One row per (model, task, mode, metric) with the metric's value (a fraction): every float
    in a record's results (acc1, main_score, a k-shot probe's ``*_std``, retrieval recalls, a
    matching task's per-subset scores as ``SUBSET/METRIC``), not counts, durations or the
    probe's C. ``step``: the checkpoint's ``model.step`` (nullable integers; empty for models
    without one)."""
    rows = [
        {"model": r["model"]["name"], "task": r["task"]["name"], "mode": mode, "metric": metric, "value": value,
         "step": r["model"].get("step")}
        for r in records
        for mode, result in r.get("results", {}).items()
        for metric, value in _metrics(result)
    ]
    frame = pd.DataFrame(rows, columns=LONG_COLUMNS)
    frame["step"] = frame["step"].astype("Int64")
    return frame


def model_order(models, baseline: str | None = None, keys: dict[str, tuple] | None = None) -> list[str]:
    """The baseline first, then the others by name; with ``keys`` (model -> (run, 1, step), see
    :func:`evalbench.report.runs.order_keys`), the checkpoints of a run sit together at the run's
    place in the name order, by step."""
    keys = keys or {}

    def key(model: str) -> tuple:
        return (*keys.get(model, (model, 0, 0)), model)

    rest = sorted((m for m in set(models) if m != baseline), key=key)
    return ([baseline] if baseline in set(models) else []) + rest


def _suites_of(tasks, suites: dict[str, SuiteSpec]) -> list[SuiteSpec]:
    return [s for s in sorted(suites.values(), key=lambda s: s.name) if set(s.tasks) & set(tasks)]


def main_score_tables(
    long: pd.DataFrame, suites: dict[str, SuiteSpec], baseline: str | None = None, keys: dict[str, tuple] | None = None
) -> dict[str, pd.DataFrame]:
    """Per mode, a models x tasks table of main_score, plus a ``mean(<suite>)`` column for each
    suite that shares a task with the table. A suite mean is empty unless the model has every
    task of the suite: never a mean over a subset. Rows in :func:`model_order` (``keys``: the
    checkpoints of a run by step)."""
    tables = {}
    main = long[long.metric == "main_score"]
    for mode in sorted(set(main["mode"]), key=mode_order):
        part = main[main["mode"] == mode]
        table = part.pivot_table(index="model", columns="task", values="value", aggfunc="first")
        table = table.reindex(index=model_order(table.index, baseline, keys), columns=sorted(table.columns))
        for suite in _suites_of(table.columns, suites):
            cols = table.reindex(columns=suite.tasks)
            table[f"mean({suite.name})"] = cols.mean(axis=1).where(cols.notna().all(axis=1))
        table.columns.name = None
        table.index.name = "model"
        tables[mode] = table
    return tables


def task_columns(table: pd.DataFrame) -> list[str]:
    """The per-task columns of a score or rank table (not the aggregates)."""
    return [c for c in table.columns if not (c.endswith(")") and "(" in c)]


def rank_table(scores: pd.DataFrame, suites: dict[str, SuiteSpec]) -> pd.DataFrame:
    """Ranks per task (1 = best main score; ties share the better rank, models without the task
    are empty), then per suite that shares a task: ``mean rank(<suite>)``, empty unless the model
    has every task of the suite, and ``won(<suite>)``, the number of the suite's tasks where the
    model ranks first (a count over the tasks it has)."""
    tasks = task_columns(scores)
    ranks = scores[tasks].rank(axis=0, ascending=False, method="min")
    out = ranks.copy()
    for suite in _suites_of(tasks, suites):
        cols = ranks.reindex(columns=suite.tasks)
        out[f"mean rank({suite.name})"] = cols.mean(axis=1).where(cols.notna().all(axis=1))
        out[f"won({suite.name})"] = (cols == 1).sum(axis=1).astype(int)
    return out


# Modes whose main scores a suite aggregate pools: DataComp averages zero-shot classification
# and retrieval (Flickr, MSCOCO, WinoGAViL) results together.
ZERO_SHOT_MODES = ("zeroshot", "retrieval")


def aggregate_tables(
    long: pd.DataFrame, suites: dict[str, SuiteSpec], baseline: str | None = None, keys: dict[str, tuple] | None = None
) -> dict[str, pd.DataFrame]:
    """Per suite with ``aggregates``, a models x aggregates table: each the mean of its tasks'
    zero-shot main scores (zero-shot and retrieval results pooled), empty unless the model has
    every task of that aggregate. An aggregate no model has in full is left out, and so is a
    suite with none left (a report of a few tasks shows no empty DataComp table)."""
    main = long[(long.metric == "main_score") & long["mode"].isin(ZERO_SHOT_MODES)]
    scores = main.pivot_table(index="model", columns="task", values="value", aggfunc="first")
    out = {}
    for suite in sorted(suites.values(), key=lambda s: s.name):
        if not suite.aggregates or not set(suite.tasks) & set(scores.columns):
            continue
        table = pd.DataFrame(index=pd.Index(model_order(scores.index, baseline, keys), name="model"))
        for name, tasks in suite.aggregate_tasks().items():
            cols = scores.reindex(index=table.index, columns=tasks)
            mean = cols.mean(axis=1).where(cols.notna().all(axis=1))
            if mean.notna().any():
                table[name] = mean
        if len(table.columns):
            out[suite.name] = table
    return out
