"""Report figures as PNG bytes. matplotlib is optional (the ``report`` extra) and imported here
only, lazily; callers check :func:`have_matplotlib` or catch ImportError."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from evalbench.errors import EvalbenchError
from evalbench.report.build import Report
from evalbench.report.tables import mode_label, task_columns

INSTALL_HINT = "pip install 'evalbench[report]'"
# Curves over training steps are named CURVES_FOLDER + <task or mean-suite>.png.
CURVES_FOLDER = "curves/"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _slug(mode: str) -> str:
    return mode_label(mode).replace("@", "")


def _colours(models: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(models) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(models)}


def score_bars(table: pd.DataFrame, title: str) -> bytes:
    """Grouped bars: one group per task, one bar per model, main score in percent."""
    tasks, models = task_columns(table), list(table.index)
    fig = _figure(min(14.0, max(5.0, 0.5 + len(tasks) * (0.25 * len(models) + 0.4))), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    colours = _colours(models)
    for i, model in enumerate(models):
        values = table.loc[model, tasks].astype(float).to_numpy() * 100
        ax.bar(np.arange(len(tasks)) + (i - (len(models) - 1) / 2) * width, np.nan_to_num(values), width,
               label=model, color=colours[model])
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=30 if len(tasks) > 4 else 0, ha="right" if len(tasks) > 4 else "center")
    ax.set_ylabel("main score (%)")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def zeroshot_vs_probe(zeroshot: pd.DataFrame, probe: pd.DataFrame) -> bytes:
    """One point per (model, task) with both results: zero-shot (x) against linear probe (y)."""
    models = [m for m in zeroshot.index if m in probe.index]
    tasks = [t for t in task_columns(zeroshot) if t in probe.columns]
    fig = _figure(5.5, 4.5)
    ax = fig.add_subplot()
    colours = _colours(models)
    for model in models:
        x = zeroshot.loc[model, tasks].astype(float).to_numpy() * 100
        y = probe.loc[model, tasks].astype(float).to_numpy() * 100
        ax.scatter(x, y, label=model, color=colours[model], s=28)
        if len(models) * len(tasks) <= 40:
            for t, xi, yi in zip(tasks, x, y):
                if np.isfinite(xi) and np.isfinite(yi):
                    ax.annotate(t, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([0, 100], [0, 100], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("zero-shot main score (%)")
    ax.set_ylabel("linear-probe main score (%)")
    ax.set_title("zero-shot vs linear probe")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig)


def forest(deltas: pd.DataFrame, title: str) -> bytes:
    """Deltas in points with their intervals, one row per (task, model); a filled marker is
    significant, a hollow one is not, a grey one has no test."""
    rows = deltas.reset_index(drop=True)
    fig = _figure(6.5, max(2.0, 0.6 + 0.28 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows.itertuples()):
        d = r.delta * 100
        if r.ci_low is not None and pd.notna(r.ci_low):
            ax.plot([r.ci_low * 100, r.ci_high * 100], [yi, yi], color="black", lw=1.2)
        colour = "grey" if r.significant is None else ("tab:green" if d >= 0 else "tab:red")
        ax.plot([d], [yi], "o", color=colour, mfc=colour if r.significant else "white", ms=6)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_yticks(y, [f"{r.task} · {r.model}" for r in rows.itertuples()], fontsize=8)
    ax.set_xlabel(f"delta vs {rows['baseline'].iloc[0]} (points)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def curve_figure(points: pd.DataFrame, title: str):
    """A matplotlib Figure of main score (%) against step: one axes per mode of ``points`` (rows of
    :attr:`Report.curves` for one column), one line per run through its steps in order."""
    from matplotlib.ticker import MaxNLocator

    modes = list(dict.fromkeys(points["mode"]))
    runs = sorted(set(points["run"]))
    fig = _figure(min(14.0, 1.0 + 4.2 * len(modes)), 3.4)
    colours = _colours(runs)
    for i, mode in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), i + 1)
        for run in runs:
            part = points[(points["mode"] == mode) & (points["run"] == run)].sort_values("step")
            if len(part):
                ax.plot(part["step"].to_numpy(), part["value"].to_numpy() * 100, "o-", ms=4, label=run,
                        color=colours[run])
        ax.set_title(f"{title} · {mode_label(mode)}", fontsize="medium")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.set_xlabel("step")
        ax.set_ylabel("main score (%)")
        ax.grid(alpha=0.3)
    fig.axes[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _curve_name(column: str) -> str:
    return CURVES_FOLDER + (re.sub(r"[^A-Za-z0-9._-]+", "-", column).strip("-") or "task") + ".png"


def report_curves(report: Report) -> dict[str, bytes]:
    """``curves/<task>.png`` per task and ``curves/mean-<suite>.png`` per suite mean: main score
    against step, one line per run, from :attr:`Report.curves`; nothing unless some run has two
    steps or more. ImportError without matplotlib."""
    from evalbench.report.runs import has_curves

    if report.curves is None or report.curves.empty or not has_curves(report.checkpoints):
        return {}
    return {_curve_name(column): _png(curve_figure(part, column))
            for column, part in report.curves.groupby("column", sort=True)}


def report_plots(report: Report) -> dict[str, bytes]:
    """File name -> PNG: ``scores-<mode>.png`` per mode, ``zeroshot-vs-linear-probe.png`` when
    both modes exist, ``deltas-<mode>.png`` per mode with deltas, and the curves over training
    steps of :func:`report_curves`. ImportError without matplotlib."""
    plots = {}
    for mode, table in report.scores.items():
        plots[f"scores-{_slug(mode)}.png"] = score_bars(table, f"{mode_label(mode)}: main score per task")
    if "zeroshot" in report.scores and "linear_probe" in report.scores:
        plots["zeroshot-vs-linear-probe.png"] = zeroshot_vs_probe(report.scores["zeroshot"], report.scores["linear_probe"])
    if report.deltas is not None:
        for mode in report.scores:
            part = report.deltas[report.deltas["mode"] == mode]
            if len(part):
                plots[f"deltas-{_slug(mode)}.png"] = forest(part, f"{mode_label(mode)}: delta vs {report.baseline}")
    plots.update(report_curves(report))
    return plots


def write_plots(report: Report, folder: Path) -> list[Path]:
    """Write :func:`report_plots` into ``folder``; EvalbenchError without matplotlib."""
    if not have_matplotlib():
        raise EvalbenchError(f"--plots: needs matplotlib ({INSTALL_HINT})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, png in report_plots(report).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png)
        written.append(folder / name)
    return written
