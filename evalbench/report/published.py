"""Published figures beside a run: ``evalbench report --published``.

For every record whose ``model.spec`` is an open_clip ``ARCH@TAG`` found in the published table
(:mod:`evalbench.published`), the published zero-shot figure of its task and ours minus it.
Everything comes from the records: matched on the model spec and the task name, never the model
or the data.
"""

from __future__ import annotations

import math

import pandas as pd

from evalbench.errors import EvalbenchError
from evalbench.published import SOURCE, lookup, metric, openclip_checkpoint

DEFAULT_TOLERANCE = 0.5  # points
# The result keys that hold a zero-shot result: classification, then retrieval and association
# (which evalbench records under ``retrieval``).
ZERO_SHOT_MODES = ("zeroshot", "retrieval")
COLUMNS = ["model", "task", "mode", "metric", "value", "published", "delta", "flagged", "note"]


def check_tolerance(tolerance: float) -> float:
    """``tolerance`` (points) as a float; EvalbenchError unless it is a finite number >= 0."""
    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise EvalbenchError(f"--published-tolerance: must be a number of points >= 0, got {tolerance!r}")
    return value


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def published_table(records: list[dict], tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """One row per record with a published figure, in the order of ``records``: ``model`` (its
    display name), ``task``, ``mode`` (``zeroshot``, or ``retrieval`` for retrieval tasks),
    ``metric`` (the published figure's), ``value`` (ours, None if the record lacks that metric),
    ``published``, ``delta`` (ours minus published; fractions), ``flagged`` (``|delta|`` more
    than ``tolerance`` points) and ``note`` (why there is no delta, or that the run used a
    subset). Records of other models, of tasks not in the table, or without a zero-shot result
    give no row. EvalbenchError for a negative tolerance."""
    tolerance = check_tolerance(tolerance)
    rows = []
    for record in records:
        checkpoint = openclip_checkpoint(str(record.get("model", {}).get("spec", "")))
        task = record["task"]["name"]
        figure = lookup(*checkpoint, task) if checkpoint else None
        results = record.get("results", {})
        mode = next((m for m in ZERO_SHOT_MODES if m in results), None)
        if figure is None or mode is None:
            continue
        name = metric(task)
        ours = _number(results[mode].get(name))
        notes = []
        if ours is None:
            main = record["task"].get("main_metric", "acc1")
            notes.append(f"the record has no {name} (its main metric is {main}): no difference")
        if record["task"].get("limit"):
            notes.append(f"run on a --limit {record['task']['limit']} subset")
        delta = None if ours is None else ours - figure
        # Rounded so that a difference of exactly the tolerance is not flagged by float noise.
        flagged = delta is not None and round(abs(delta) * 100, 9) > tolerance
        rows.append({"model": record["model"]["name"], "task": task, "mode": mode, "metric": name, "value": ours,
                     "published": figure, "delta": delta, "flagged": flagged, "note": "; ".join(notes)})
    frame = pd.DataFrame(rows, columns=COLUMNS).astype(object)
    return frame.where(frame.notna(), None)  # None, not NaN, where there is no value


def published_long_rows(table: pd.DataFrame) -> list[dict]:
    """Rows for the long csv: metric ``published`` (a fraction) and, where ours has the metric,
    ``published_delta`` (ours minus published, a fraction), for the record's model, task and mode."""
    rows = []
    for r in table.itertuples():
        rows.append({"model": r.model, "task": r.task, "mode": r.mode, "metric": "published", "value": r.published})
        if r.delta is not None:
            rows.append({"model": r.model, "task": r.task, "mode": r.mode, "metric": "published_delta",
                         "value": r.delta})
    return rows


def delta_points(delta: float | None, flagged: bool) -> str:
    """``+1.20 !`` (points, ``!`` past the tolerance); empty without a delta."""
    return "" if delta is None else f"{delta * 100:+.2f}" + (" !" if flagged else "")


def published_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The table as display strings, scores in percent: model, task, mode, metric, ours,
    published, delta."""
    return pd.DataFrame({
        "model": table["model"], "task": table["task"], "mode": table["mode"], "metric": table["metric"],
        "ours": [("" if v is None else f"{v * 100:.2f}") for v in table["value"]],
        "published": [f"{v * 100:.2f}" for v in table["published"]],
        "delta": [delta_points(d, f) for d, f in zip(table["delta"], table["flagged"])],
    })


def published_legend(tolerance: float) -> str:
    return (f"delta: ours minus published, points; !: |delta| > {tolerance:g} points (--published-tolerance). "
            f"Published: {SOURCE}, matched on the record's model spec ARCH@TAG and task name")


def published_notes(table: pd.DataFrame) -> list[str]:
    """``model, task: note`` for every row with a note."""
    return [f"{r.model}, {r.task}: {r.note}" for r in table.itertuples() if r.note]


def published_markdown(table: pd.DataFrame, tolerance: float) -> str:
    """The markdown section: a heading, the table (or a line saying no record matched), the
    legend and the notes."""
    head = "### published (open_clip's zero-shot results, %)\n\n"
    if table.empty:
        return head + ("No record of an open_clip ARCH@TAG checkpoint on a task of the published table "
                       f"({SOURCE}).\n")
    cells = published_cells(table)
    text = cells.to_markdown(index=False, disable_numparse=True, colalign=("left",) * 4 + ("right",) * 3)
    notes = "".join(f"- {line}\n" for line in published_notes(table))
    return f"{head}{text}\n\n{published_legend(tolerance)}.\n" + (f"\n{notes}" if notes else "")


def published_json(table: pd.DataFrame, tolerance: float) -> dict:
    """The comparison as JSON-able data (fractions; None where there is no value)."""
    return {"source": SOURCE, "tolerance_points": tolerance, "rows": table.to_dict("records")}
