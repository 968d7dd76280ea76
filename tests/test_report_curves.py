"""Checkpoints of training runs in the report: run of a record, step column, curves over steps,
``--baseline RUN@STEP`` and ``--tensorboard``, on hand-made records."""

from __future__ import annotations

import io
import sys

import numpy as np
import pandas as pd
import pytest
from test_report_fixtures import mode_result, plus_right, record, wrong_class

from evalbench.cli import main
from evalbench.errors import EvalbenchError
from evalbench.records import record_path, write_record
from evalbench.report import build_report, render
from evalbench.report.plots import curve_figure, report_curves, write_plots
from evalbench.report.runs import run_from_name, run_of
from evalbench.tasks.loader import SuiteSpec

N, C = 200, 10
SUITES = {"pair": SuiteSpec(name="pair", tasks=["t1", "t2"])}
# Right answers out of N per (run, step, task). exp1 at step 10 lacks t2: no suite mean there.
RIGHT = {
    ("exp1", 2): {"t1": 40, "t2": 60},
    ("exp1", 10): {"t1": 120},
    ("exp1", 5): {"t1": 90, "t2": 100},
    ("exp2", 1): {"t1": 50, "t2": 30},
    ("exp2", 3): {"t1": 70, "t2": 80},
}


def checkpoint(run: str | None, step: int | None, name: str, task: str, right: int, spec: str | None = None) -> dict:
    y = np.arange(N) % C
    rec = record(name, task, {"zeroshot": mode_result(y, plus_right(y, wrong_class(y, C), right, C), C)})
    rec["model"].update(step=step, run=run)
    if spec is not None:
        rec["model"]["spec"] = spec
    return rec


@pytest.fixture(scope="module")
def records():
    out = [checkpoint(run, step, f"{run}/epoch_{step}", task, right)
           for (run, step), tasks in RIGHT.items() for task, right in tasks.items()]
    out += [checkpoint(None, None, "plain", task, 100) for task in ("t1", "t2")]  # not a checkpoint
    return out


def test_run_of_prefers_model_run_then_folder_then_name():
    base = {"name": "exp9-epoch_3", "spec": "ViT-B-32@runs/exp1/checkpoints/epoch_3.pt"}
    assert run_of({"model": {**base, "run": "given"}}) == "given"
    assert run_of({"model": base}) == "exp1"  # the folder, skipping the generic "checkpoints"
    assert run_of({"model": {"name": "x", "spec": "hf:openai/clip@ft/ckpts/s_1.pth"}}) == "ft"
    assert run_of({"model": {"name": "x_7", "spec": "my-arch.json@step_7.safetensors"}}) == "x"  # no folder
    assert run_of({"model": {"name": "exp9-epoch_3", "spec": "ViT-B-32@openai"}}) == "exp9"  # a tag, not a file
    assert [run_from_name(n) for n in ("exp1-epoch_10", "exp1/step100", "exp1_3", "epoch_3", "model10", "7")] == [
        "exp1", "exp1", "exp1", "epoch", "model10", "7"]


def test_run_derived_when_records_lack_it():
    recs = [checkpoint(None, s, f"e{s}", "t1", 20 * s, spec=f"demo@/data/runs/expA/checkpoints/epoch_{s}.pt")
            for s in (1, 2)]
    recs += [checkpoint(None, s, f"expB-step{s}", "t1", 30 * s) for s in (1, 2)]
    report = build_report(recs, {})
    runs = dict(zip(report.checkpoints["model"], report.checkpoints["run"]))
    assert runs == {"e1": "expA", "e2": "expA", "expB-step1": "expB", "expB-step2": "expB"}


def _md_table(text: str, title: str) -> list[list[str]]:
    section = text.split(f"### {title}\n\n")[1].split("\n\n")[0]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()[2:]]


def test_markdown_step_column_rows_by_run_and_step(records):
    rows = _md_table(render(records, SUITES, "md"), "zeroshot (main score, %)")
    assert [(r[0], r[1]) for r in rows] == [
        ("exp1/epoch_2", "2"), ("exp1/epoch_5", "5"), ("exp1/epoch_10", "10"),  # 2 before 10
        ("exp2/epoch_1", "1"), ("exp2/epoch_3", "3"), ("plain", ""),
    ]
    by_model = {r[0]: r for r in rows}
    assert by_model["exp1/epoch_10"][2:] == [f"{120 / N * 100:.2f}", "", ""]  # no t2, no suite mean
    assert by_model["exp2/epoch_3"][4] == f"{(70 + 80) / 2 / N * 100:.2f}"
    latex = render(records, SUITES, "latex")
    assert " & step & t1 & t2 & mean(pair)" in latex and "exp1/epoch\\_10 & 10 & 60.00 &" in latex


def test_no_step_column_without_checkpoints(records):
    plain = [r for r in records if r["model"]["step"] is None]
    assert "step" not in render(plain, SUITES, "md") and "step" not in render(plain, SUITES, "latex")
    assert 'data-key="step"' not in render(plain, SUITES, "html")
    assert render(plain, SUITES, "json").count('"checkpoints": {}') == 1


def test_csv_step_column(records):
    frame = pd.read_csv(io.StringIO(render(records, SUITES, "csv")), dtype={"step": "Int64"})
    assert list(frame.columns) == ["model", "task", "mode", "metric", "value", "step"]
    for (run, step), tasks in RIGHT.items():
        rows = frame[frame["model"] == f"{run}/epoch_{step}"]
        assert set(rows["step"]) == {step}  # every row, derived ones (rank, suite_mean) included
        for task, right in tasks.items():
            main_score = rows[(rows.task == task) & (rows.metric == "main_score")]["value"]
            assert main_score.item() == pytest.approx(right / N)
    assert frame[frame["model"] == "plain"]["step"].isna().all()
    assert (frame[(frame.metric == "suite_mean")]["model"] == "exp1/epoch_10").sum() == 0


def test_html_step_column_and_curves(records):
    text = render(records, SUITES, "html")
    assert '<th data-key="step" data-first="ascending">step</th>' in text
    assert '<tr data-model="exp1/epoch_10" class=""><th scope="row">exp1/epoch_10</th><td data-value="10">10</td>' in text
    curves = text.split('<section id="curves">')[1].split("</section>")[0]
    assert [alt for alt in ("curves/t1.png", "curves/t2.png", "curves/mean-pair.png") if f'alt="{alt}"' in curves] == [
        "curves/t1.png", "curves/t2.png", "curves/mean-pair.png"]
    assert curves.count("<img") == 3
    assert "curves/" not in text.split('<section id="plots">')[1]  # not twice


def test_curve_series(records):
    curves = build_report(records, SUITES).curves
    t1 = curves[(curves.column == "t1")]
    assert list(zip(t1.run, t1.step)) == [("exp1", 2), ("exp1", 5), ("exp1", 10), ("exp2", 1), ("exp2", 3)]
    assert list(t1.value) == pytest.approx([RIGHT[(r, s)]["t1"] / N for r, s in zip(t1.run, t1.step)])
    mean = curves[curves.column == "mean(pair)"]
    assert list(zip(mean.run, mean.step)) == [("exp1", 2), ("exp1", 5), ("exp2", 1), ("exp2", 3)]  # not exp1@10
    assert list(mean.value) == pytest.approx([(40 + 60) / 2 / N, (90 + 100) / 2 / N, 40 / N, 75 / N])
    assert "plain" not in set(curves.model)


def test_curve_figure_draws_one_line_per_run(records):
    curves = build_report(records, SUITES).curves
    fig = curve_figure(curves[curves.column == "t1"], "t1")
    (ax,) = fig.axes
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert lines.keys() == {"exp1", "exp2"}
    assert lines["exp1"][0] == [2, 5, 10]
    assert lines["exp1"][1] == pytest.approx([20.0, 45.0, 60.0])
    assert lines["exp2"] == ([1, 3], pytest.approx([25.0, 35.0]))


def test_curves_only_when_a_run_has_two_steps(records, tmp_path):
    one_step = [r for r in records if r["model"]["step"] in (None, 2, 1)]  # exp1@2, exp2@1
    report = build_report(one_step, SUITES)
    assert len(report.curves) and report_curves(report) == {}
    written = write_plots(build_report(records, SUITES), tmp_path / "plots")
    curve_files = sorted(p.relative_to(tmp_path / "plots").as_posix() for p in written if p.parent.name == "curves")
    assert curve_files == ["curves/mean-pair.png", "curves/t1.png", "curves/t2.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_curves_without_matplotlib(records, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text = render(records, SUITES, "html")
    assert 'id="curves"' not in text and text.count("matplotlib is not installed") == 1


def test_baseline_run_at_step_deltas(records):
    report = build_report(records, SUITES, baseline="exp1@5")
    assert report.baseline == "exp1/epoch_5"
    deltas = report.deltas.set_index(["task", "model"])["delta"]
    for (run, step), tasks in RIGHT.items():
        for task, right in tasks.items():
            if (run, step) != ("exp1", 5):
                expected = (right - RIGHT[("exp1", 5)][task]) / N
                assert deltas[(task, f"{run}/epoch_{step}")] == pytest.approx(expected)
    assert deltas[("t1", "plain")] == pytest.approx((100 - 90) / N)
    assert ("t2", "exp1/epoch_10") not in deltas.index
    assert list(report.scores["zeroshot"].index)[0] == "exp1/epoch_5"


def test_baseline_run_at_step_errors(records):
    with pytest.raises(EvalbenchError, match=r"^--baseline: no run 'exp3' \(runs and steps: exp1: 2, 5, 10; exp2: 1, 3\)$"):
        build_report(records, SUITES, baseline="exp3@2")
    with pytest.raises(EvalbenchError, match=r"^--baseline: run 'exp1' has no step 4 \(steps: 2, 5, 10\)$"):
        build_report(records, SUITES, baseline="exp1@4")
    plain = [r for r in records if r["model"]["step"] is None]
    with pytest.raises(EvalbenchError, match="no record has a step"):
        build_report(plain, SUITES, baseline="exp1@4")


def test_baseline_model_name_with_at_sign_is_a_model(records):
    y = np.arange(N) % C
    named = [record("ViT-B-32@2", "t1", {"zeroshot": mode_result(y, y, C)})]  # looks like RUN@STEP
    report = build_report(records + named, SUITES, baseline="ViT-B-32@2")
    assert report.baseline == "ViT-B-32@2"
    assert report.deltas.set_index("model").loc["plain", "delta"] == pytest.approx((100 - N) / N)


@pytest.fixture()
def results(records, tmp_path):
    """A results folder of the records, and ``tmp_path/tasks/suites/pair.yaml`` for --tasks-dir."""
    for r in records:
        write_record(record_path(tmp_path / "results", r["model"]["name"].replace("/", "_"), r["task"]["name"]), r)
    (tmp_path / "tasks" / "suites").mkdir(parents=True)
    (tmp_path / "tasks" / "suites" / "pair.yaml").write_text("name: pair\ntasks: [t1, t2]\n")
    return tmp_path / "results"


def test_cli_baseline_run_at_step_unknown_is_one_line(results, capsys):
    assert main(["report", "--results-dir", str(results), "--baseline", "exp2@9"]) == 2
    err = capsys.readouterr().err
    assert err == "evalbench: error: --baseline: run 'exp2' has no step 9 (steps: 1, 3)\n"


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_per_run(results, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    tb = tmp_path / "tb"
    argv = ["report", "--results-dir", str(results), "--tasks-dir", str(tmp_path / "tasks"),
            "--tensorboard", str(tb), "--output", str(tmp_path / "r.md")]
    assert main(argv) == 0
    assert sorted(p.name for p in tb.iterdir()) == ["exp1", "exp2"]
    exp1 = _scalars(tb / "exp1")
    assert set(exp1) == {"zeroshot/t1", "zeroshot/t2", "zeroshot/mean(pair)"}
    assert [s for s, _ in exp1["zeroshot/t1"]] == [2, 5, 10]
    assert [v for _, v in exp1["zeroshot/t1"]] == pytest.approx([40 / N, 90 / N, 120 / N])
    assert exp1["zeroshot/mean(pair)"] == [(2, pytest.approx(0.25)), (5, pytest.approx(0.475))]
    assert _scalars(tb / "exp2")["zeroshot/t2"] == [(1, pytest.approx(30 / N)), (3, pytest.approx(80 / N))]
    # A rewrite replaces our event file and leaves others (a training script's) alone.
    (first,) = (tb / "exp1").iterdir()
    foreign = tb / "exp1" / "events.out.tfevents.1.host.train"
    foreign.write_bytes(b"")
    assert main(argv) == 0
    files = set((tb / "exp1").iterdir())
    assert len(files) == 2 and foreign in files and first not in files
    assert [s for s, _ in _scalars(tb / "exp1")["zeroshot/t1"]] == [2, 5, 10]  # not twice


def test_tensorboard_missing_is_one_line(results, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = tmp_path / "r.md"
    assert main(["report", "--results-dir", str(results), "--tensorboard", str(tmp_path / "tb"), "--output", str(out)]) == 2
    assert capsys.readouterr().err == (
        "evalbench: error: --tensorboard: needs the tensorboard package (pip install 'evalbench[tensorboard]')\n")
    assert not (tmp_path / "tb").exists() and not out.exists()  # nothing half-written


def test_python_report_writes_tensorboard(records, tmp_path):
    pytest.importorskip("tensorboard")
    import evalbench

    text = evalbench.report(records=records, format="md", baseline="exp2@3", tensorboard=tmp_path / "tb")
    assert "### zeroshot (delta vs exp2/epoch_3, points)" in text
    assert _scalars(tmp_path / "tb" / "exp2")["zeroshot/t1"] == [(1, pytest.approx(50 / N)), (3, pytest.approx(70 / N))]
