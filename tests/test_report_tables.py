"""Suite means, ranks, wins, and the md/csv/latex/json renderings, on hand-made records."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from test_report_fixtures import mode_result, plus_right, record, wrong_class

from evalbench.errors import EvalbenchError
from evalbench.report import build_report, render
from evalbench.tasks.loader import SuiteSpec

N, C = 200, 10
SUITES = {"pair": SuiteSpec(name="pair", tasks=["t1", "t2"]), "other": SuiteSpec(name="other", tasks=["zz"])}


def _pred(y: np.ndarray, n_right: int) -> np.ndarray:
    """Right on the first ``n_right`` images."""
    pred = wrong_class(y, C)
    pred[:n_right] = y[:n_right]
    return pred


@pytest.fixture(scope="module")
def records():
    """t1: A 50%, B 65% (B right wherever A is, and on 30 more), C 50%. t2: A 60%, B 55%; C lacks
    t2. A k-shot probe for A and B on t1."""
    y = np.random.default_rng(0).integers(0, C, N)
    a1 = _pred(y, 100)
    kshot = {"main_score": 0.4, "acc1": 0.4, "acc1_std": 0.02, "n": N, "k": 4, "seeds": 3}
    return [
        record("A", "t1", {"zeroshot": mode_result(y, a1, C), "linear_probe@4": kshot}),
        record("B", "t1", {"zeroshot": mode_result(y, plus_right(y, a1, 30, C), C),
                           "linear_probe@4": {**kshot, "main_score": 0.45}}),
        record("C", "t1", {"zeroshot": mode_result(y, np.where(np.arange(N) >= 100, y, wrong_class(y, C)), C)}),
        record("A", "t2", {"zeroshot": mode_result(y, _pred(y, 120), C)}),
        record("B", "t2", {"zeroshot": mode_result(y, _pred(y, 110), C)}),
    ]


def test_suite_mean_only_for_models_with_every_task(records):
    scores = build_report(records, SUITES).scores["zeroshot"]
    assert scores.loc["A", "mean(pair)"] == pytest.approx((0.50 + 0.60) / 2)
    assert scores.loc["B", "mean(pair)"] == pytest.approx((0.65 + 0.55) / 2)
    assert pd.isna(scores.loc["C", "mean(pair)"])  # never a mean over a subset
    assert pd.isna(scores.loc["C", "t2"])
    assert "mean(other)" not in scores.columns  # a suite sharing no task is not shown


def test_ranks_mean_rank_and_wins(records):
    ranks = build_report(records, SUITES).ranks["zeroshot"]
    # t1: B 65 > A 50 = C 50 (a tie shares the better rank); t2: A 60 > B 55
    assert ranks["t1"].to_dict() == {"A": 2, "B": 1, "C": 2}
    assert ranks.loc["A", "t2"] == 1 and ranks.loc["B", "t2"] == 2 and pd.isna(ranks.loc["C", "t2"])
    assert ranks.loc["A", "mean rank(pair)"] == 1.5 and ranks.loc["B", "mean rank(pair)"] == 1.5
    assert pd.isna(ranks.loc["C", "mean rank(pair)"])
    assert ranks["won(pair)"].to_dict() == {"A": 1, "B": 1, "C": 0}


def test_baseline_row_comes_first(records):
    assert list(build_report(records, SUITES, baseline="B").scores["zeroshot"].index) == ["B", "A", "C"]


def test_markdown_with_baseline(records):
    text = render(records, SUITES, "md", baseline="A")
    assert "### zeroshot (main score, %)" in text and "### lp@4 (main score, %)" in text
    assert "linear_probe@4" not in text
    delta_section = text.split("### zeroshot (delta vs A, points)")[1].split("###")[0]
    b_row = next(line for line in delta_section.splitlines() if line.startswith("| B"))
    assert "+15.00 [+" in b_row and "]*" in b_row  # significant, with its interval
    assert "-5.00 [" in b_row  # t2: 55 vs 60
    c_row = next(line for line in delta_section.splitlines() if line.startswith("| C"))
    assert "+0.00 [" in c_row and "*" not in c_row
    assert c_row.split("|")[-2].strip() == ""  # C has no t2: a gap
    assert "1000 resamples, seed 0" in text and "exact McNemar" in text
    assert "t1 (lp@4): no per-sample predictions" in text


def test_markdown_without_baseline_is_unchanged_in_shape(records):
    """What `evalbench run` prints: score and rank tables, no deltas."""
    text = render(records, SUITES, "md")
    assert "delta" not in text
    assert "| A       | 50.00 | 60.00 |        55.00 |" in text


def test_csv_long_table_with_derived_rows(records):
    frame = pd.read_csv(io.StringIO(render(records, SUITES, "csv", baseline="A")))
    assert list(frame.columns) == ["model", "task", "mode", "metric", "value", "step"]
    assert frame["step"].isna().all()  # no record has a step: the column is empty
    get = lambda **kw: frame.loc[np.logical_and.reduce([frame[k] == v for k, v in kw.items()]), "value"]  # noqa: E731
    assert get(model="B", task="t1", mode="zeroshot", metric="acc1").item() == pytest.approx(0.65)
    assert get(model="A", task="t1", mode="linear_probe@4", metric="acc1_std").item() == pytest.approx(0.02)
    assert get(model="B", task="pair", mode="zeroshot", metric="suite_mean").item() == pytest.approx(0.6)
    assert get(model="B", task="t1", mode="zeroshot", metric="rank").item() == 1
    assert get(model="B", task="t1", mode="zeroshot", metric="delta").item() == pytest.approx(0.15)
    assert get(model="B", task="t1", mode="zeroshot", metric="delta_significant").item() == 1
    assert get(model="C", task="pair", mode="zeroshot", metric="suite_mean").empty


def test_json_holds_every_table(records):
    data = json.loads(render(records, SUITES, "json", baseline="A"))
    assert data["models"] == ["A", "B", "C"] and data["tasks"] == ["t1", "t2"]
    assert data["statistics"]["resamples"] == 1000 and data["baseline"] == "A"
    zs = data["modes"]["zeroshot"]
    assert zs["scores"]["C"]["t2"] is None and zs["ranks"]["A"]["won(pair)"] == 1
    b_t1 = next(d for d in zs["deltas"] if d["model"] == "B" and d["task"] == "t1")
    assert b_t1["delta"] == pytest.approx(0.15) and b_t1["significant"] is True and b_t1["ci_low"] > 0
    assert data["modes"]["linear_probe@4"]["label"] == "lp@4"
    kshot = data["modes"]["linear_probe@4"]["deltas"][0]
    assert kshot["ci_low"] is None and kshot["delta"] == pytest.approx(0.05)


def test_latex_escapes_names(records):
    renamed = [{**r, "model": {**r["model"], "name": r["model"]["name"] + "_v1"}} for r in records]
    text = render(renamed, SUITES, "latex", baseline="A_v1")
    assert r"A\_v1" in text and "A_v1" not in text
    assert r"$^{*}$" in text and r"95\%" in text


def test_unknown_format_and_empty_results(records):
    with pytest.raises(EvalbenchError, match="--format: unknown format 'pdf'"):
        render(records, SUITES, "pdf")
    assert render([], SUITES, "md") == "No results.\n"
