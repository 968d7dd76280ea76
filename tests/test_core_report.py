"""``evalbench report`` from hand-written records, so every expected number is known here."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from evalbench.cli import main

# model -> task -> mode -> main score (a fraction). m2 lacks beta; nobody has gamma.
SCORES = {
    "m1": {"alpha": {"zeroshot": 0.5, "linear_probe": 0.6}, "beta": {"zeroshot": 0.123456, "linear_probe": 0.7}},
    "m2": {"alpha": {"zeroshot": 0.875, "linear_probe": 0.9}},
    "m3": {"alpha": {"zeroshot": 0.25}, "beta": {"zeroshot": 0.0}},
}
RAW_METRICS = ("acc1", "mean_per_class_recall", "main_score")


def metrics_for(score: float) -> dict:
    # mean_per_class_recall deliberately differs from acc1, so a mixed-up column shows.
    return {"acc1": score, "mean_per_class_recall": score / 2, "main_score": score, "n": 100}


def write_records(results: Path) -> None:
    for model, tasks in SCORES.items():
        for task, modes in tasks.items():
            res = {mode: metrics_for(s) for mode, s in modes.items()}
            if "linear_probe" in res:
                res["linear_probe"].update(C=0.316, n_train=50, n_val=20)
            record = {
                "schema_version": 1,
                "model": {"name": model, "spec": f"ViT-B-32@{model}", "fingerprint": f"fp-{model}"},
                "task": {"name": task, "version": "1", "hash": f"h-{task}", "main_metric": "acc1", "limit": None},
                "results": res,
                "provenance": {"evalbench": "0.1.0", "seed": 0},
            }
            (results / model).mkdir(parents=True, exist_ok=True)
            (results / model / f"{task}.json").write_text(json.dumps(record))


@pytest.fixture
def setup(tmp_path):
    results = tmp_path / "results"
    write_records(results)
    tasks = tmp_path / "tasks"
    (tasks / "suites").mkdir(parents=True)
    (tasks / "suites" / "pair.yaml").write_text("name: pair\ndescription: alpha and beta\ntasks: [alpha, beta]\n")
    (tasks / "suites" / "trio.yaml").write_text("name: trio\ntasks: [alpha, beta, gamma]\n")
    return results, tasks


def report(capsys, results: Path, tasks: Path, fmt: str) -> str:
    capsys.readouterr()
    rc = main(["report", "--results-dir", str(results), "--tasks-dir", str(tasks), "--format", fmt])
    assert rc == 0
    return capsys.readouterr().out


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def suite_mean(model: str, mode: str, tasks: list[str]) -> float | None:
    have = SCORES[model]
    if not all(mode in have.get(t, {}) for t in tasks):
        return None
    return sum(have[t][mode] for t in tasks) / len(tasks)


def md_main_table(text: str, mode: str) -> dict[str, dict[str, str]]:
    """The markdown table right after the heading naming ``mode`` and 'main score'."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and mode in line and "main score" in line)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    header, body = rows[0], rows[2:]  # rows[1] is the |:---| rule
    return {row[0]: dict(zip(header[1:], row[1:])) for row in body}


@pytest.mark.parametrize("mode", ["zeroshot", "linear_probe"])
def test_markdown_main_scores_in_percent(setup, capsys, mode):
    results, tasks = setup
    table = md_main_table(report(capsys, results, tasks, "md"), mode)
    models = [m for m in SCORES if any(mode in t for t in SCORES[m].values())]
    assert sorted(table) == sorted(models)
    for model in models:
        row = table[model]
        for task in ("alpha", "beta"):
            score = SCORES[model].get(task, {}).get(mode)
            assert row[task] == ("" if score is None else pct(score)), (model, task, row)


@pytest.mark.parametrize("mode", ["zeroshot", "linear_probe"])
def test_suite_mean_is_empty_unless_every_task_is_there(setup, capsys, mode):
    results, tasks = setup
    table = md_main_table(report(capsys, results, tasks, "md"), mode)
    for model, row in table.items():
        assert "mean(pair)" in row
        expected = suite_mean(model, mode, ["alpha", "beta"])
        assert row["mean(pair)"] == ("" if expected is None else pct(expected)), (model, row)
        # Nobody has gamma: the trio mean is empty for everyone, never the mean of alpha and beta.
        assert row.get("mean(trio)", "") == ""


def test_suite_mean_of_m2_is_not_its_alpha_score(setup, capsys):
    """The case the rule exists for: m2 has only alpha; a mean over the subset would be 87.50."""
    results, tasks = setup
    row = md_main_table(report(capsys, results, tasks, "md"), "zeroshot")["m2"]
    assert row["alpha"] == "87.50"
    assert row["mean(pair)"] == ""


def test_csv_long_table(setup, capsys):
    results, tasks = setup
    table = pd.read_csv(io.StringIO(report(capsys, results, tasks, "csv")))
    assert list(table.columns) == ["model", "task", "mode", "metric", "value", "step"]
    assert table["step"].isna().all()
    raw = table[table.metric.isin(RAW_METRICS)]
    expected = {
        (model, task, mode, metric): metrics_for(score)[metric]
        for model, ts in SCORES.items()
        for task, modes in ts.items()
        for mode, score in modes.items()
        for metric in RAW_METRICS
    }
    got = {(r.model, r.task, r.mode, r.metric): r.value for r in raw.itertuples()}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    # Values are fractions, not percent; counts, C and durations are not metrics.
    assert not table.metric.isin(["n", "n_train", "n_val", "C", "duration_s"]).any()
    # Whatever aggregate rows the csv adds, no suite mean is given for a model missing a task.
    aggregates = table[table.task.isin(["pair", "trio"]) & table.metric.str.contains("mean")]
    for r in aggregates.itertuples():
        expected_mean = suite_mean(r.model, r.mode, ["alpha", "beta"] if r.task == "pair" else ["alpha", "beta", "gamma"])
        if "rank" in r.metric:
            continue
        if expected_mean is None:
            assert math.isnan(r.value), r
        else:
            assert r.value == pytest.approx(expected_mean), r


def test_latex_main_scores(setup, capsys):
    results, tasks = setup
    text = report(capsys, results, tasks, "latex")
    assert "\\begin{tabular}" in text
    first = text.split("\\end{table}")[0]  # the zero-shot main-score table comes first
    assert "main score" in first and "zeroshot" in first
    rows = {}
    for line in first.splitlines():
        if "&" in line and line.rstrip().endswith("\\\\"):
            cells = [c.strip() for c in line.rstrip().removesuffix("\\\\").split("&")]
            rows[cells[0]] = cells[1:]
    header = rows.pop("")
    for model in SCORES:
        cells = dict(zip(header, rows[model]))
        for task in ("alpha", "beta"):
            score = SCORES[model].get(task, {}).get("zeroshot")
            assert cells[task] == ("" if score is None else pct(score))
        expected = suite_mean(model, "zeroshot", ["alpha", "beta"])
        assert cells["mean(pair)"] == ("" if expected is None else pct(expected))


def test_output_file_matches_stdout(setup, capsys, tmp_path):
    results, tasks = setup
    text = report(capsys, results, tasks, "md")
    out = tmp_path / "out" / "report.md"
    assert main(["report", "--results-dir", str(results), "--tasks-dir", str(tasks), "--output", str(out)]) == 0
    assert out.read_text() == text


def test_missing_results_folder_is_one_error_line(tmp_path, capsys):
    capsys.readouterr()
    assert main(["report", "--results-dir", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "absent" in err and "Traceback" not in err


def test_invalid_records_are_named_and_skipped(setup, capsys):
    """A record from a newer evalbench, or one missing a field, is named (path and field) in one
    warning line and left out of the report; the other records are still reported."""
    results, tasks = setup
    newer = results / "m1" / "alpha.json"
    record = json.loads(newer.read_text())
    record["schema_version"] = 999
    newer.write_text(json.dumps(record))
    broken = results / "m2" / "alpha.json"
    record = json.loads(broken.read_text())
    del record["model"]["spec"]
    broken.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["report", "--results-dir", str(results), "--tasks-dir", str(tasks), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert f"{newer}: schema_version: 999 is newer" in err
    assert f"{broken}: model.spec: Field required" in err
    assert "Traceback" not in err
    rows = pd.read_csv(io.StringIO(out))
    kept = set(zip(rows["model"], rows["task"]))
    assert ("m1", "alpha") not in kept and ("m2", "alpha") not in kept
    assert ("m1", "beta") in kept


