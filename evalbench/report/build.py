"""Records -> a Report: every table the formats render, computed once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evalbench.errors import EvalbenchError
from evalbench.records import Record, iter_records, load_record
from evalbench.report.compare import CompareOptions, baseline_deltas
from evalbench.report.groups import per_group_table, worst_group_table
from evalbench.report.published import check_tolerance, published_table
from evalbench.report.runs import checkpoint_models, curve_series, order_keys, resolve_baseline
from evalbench.report.tables import aggregate_tables, long_table, main_score_tables, rank_table
from evalbench.tasks.loader import SuiteSpec


@dataclass
class Report:
    """``long``: every scalar metric, one row per (model, task, mode, metric), fractions.
    ``scores``/``ranks``: per mode, models x tasks (+ suite aggregates). ``deltas``: one row per
    (mode, task, model) against ``baseline`` (None without one). ``main_metric``: per task.
    ``published``: open_clip's published figures beside the records of its checkpoints (see
    :func:`evalbench.report.published.published_table`; None unless asked for), flagged past
    ``published_tolerance`` points.
    ``aggregates``: per suite with aggregates, models x aggregate means (zero-shot modes pooled).
    ``worst_groups``: worst-group metrics with within-group bootstrap intervals; ``per_group``:
    every group's values (rendered only when ``show_per_group``).
    ``checkpoints``: one row per model with a step (``model``, ``run``, ``step``); ``curves``: the
    main scores of those over steps, one row per (mode, column, run, step) (see
    :func:`evalbench.report.runs.curve_series`)."""

    long: pd.DataFrame
    scores: dict[str, pd.DataFrame]
    ranks: dict[str, pd.DataFrame]
    main_metric: dict[str, str]
    baseline: str | None = None
    deltas: pd.DataFrame | None = None
    options: CompareOptions = field(default_factory=CompareOptions)
    published: pd.DataFrame | None = None
    published_tolerance: float | None = None
    aggregates: dict[str, pd.DataFrame] = field(default_factory=dict)
    worst_groups: pd.DataFrame | None = None
    per_group: pd.DataFrame | None = None
    show_per_group: bool = False
    checkpoints: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["model", "run", "step"]))
    curves: pd.DataFrame | None = None

    @property
    def models(self) -> list[str]:
        return sorted(set(self.long["model"]))

    @property
    def tasks(self) -> list[str]:
        return sorted(set(self.long["task"]))

    @property
    def steps(self) -> dict[str, int]:
        """Model -> step, for the models that have one (checkpoints)."""
        return {m.model: int(m.step) for m in self.checkpoints.itertuples()}


def load_records(results_dir: Path | str | None = None, paths: list[Path] | None = None) -> list[Record]:
    """Records from ``paths`` (each must be a valid record), or every record under
    ``results_dir`` (a file that is not a valid record is named in a warning and skipped).
    EvalbenchError if the folder does not exist."""
    if paths is not None:
        return [r for r in (load_record(p) for p in paths) if r is not None]
    if results_dir is None or not Path(results_dir).is_dir():
        raise EvalbenchError(f"--results-dir: folder not found: {results_dir}")
    return [r for _, r in iter_records(results_dir)]


def as_dicts(records: list[Record | dict]) -> list[dict]:
    """Records as plain data, each validated by :class:`Record` (dicts built by hand included)."""
    return [(r if isinstance(r, Record) else Record.from_data(r)).to_dict() for r in records]


def build_report(
    records: list[Record | dict],
    suites: dict[str, SuiteSpec],
    baseline: str | None = None,
    options: CompareOptions | None = None,
    published_tolerance: float | None = None,
    per_group: bool = False,
) -> Report:
    """Everything a report shows; with ``published_tolerance`` (points), also the published
    figures of open_clip checkpoints, differences past it flagged; with ``per_group``, each
    group's values rendered too. ``baseline`` is a model name or ``RUN@STEP``, the checkpoint of
    run RUN at step STEP. Raises EvalbenchError for an unknown ``baseline`` (run or step), a
    negative tolerance, or records of one task whose per-sample predictions differ in length."""
    options = options or CompareOptions()
    records = as_dicts(records)
    baseline = resolve_baseline(records, baseline)
    keys = order_keys(records)
    long = long_table(records)
    scores = main_score_tables(long, suites, baseline, keys)
    checkpoints = checkpoint_models(records)
    main_metric: dict[str, str] = {}
    for r in records:
        main_metric.setdefault(r["task"]["name"], r["task"].get("main_metric", "acc1"))
    published = None
    if published_tolerance is not None:
        published_tolerance = check_tolerance(published_tolerance)
        published = published_table(records, published_tolerance)
    return Report(
        long=long,
        scores=scores,
        ranks={mode: rank_table(table, suites) for mode, table in scores.items()},
        main_metric=main_metric,
        baseline=baseline,
        deltas=baseline_deltas(records, baseline, options) if baseline else None,
        options=options,
        published=published,
        published_tolerance=published_tolerance,
        aggregates=aggregate_tables(long, suites, baseline, keys),
        worst_groups=worst_group_table(records, options),
        per_group=per_group_table(records),
        show_per_group=per_group,
        checkpoints=checkpoints,
        curves=curve_series(scores, checkpoints),
    )
