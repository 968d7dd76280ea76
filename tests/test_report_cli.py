"""`evalbench report` end to end on a results folder of hand-written records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_report_fixtures import mode_result, plus_right, record, wrong_class

from evalbench.cli import main
from evalbench.records import record_path, write_record

N, C = 200, 10


def _write(results, model: str, task: str, pred, y) -> None:
    write_record(record_path(results, model, task), record(model, task, {"zeroshot": mode_result(y, pred, C)}))


@pytest.fixture()
def results(tmp_path):
    y = np.arange(N) % C
    base = plus_right(y, wrong_class(y, C), 100, C)
    _write(tmp_path / "results", "old", "digits", base, y)
    _write(tmp_path / "results", "new", "digits", plus_right(y, base, 30, C), y)
    return tmp_path / "results"


def test_report_json_and_plots(results, tmp_path):
    out, plots = tmp_path / "report.json", tmp_path / "plots"
    argv = ["report", "--results-dir", str(results), "--baseline", "old", "--format", "json",
            "--resamples", "500", "--seed", "3", "--output", str(out), "--plots", str(plots)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["statistics"]["resamples"] == 500 and data["statistics"]["seed"] == 3
    (delta,) = data["modes"]["zeroshot"]["deltas"]
    assert delta["model"] == "new" and delta["delta"] == pytest.approx(0.15) and delta["significant"] is True
    assert sorted(p.name for p in plots.iterdir()) == ["deltas-zeroshot.png", "scores-zeroshot.png"]


def test_report_html_to_stdout(results, capsys):
    assert main(["report", "--results-dir", str(results), "--baseline", "old", "--format", "html"]) == 0
    assert capsys.readouterr().out.startswith("<!doctype html>")


def test_report_errors_are_one_line(results, capsys):
    assert main(["report", "--results-dir", str(results), "--baseline", "nobody"]) == 2
    assert "--baseline: no results for model 'nobody' (have: new, old)" in capsys.readouterr().err
    y = np.arange(150) % C
    _write(results, "short", "digits", y, y)
    assert main(["report", "--results-dir", str(results), "--baseline", "old"]) == 2
    assert "task 'digits'" in capsys.readouterr().err
