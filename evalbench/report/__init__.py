"""Records -> pandas -> reports: md, csv, latex, json and a self-contained html page.

Layout: ``tables`` (main scores, suite means, ranks), ``stats`` (paired bootstrap, McNemar),
``compare`` (deltas against a baseline), ``build`` (a Report from records), ``text`` (md, csv,
latex, json), ``html`` and ``plots`` (matplotlib, optional).
"""

from evalbench.report.build import Report, build_report, load_records
from evalbench.report.compare import CompareOptions, baseline_deltas
from evalbench.report.tables import long_table, main_score_tables, mode_label, mode_order, rank_table
from evalbench.report.text import FORMATS, render, render_report

__all__ = [
    "FORMATS", "CompareOptions", "Report", "baseline_deltas", "build_report", "load_records", "long_table",
    "main_score_tables", "mode_label", "mode_order", "rank_table", "render", "render_report",
]
