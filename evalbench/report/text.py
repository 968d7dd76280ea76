"""A Report as text: markdown, csv, latex, json; html is in :mod:`evalbench.report.html`."""

from __future__ import annotations

import json
import math

import pandas as pd

from evalbench.report.build import Report, build_report
from evalbench.report.compare import CompareOptions
from evalbench.report.formats import renderer
from evalbench.report.published import (
    published_cells, published_json, published_legend, published_long_rows, published_markdown,
)
from evalbench.report.tables import mode_label, mode_order, task_columns
from evalbench.tasks.loader import SuiteSpec

def _num(value, fmt: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def score_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Main scores as percent strings with two decimals; missing results are empty."""
    return table.apply(lambda col: col.map(lambda v: _num(v * 100, ".2f") if pd.notna(v) else ""))


def rank_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Ranks and wins as whole numbers, mean ranks with two decimals."""
    def fmt(col):
        spec = ".2f" if col.name.startswith("mean rank(") else ".0f"
        return col.map(lambda v: _num(float(v), spec) if pd.notna(v) else "")
    return table.apply(fmt)


def significance_legend(report: Report) -> str:
    o = report.options
    return (
        f"delta in points against {report.baseline}; [low, high]: {o.level:.0%} paired percentile bootstrap "
        f"interval over test images ({o.resamples} resamples, seed {o.seed}); *: significant at "
        f"{o.alpha:g} (exact McNemar test for acc1 and single-subset matching tasks, the interval excluding 0 "
        "for mean_per_class_recall and macro averages over subsets)"
    )


def is_significant(value) -> bool:
    """True for a significant delta; False for not significant or untested (None)."""
    return value is not None and bool(value)


def delta_text(row, mark: str = "*") -> str:
    """``+1.20 [+0.35, +2.05]*`` from one row of Report.deltas (fractions in, points out)."""
    text = f"{row['delta'] * 100:+.2f}"
    if row["ci_low"] is not None and pd.notna(row["ci_low"]):
        text += f" [{row['ci_low'] * 100:+.2f}, {row['ci_high'] * 100:+.2f}]"
    return text + (mark if is_significant(row["significant"]) else "")


def delta_cells(report: Report, mode: str, mark: str = "*") -> pd.DataFrame:
    """Models (not the baseline) x tasks of delta strings for one mode; gaps where either lacks
    the task."""
    part = report.deltas[report.deltas["mode"] == mode]
    table = report.scores[mode]
    models = [m for m in table.index if m != report.baseline]
    cells = pd.DataFrame("", index=pd.Index(models, name="model"), columns=task_columns(table))
    for _, row in part.iterrows():
        cells.loc[row["model"], row["task"]] = delta_text(row, mark)
    return cells


def delta_notes(report: Report) -> list[str]:
    """One line per (task, reason) where a delta has no interval."""
    part = report.deltas[report.deltas["note"] != ""]
    seen = dict.fromkeys(f"{r.task} ({mode_label(r.mode)}): {r.note}" for r in part.itertuples())
    return list(seen)


def with_step(cells: pd.DataFrame, report: Report) -> pd.DataFrame:
    """``cells`` (models x columns of strings) with a first column ``step`` when some model is a
    checkpoint with a step (empty for the others); unchanged otherwise."""
    steps = report.steps
    if not steps:
        return cells
    out = cells.copy()
    out.insert(0, "step", [str(steps[m]) if m in steps else "" for m in out.index])
    return out


def _md(cells: pd.DataFrame) -> str:
    """A markdown table of preformatted strings (tabulate would reparse "+1.50" as 1.5)."""
    return cells.to_markdown(disable_numparse=True, colalign=("left",) + ("right",) * len(cells.columns))


def aggregate_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Suite aggregates as percent strings; empty where a model lacks a task of the aggregate."""
    return score_cells(table)


def worst_group_cells(report: Report) -> pd.DataFrame:
    """One row per (task, model, worst-group metric): value and interval in percent."""
    def text(r) -> str:
        value = f"{r.value * 100:.2f}"
        if r.ci_low is not None and pd.notna(r.ci_low):
            value += f" [{r.ci_low * 100:.2f}, {r.ci_high * 100:.2f}]"
        return value
    table = report.worst_groups
    return pd.DataFrame({
        "task": table["task"], "model": table["model"], "metric": table["metric"],
        "value": [text(r) for r in table.itertuples()], "groups": table["groups"].astype(str),
    }).set_index("task")


def per_group_cells(report: Report) -> pd.DataFrame:
    """Tasks x groups x models, one column per metric in percent, and the group's size."""
    table = report.per_group
    wide = table.pivot_table(index=["task", "model", "group", "n"], columns="metric", values="value",
                             aggfunc="first").reset_index()
    for metric in [c for c in wide.columns if c not in ("task", "model", "group", "n")]:
        wide[metric] = wide[metric].map(lambda v: _num(v * 100, ".2f") if pd.notna(v) else "")
    wide["n"] = wide["n"].astype(int).astype(str)
    wide.columns.name = None
    return wide.set_index("task")


def worst_group_legend(report: Report) -> str:
    o = report.options
    return (f"worst-group metrics (%) with a {o.level:.0%} percentile bootstrap interval resampling images "
            f"within each group ({o.resamples} resamples, seed {o.seed})")


def render_md(report: Report) -> str:
    parts = []
    for suite, table in report.aggregates.items():
        parts.append(f"### {suite} aggregates (zero-shot main score, %)\n\n{_md(aggregate_cells(table))}\n")
    for mode in report.scores:
        label = mode_label(mode)
        parts.append(f"### {label} (main score, %)\n\n{_md(with_step(score_cells(report.scores[mode]), report))}\n")
        if len(report.scores[mode]) > 1:  # ranks of a lone model say nothing
            ranks = with_step(rank_cells(report.ranks[mode]), report)
            parts.append(f"### {label} (rank per task, 1 = best)\n\n{_md(ranks)}\n")
        if report.deltas is not None and (report.deltas["mode"] == mode).any():
            parts.append(f"### {label} (delta vs {report.baseline}, points)\n\n"
                         f"{_md(with_step(delta_cells(report, mode), report))}\n")
    if report.worst_groups is not None and not report.worst_groups.empty:
        parts.append(f"### {worst_group_legend(report)}\n\n{_md(worst_group_cells(report))}\n")
    if report.show_per_group and report.per_group is not None and not report.per_group.empty:
        parts.append(f"### per group (%)\n\n{_md(per_group_cells(report))}\n")
    if report.deltas is not None:
        notes = "".join(f"- {line}\n" for line in delta_notes(report))
        parts.append(f"{significance_legend(report)}.\n" + (f"\nNo interval:\n\n{notes}" if notes else ""))
    if report.published is not None:
        parts.append(published_markdown(report.published, report.published_tolerance))
    return "\n".join(parts)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(char, char) for char in str(text))


def _latex(cells: pd.DataFrame, caption: str) -> str:
    safe = cells.copy()
    safe.index = [_latex_escape(i) for i in safe.index]
    safe.columns = [_latex_escape(c) for c in safe.columns]
    safe.index.name = "model"
    return safe.to_latex(escape=False, caption=_latex_escape(caption))


def render_latex(report: Report) -> str:
    parts = []
    for mode in report.scores:
        label = mode_label(mode)
        parts.append(_latex(with_step(score_cells(report.scores[mode]), report), f"{label} (main score, %)"))
        if len(report.scores[mode]) > 1:
            parts.append(_latex(with_step(rank_cells(report.ranks[mode]), report), f"{label} (rank per task, 1 = best)"))
        if report.deltas is not None and (report.deltas["mode"] == mode).any():
            cells = with_step(delta_cells(report, mode, mark="$^{*}$"), report)
            parts.append(_latex(cells, f"{label}: {significance_legend(report)}"))
    if report.published is not None and not report.published.empty:
        cells = published_cells(report.published).set_index("model").map(_latex_escape)  # mean_recall@1
        parts.append(_latex(cells, f"published figures (%): {published_legend(report.published_tolerance)}"))
    return "\n".join(parts)


def _aggregate_rows(report: Report) -> list[dict]:
    """Suite means, ranks, mean ranks and wins as long-table rows (``task`` is the suite for
    suite rows)."""
    rows = []
    for mode, table in report.scores.items():
        ranks = report.ranks[mode]
        for model in table.index:
            for col in table.columns:
                suite = col[len("mean("):-1] if col.startswith("mean(") else None
                if suite is not None and pd.notna(table.at[model, col]):
                    rows.append((model, suite, mode, "suite_mean", table.at[model, col]))
            for col in ranks.columns:
                value = ranks.at[model, col]
                if pd.isna(value):
                    continue
                if col.startswith("mean rank("):
                    rows.append((model, col[len("mean rank("):-1], mode, "suite_mean_rank", value))
                elif col.startswith("won("):
                    rows.append((model, col[len("won("):-1], mode, "suite_won", value))
                else:
                    rows.append((model, col, mode, "rank", value))
    for suite, table in report.aggregates.items():
        for model in table.index:
            for name in table.columns:
                if pd.notna(table.at[model, name]):
                    rows.append((model, f"{suite}:{name}", "zeroshot+retrieval", "aggregate", table.at[model, name]))
    if report.worst_groups is not None:
        for r in report.worst_groups.itertuples():
            for metric, value in ((f"{r.metric}_ci_low", r.ci_low), (f"{r.metric}_ci_high", r.ci_high)):
                if value is not None and pd.notna(value):
                    rows.append((r.model, r.task, r.mode, metric, value))
    return [dict(zip(["model", "task", "mode", "metric", "value"], r)) for r in rows]


def _delta_rows(report: Report) -> list[dict]:
    rows = []
    for r in report.deltas.itertuples():
        for metric, value in (("delta", r.delta), ("delta_ci_low", r.ci_low), ("delta_ci_high", r.ci_high),
                              ("delta_p_value", r.p_value), ("delta_significant", r.significant)):
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                rows.append({"model": r.model, "task": r.task, "mode": r.mode, "metric": metric,
                             "value": float(value)})
    return rows


def render_csv(report: Report) -> str:
    """The long table (every metric, fractions), then derived rows: ``rank``, ``suite_mean``,
    ``suite_mean_rank``, ``suite_won``, with a baseline ``delta*`` rows and, with published
    figures, ``published`` and ``published_delta`` rows. Every row's ``step`` is its model's
    (empty for models without one)."""
    extra = _aggregate_rows(report) + (_delta_rows(report) if report.deltas is not None else [])
    extra += published_long_rows(report.published) if report.published is not None else []
    columns = [c for c in report.long.columns if c != "step"]
    table = pd.concat([report.long[columns], pd.DataFrame(extra, columns=columns)], ignore_index=True)
    table["step"] = table["model"].map(report.steps).astype("Int64")
    return table.to_csv(index=False)


def _json_table(table: pd.DataFrame) -> dict:
    return {m: {c: (None if pd.isna(v) else float(v)) for c, v in row.items()} for m, row in table.iterrows()}


def report_dict(report: Report) -> dict:
    """The report as plain JSON-able data (fractions; None for gaps)."""
    modes = {}
    for mode in sorted(report.scores, key=mode_order):
        entry = {"label": mode_label(mode), "scores": _json_table(report.scores[mode]),
                 "ranks": _json_table(report.ranks[mode])}
        if report.deltas is not None:
            part = report.deltas[report.deltas["mode"] == mode].drop(columns="mode")
            entry["deltas"] = [
                {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for row in part.astype(object).to_dict("records")
            ]
        modes[mode] = entry
    o = report.options
    return {
        "models": report.models,
        "tasks": report.tasks,
        "main_metric": dict(sorted(report.main_metric.items())),
        "baseline": report.baseline,
        "checkpoints": {m.model: {"run": m.run, "step": int(m.step)} for m in report.checkpoints.itertuples()},
        "statistics": {"interval": "paired percentile bootstrap over test images", "level": o.level,
                       "resamples": o.resamples, "seed": o.seed, "alpha": o.alpha,
                       "significance": {"acc1": "exact McNemar", "mean_per_class_recall": "interval excludes 0",
                                        "matching (one subset)": "exact McNemar",
                                        "matching (macro over subsets)": "interval excludes 0"}},
        "modes": modes,
        "aggregates": {suite: _json_table(table) for suite, table in report.aggregates.items()},
        "worst_groups": [] if report.worst_groups is None else [
            {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}
            for row in report.worst_groups.astype(object).to_dict("records")
        ],
        **({"published": published_json(report.published, report.published_tolerance)}
           if report.published is not None else {}),
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2) + "\n"


def render_md_or_empty(report: Report) -> str:
    return "No results.\n" if report.long.empty else render_md(report)


def render_latex_or_empty(report: Report) -> str:
    return "No results.\n" if report.long.empty else render_latex(report)


def render_report(report: Report, fmt: str = "md") -> str:
    """A built Report as text in ``fmt`` (see :func:`render`); EvalbenchError for an unknown format."""
    return renderer(fmt)(report)


def render(
    records: list,
    suites: dict[str, SuiteSpec],
    fmt: str = "md",
    baseline: str | None = None,
    options: CompareOptions | None = None,
    published_tolerance: float | None = None,
    per_group: bool = False,
) -> str:
    """The report as text (``per_group``: md also shows each group's values). ``md``/``latex``: per mode, main scores (%), ranks and, with a
    ``baseline``, deltas in points with intervals; ``csv``: the long table of every metric
    (fractions) plus derived rows; ``json``: every table as data; ``html``: one self-contained
    page with sortable tables and plots. With ``published_tolerance`` (points), every format also
    shows open_clip's published figures beside its checkpoints' records; ``per_group`` adds each
    group's values. Raises EvalbenchError for an unknown format or baseline, a negative
    tolerance, or records of one task whose per-sample predictions differ in length."""
    renderer(fmt)  # an unknown format fails before the records are read
    return render_report(build_report(records, suites, baseline, options, published_tolerance, per_group), fmt)
