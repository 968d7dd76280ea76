"""Records -> pandas -> comparison tables (markdown, csv, latex)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evalbench.errors import EvalbenchError
from evalbench.records import MODES, iter_records, read_record
from evalbench.tasks.loader import SuiteSpec

FORMATS = ("md", "csv", "latex")
SCALAR_METRICS = ("acc1", "acc5", "mean_per_class_recall", "main_score")


def mode_order(mode: str) -> tuple:
    """zeroshot, linear_probe, then k-shot probes by k."""
    base, _, k = mode.partition("@")
    return (MODES.index(base) if base in MODES else len(MODES), int(k) if k.isdigit() else -1, mode)


def mode_label(mode: str) -> str:
    """Short column labels: ``linear_probe@4`` -> ``lp@4``."""
    return mode.replace("linear_probe@", "lp@")


def long_table(records: list[dict]) -> pd.DataFrame:
    """One row per (model, task, mode, metric) with the metric's value (a fraction)."""
    rows = [
        {"model": r["model"]["name"], "task": r["task"]["name"], "mode": mode, "metric": metric, "value": value}
        for r in records
        for mode, metrics in r.get("results", {}).items()
        for metric, value in metrics.items()
        if metric in SCALAR_METRICS
    ]
    return pd.DataFrame(rows, columns=["model", "task", "mode", "metric", "value"])


def load_records(results_dir: Path | None = None, paths: list[Path] | None = None) -> list[dict]:
    if paths is not None:
        return [r for r in (read_record(p) for p in paths) if r is not None]
    if not Path(results_dir).is_dir():
        raise EvalbenchError(f"--results-dir: folder not found: {results_dir}")
    return [r for _, r in iter_records(results_dir)]


def main_score_tables(long: pd.DataFrame, suites: dict[str, SuiteSpec]) -> dict[str, pd.DataFrame]:
    """Per mode, a models x tasks table of main_score, plus a ``mean(<suite>)`` column for each
    suite that shares a task with the table. A suite mean is empty unless the model has every
    task of the suite: never a mean over a subset."""
    tables = {}
    main = long[long.metric == "main_score"]
    for mode in sorted(set(main["mode"]), key=mode_order):
        part = main[main["mode"] == mode]
        table = part.pivot_table(index="model", columns="task", values="value", aggfunc="first")
        table = table.reindex(columns=sorted(table.columns))
        for suite in sorted(suites.values(), key=lambda s: s.name):
            if set(suite.tasks) & set(table.columns):
                cols = table.reindex(columns=suite.tasks)
                table[f"mean({suite.name})"] = cols.mean(axis=1).where(cols.notna().all(axis=1))
        table.columns.name = None
        tables[mode] = table
    return tables


def render(records: list[dict], suites: dict[str, SuiteSpec], fmt: str = "md") -> str:
    """The report as text. ``md`` and ``latex``: main scores in percent, one table per mode;
    ``csv``: the long table of every metric (fractions)."""
    if fmt not in FORMATS:
        raise EvalbenchError(f"--format: unknown format '{fmt}' (use {', '.join(FORMATS)})")
    long = long_table(records)
    if fmt == "csv":
        return long.to_csv(index=False)
    if long.empty:
        return "No results.\n"
    parts = []
    for mode, table in main_score_tables(long, suites).items():
        pct = (table * 100).round(2)
        if fmt == "md":
            parts.append(f"### {mode_label(mode)} (main score, %)\n\n{pct.to_markdown(floatfmt='.2f', missingval='')}\n")
        else:
            parts.append(pct.to_latex(float_format="%.2f", na_rep="", caption=f"{mode_label(mode)} (main score, %)"))
    return "\n".join(parts)
