"""A Report as one self-contained html page: inline CSS and JS, plots as base64 PNG, no network.

Every table sorts on a click of a column header. The page's URL hash ``#sort=TABLE:COLUMN``
(optionally ``:asc`` or ``:desc``) clicks that header once the page loaded, through the same
handler, so a link can open the page sorted, and a browser test can check the handler. On load
the page also records in ``body[data-plots-loaded]`` how many of its plots decoded
(``naturalWidth > 0``).
"""

from __future__ import annotations

import base64
import html
import math

import pandas as pd

import evalbench
from evalbench.report.build import Report
from evalbench.report.plots import CURVES_FOLDER, INSTALL_HINT, have_matplotlib, report_plots
from evalbench.report.published import delta_points, published_legend, published_notes
from evalbench.report.tables import mode_label, task_columns
from evalbench.report.text import delta_notes, delta_text, is_significant, significance_legend

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em}
.meta,.legend,.note{color:#555}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0 1em;font-variant-numeric:tabular-nums}
th,td{padding:.25em .6em;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th:first-child,td:first-child,tbody th{text-align:left}
thead th{cursor:pointer;user-select:none;background:#f6f6f6;position:sticky;top:0}
thead th:hover{background:#ececec}
thead th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
thead th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
th.agg,td.agg{border-left:2px solid #ccc}
td.best{font-weight:700}
tr.baseline th{font-style:italic}
td.pos.sig{background:#a9dcae}td.pos{background:#e7f5e8}
td.neg.sig{background:#f2a7a7}td.neg{background:#fbe9e9}
td.zero{background:#f3f3f3}
td.flag{background:#fde2b5;font-weight:700}
.swatch{display:inline-block;padding:0 .5em;margin-right:.4em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
"""

JS = """
(function () {
  "use strict";
  function value(row, i) {
    var cell = row.cells[i];
    if (!cell.hasAttribute("data-value")) return cell.textContent.trim();
    var v = cell.getAttribute("data-value");
    return v === "" ? null : parseFloat(v);
  }
  function sortByHeader(th) {
    var table = th.closest("table"), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var first = th.getAttribute("data-first") || "descending";
    var current = th.getAttribute("aria-sort");
    var dir = current ? (current === "descending" ? "ascending" : "descending") : first;
    th.parentNode.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, index), y = value(b, index);
      if (x === null || y === null) return (x === null) - (y === null);  /* gaps last */
      var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return dir === "ascending" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.tabIndex = 0;
    th.addEventListener("click", function () { sortByHeader(th); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); th.click(); } });
  });
  function sortFromHash() {
    var m = /^#sort=([^:]+):([^:]+)(?::(asc|desc))?$/.exec(decodeURIComponent(location.hash));
    if (!m) return;
    var table = document.getElementById(m[1]);
    if (!table) return;
    var th = Array.prototype.find.call(table.tHead.rows[0].cells, function (h) { return h.getAttribute("data-key") === m[2]; });
    if (!th) return;
    var want = m[3] ? (m[3] === "asc" ? "ascending" : "descending") : null;
    th.click();
    if (want && th.getAttribute("aria-sort") !== want) th.click();
    document.body.setAttribute("data-sorted-by", m[1] + ":" + m[2] + ":" + th.getAttribute("aria-sort"));
  }
  sortFromHash();
  window.addEventListener("hashchange", sortFromHash);
  window.addEventListener("load", function () {
    var imgs = document.querySelectorAll("img.plot"), ok = 0;
    imgs.forEach(function (img) {
      img.setAttribute("data-natural-width", String(img.naturalWidth));
      if (img.complete && img.naturalWidth > 0) ok += 1;
    });
    document.body.setAttribute("data-plots-loaded", String(ok));
    document.body.setAttribute("data-plots-total", String(imgs.length));
  });
})();
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _attr_value(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def _table(table_id: str, columns: list[tuple[str, str, str]], rows: list[tuple[str, str, list[str]]]) -> str:
    """``columns``: (key, label, extra th attributes); ``rows``: (model, tr class, td html)."""
    head = "".join(f'<th data-key="{_e(k)}"{a}>{_e(label)}</th>' for k, label, a in columns)
    body = "".join(
        f'<tr data-model="{_e(model)}" class="{cls}"><th scope="row">{_e(model)}</th>{"".join(cells)}</tr>'
        for model, cls, cells in rows
    )
    return (f'<div class="scroll"><table class="sortable" id="{_e(table_id)}"><thead><tr>'
            f'<th data-key="model" data-first="ascending">model</th>{head}</tr></thead><tbody>{body}</tbody></table></div>')


def _with_step(report: Report, columns: list, rows: list) -> tuple[list, list]:
    """A first ``step`` column (sortable as a number; empty for models without a step) when some
    model is a checkpoint."""
    steps = report.steps
    if not steps:
        return columns, rows
    cells = {m: (f'<td data-value="{steps[m]}">{steps[m]}</td>' if m in steps else '<td data-value=""></td>')
             for m, _, _ in rows}
    return ([("step", "step", ' data-first="ascending"')] + columns,
            [(m, cls, [cells[m]] + list(tds)) for m, cls, tds in rows])


def _is_agg(col: str) -> bool:
    return col.endswith(")") and "(" in col


def _score_table(report: Report, mode: str) -> str:
    table, ranks = report.scores[mode], report.ranks[mode]
    columns = [(c, c, ' class="agg"' if _is_agg(c) else f' title="main metric: {_e(report.main_metric.get(c, ""))}"')
               for c in table.columns]
    rows = []
    for model in table.index:
        cells = []
        for c in table.columns:
            v = table.at[model, c]
            best = c in ranks.columns and ranks.at[model, c] == 1
            cls = " ".join(x for x in ("agg" if _is_agg(c) else "", "best" if best else "") if x)
            text = "" if pd.isna(v) else f"{v * 100:.2f}"
            cells.append(f'<td class="{cls}" data-value="{_attr_value(v)}">{text}</td>')
        rows.append((model, "baseline" if model == report.baseline else "", cells))
    return _table(f"scores-{mode}", *_with_step(report, columns, rows))


def _rank_table(report: Report, mode: str) -> str:
    ranks = report.ranks[mode]
    columns = [(c, c, (' class="agg"' if _is_agg(c) else "") + ("" if c.startswith("won(") else ' data-first="ascending"'))
               for c in ranks.columns]
    rows = []
    for model in ranks.index:
        cells = []
        for c in ranks.columns:
            v = ranks.at[model, c]
            text = "" if pd.isna(v) else (f"{v:.2f}" if c.startswith("mean rank(") else f"{v:.0f}")
            cells.append(f'<td class="{"agg" if _is_agg(c) else ""}" data-value="{_attr_value(v)}">{text}</td>')
        rows.append((model, "baseline" if model == report.baseline else "", cells))
    return _table(f"ranks-{mode}", *_with_step(report, columns, rows))


def _delta_cell(row) -> str:
    if row is None:
        return '<td data-value=""></td>'
    sign = "pos" if row["delta"] > 0 else ("neg" if row["delta"] < 0 else "zero")
    sig = " sig" if is_significant(row["significant"]) else ""
    tip = [f"{row['model']} {row['score'] * 100:.2f} vs {row['baseline']} {row['baseline_score'] * 100:.2f}"]
    if row["p_value"] is not None and pd.notna(row["p_value"]):
        tip.append(f"McNemar p = {row['p_value']:.3g}")
    if row["note"]:
        tip.append(row["note"])
    return f'<td class="{sign}{sig}" data-value="{_attr_value(row["delta"])}" title="{_e("; ".join(tip))}">{_e(delta_text(row))}</td>'


def _delta_table(report: Report, mode: str) -> str:
    part = report.deltas[report.deltas["mode"] == mode]
    tasks = task_columns(report.scores[mode])
    by_key = {(r["model"], r["task"]): r for r in part.to_dict("records")}
    models = [m for m in report.scores[mode].index if m != report.baseline]
    rows = [(m, "", [_delta_cell(by_key.get((m, t))) for t in tasks]) for m in models]
    return _table(f"deltas-{mode}", *_with_step(report, [(t, t, "") for t in tasks], rows))


def _published_section(report: Report) -> str:
    """Published figures beside ours: one row per (model, task); the delta cell has class
    ``flag`` past the tolerance."""
    table = report.published
    if table.empty:
        return ('<section id="published"><h2>Published figures</h2><p class="note">No record of an open_clip '
                "ARCH@TAG checkpoint on a task of the published table.</p></section>")
    columns = [(k, k, "") for k in ("task", "mode", "metric", "ours", "published", "delta")]
    rows = []
    for r in table.itertuples():
        pct = ("" if v is None else f"{v * 100:.2f}" for v in (r.value, r.published))
        cells = [f"<td>{_e(x)}</td>" for x in (r.task, r.mode, r.metric)]  # sorted as text
        cells += [f'<td data-value="{_attr_value(v)}">{text}</td>' for v, text in zip((r.value, r.published), pct)]
        cells.append(f'<td class="{"flag" if r.flagged else ""}" data-value="{_attr_value(r.delta)}" title="{_e(r.note)}">'
                     f"{_e(delta_points(r.delta, r.flagged))}</td>")
        rows.append((r.model, "", cells))
    notes = "".join(f"<li>{_e(n)}</li>" for n in published_notes(table))
    return (f'<section id="published"><h2>Published figures (%)</h2>'
            f'<p class="legend">{_e(published_legend(report.published_tolerance))}.</p>'
            f'{_table("published", columns, rows)}' + (f'<ul class="note">{notes}</ul>' if notes else "") + "</section>")


LEGEND = ('<p class="legend"><span class="swatch" style="background:#a9dcae">better, significant</span>'
          '<span class="swatch" style="background:#e7f5e8">better</span>'
          '<span class="swatch" style="background:#fbe9e9">worse</span>'
          '<span class="swatch" style="background:#f2a7a7">worse, significant</span></p>')


def _figures(plots: dict[str, bytes]) -> str:
    figures = []
    for name, png in plots.items():
        data = base64.b64encode(png).decode("ascii")
        figures.append(f'<figure><img class="plot" alt="{_e(name)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_e(name)}</figcaption></figure>")
    return "".join(figures)


def _plots_section(plots: dict[str, bytes] | None) -> str:
    if plots is None:
        return f'<p class="note" id="no-plots">No plots: matplotlib is not installed ({_e(INSTALL_HINT)}).</p>'
    return _figures({k: v for k, v in plots.items() if not k.startswith(CURVES_FOLDER)})


def _curves_section(plots: dict[str, bytes] | None) -> str:
    """Main score against step, one line per run, per task and suite mean (present when some run
    has two steps or more; without matplotlib the plots section says so, once)."""
    curves = {k: v for k, v in (plots or {}).items() if k.startswith(CURVES_FOLDER)}
    if not curves:
        return ""
    return ('<section id="curves"><h2>Curves over training steps</h2><p class="note">Main score (%) against '
            "the checkpoint's step, one line per run; a suite mean only at steps with every task of the suite.</p>"
            f"{_figures(curves)}</section>")


def render_html(report: Report) -> str:
    """The whole page as a string; it needs nothing but itself to open from disk."""
    if report.long.empty:
        sections = "<p>No results.</p>"
    else:
        sections = ""
        for mode in report.scores:
            label = _e(mode_label(mode))
            sections += f'<section id="mode-{_e(mode)}"><h2>{label}</h2><h3>Main score (%)</h3>'
            sections += (f'<p class="note">Bold: best per task. mean(suite) is empty unless the model has every '
                         f'task of the suite.</p>{_score_table(report, mode)}')
            sections += f"<h3>Rank per task (1 = best)</h3>{_rank_table(report, mode)}"
            if report.deltas is not None and (report.deltas["mode"] == mode).any():
                sections += (f"<h3>Delta vs {_e(report.baseline)} (points)</h3>"
                             f'<p class="legend">{_e(significance_legend(report))}.</p>{LEGEND}{_delta_table(report, mode)}')
            sections += "</section>"
        if report.deltas is not None:
            notes = "".join(f"<li>{_e(n)}</li>" for n in delta_notes(report))
            sections += f'<p class="note">No interval:</p><ul class="note">{notes}</ul>' if notes else ""
        if report.published is not None:
            sections += _published_section(report)
        plots = report_plots(report) if have_matplotlib() else None
        sections += _curves_section(plots)
        sections += f'<section id="plots"><h2>Plots</h2>{_plots_section(plots)}</section>'
    meta = f"{len(report.models)} models, {len(report.tasks)} tasks"
    if report.baseline:
        meta += f"; baseline {report.baseline}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>evalbench report</title><style>{CSS}</style></head>
<body>
<h1>evalbench report</h1>
<p class="meta">{_e(meta)}. Models: {_e(", ".join(report.models))}. Made by evalbench {_e(evalbench.__version__)}; click a column header to sort.</p>
{sections}
<script>{JS}</script>
</body></html>
"""
