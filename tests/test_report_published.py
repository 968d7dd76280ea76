"""``evalbench report --published`` from hand-written records: every published figure expected
here was read by hand from ``evalbench/published/openclip_results.csv``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from evalbench.cli import main


# --- evalbench report --published ----------------------------------------------------------------

def write_record(results: Path, name: str, spec: str, task: str, mode: str, metrics: dict,
                 main_metric: str = "acc1", limit: int | None = None) -> None:
    record = {
        "schema_version": 1,
        "model": {"name": name, "spec": spec, "fingerprint": f"fp-{name}"},
        "task": {"name": task, "version": "1", "hash": f"h-{task}", "main_metric": main_metric, "limit": limit},
        "results": {mode: {**metrics, "main_score": metrics[main_metric], "n": 100}},
        "provenance": {"evalbench": "0.1.0", "seed": 0},
    }
    folder = results / name.replace("/", "_").replace(":", "_")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{task}.json").write_text(json.dumps(record))


# Ours: imagenet1k 0.6412 (+0.80 points, past 0.5), cifar10 0.9000 (+0.17), pets 0.8650 in
# mean_per_class_recall (-0.50 exactly: not past 0.5), flickr30k retrieval 0.6684 (-2.00).
OURS = {"imagenet1k": 0.6412, "cifar10": 0.9000, "pets": 0.8650, "flickr30k": 0.6684}


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "results"
    spec = "ViT-B-32@openai"
    write_record(res, spec, spec, "imagenet1k", "zeroshot", {"acc1": OURS["imagenet1k"], "acc5": 0.88})
    write_record(res, spec, spec, "cifar10", "zeroshot", {"acc1": OURS["cifar10"]})
    # A linear probe is not what the table publishes: a record with no zero-shot result gets nothing.
    write_record(res, spec, spec, "cifar100", "linear_probe", {"acc1": 0.80})
    write_record(res, spec, spec, "pets", "zeroshot",
                 {"acc1": 0.80, "mean_per_class_recall": OURS["pets"]}, main_metric="mean_per_class_recall")
    write_record(res, spec, spec, "flickr30k", "retrieval", {"mean_recall@1": OURS["flickr30k"]},
                 main_metric="mean_recall@1")
    # The CLIP paper's multi-label VOC 2007 is not the table's column (voc2007-datacomp is).
    write_record(res, spec, spec, "voc2007", "zeroshot", {"map_11pt": 0.80}, main_metric="map_11pt")
    write_record(res, spec, spec, "voc2007-datacomp", "zeroshot", {"acc1": 0.7700})
    # A record without the published metric (Caltech-101's figure is mean per-class recall).
    write_record(res, spec, spec, "caltech101", "zeroshot", {"acc1": 0.85})
    write_record(res, spec, spec, "digits", "zeroshot", {"acc1": 0.5})  # not in the table
    # Not open_clip ARCH@TAG checkpoints of the table, whatever the display name says.
    write_record(res, "hf-b32", "hf:openai/clip-vit-base-patch32", "imagenet1k", "zeroshot", {"acc1": 0.63})
    write_record(res, "ViT-B-32@ft", "ViT-B-32@/ckpt/ft.pt", "imagenet1k", "zeroshot", {"acc1": 0.70})
    write_record(res, "mystery", "ViT-B-32@no_such_tag", "imagenet1k", "zeroshot", {"acc1": 0.70})
    # Matched on the spec: a display name of one's own keeps the published figure.
    write_record(res, "laion-b32", "ViT-B-32@laion2b_s34b_b79k", "imagenet1k", "zeroshot", {"acc1": 0.6656})
    return res


def run_report(capsys, results: Path, *args: str) -> str:
    capsys.readouterr()
    assert main(["report", "--results-dir", str(results), *args]) == 0
    return capsys.readouterr().out


def test_csv_rows_published_and_delta(results, capsys):
    table = pd.read_csv(io.StringIO(run_report(capsys, results, "--published", "--format", "csv")))
    rows = table[table.metric.isin(["published", "published_delta"])]
    got = {(r.model, r.task, r.mode, r.metric): r.value for r in rows.itertuples()}
    b32 = "ViT-B-32@openai"
    expected = {
        (b32, "imagenet1k", "zeroshot", "published"): 0.6332,
        (b32, "imagenet1k", "zeroshot", "published_delta"): 0.6412 - 0.6332,
        (b32, "cifar10", "zeroshot", "published"): 0.8983,
        (b32, "cifar10", "zeroshot", "published_delta"): 0.9000 - 0.8983,
        (b32, "pets", "zeroshot", "published"): 0.8700,
        (b32, "pets", "zeroshot", "published_delta"): 0.8650 - 0.8700,
        (b32, "flickr30k", "retrieval", "published"): 0.6884,
        (b32, "flickr30k", "retrieval", "published_delta"): 0.6684 - 0.6884,
        (b32, "voc2007-datacomp", "zeroshot", "published"): 0.7640,
        (b32, "voc2007-datacomp", "zeroshot", "published_delta"): 0.7700 - 0.7640,
        # caltech101: the figure, but no difference: the record has no mean_per_class_recall.
        (b32, "caltech101", "zeroshot", "published"): 0.8758,
        ("laion-b32", "imagenet1k", "zeroshot", "published"): 0.6656,
        ("laion-b32", "imagenet1k", "zeroshot", "published_delta"): 0.0,
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    # The record's own rows are still there, unchanged.
    assert table[(table.model == b32) & (table.task == "imagenet1k") & (table.metric == "acc1")].value.item() == 0.6412


def test_csv_without_published_has_no_published_rows(results, capsys):
    table = pd.read_csv(io.StringIO(run_report(capsys, results, "--format", "csv")))
    assert not table.metric.str.startswith("published").any()


def md_published(text: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("### published"))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    header, body = rows[0], rows[2:]
    return {(row[0], row[1]): dict(zip(header, row)) for row in body}


def test_markdown_columns_and_flag(results, capsys):
    text = run_report(capsys, results, "--published")
    table = md_published(text)
    assert set(table) == {("ViT-B-32@openai", t) for t in (
        "imagenet1k", "cifar10", "pets", "flickr30k", "voc2007-datacomp", "caltech101")} | {
        ("laion-b32", "imagenet1k")}
    row = table[("ViT-B-32@openai", "imagenet1k")]
    assert {"published", "delta", "ours", "metric"} <= set(row)
    assert (row["ours"], row["published"], row["delta"]) == ("64.12", "63.32", "+0.80 !")
    assert table[("ViT-B-32@openai", "cifar10")]["delta"] == "+0.17"  # within 0.5: no flag
    pets = table[("ViT-B-32@openai", "pets")]
    assert (pets["metric"], pets["delta"]) == ("mean_per_class_recall", "-0.50")  # exactly 0.5: no flag
    flickr = table[("ViT-B-32@openai", "flickr30k")]
    assert (flickr["mode"], flickr["metric"], flickr["delta"]) == ("retrieval", "mean_recall@1", "-2.00 !")
    voc = table[("ViT-B-32@openai", "voc2007-datacomp")]
    assert (voc["metric"], voc["ours"], voc["published"], voc["delta"]) == ("acc1", "77.00", "76.40", "+0.60 !")
    caltech = table[("ViT-B-32@openai", "caltech101")]
    assert (caltech["ours"], caltech["published"], caltech["delta"]) == ("", "87.58", "")
    assert "ViT-B-32@openai, caltech101: the record has no mean_per_class_recall" in text


def test_markdown_tolerance_option(results, capsys):
    table = md_published(run_report(capsys, results, "--published", "--published-tolerance", "1"))
    assert table[("ViT-B-32@openai", "imagenet1k")]["delta"] == "+0.80"
    assert table[("ViT-B-32@openai", "flickr30k")]["delta"] == "-2.00 !"
    # The tolerance alone asks for the comparison too.
    table = md_published(run_report(capsys, results, "--published-tolerance", "0.1"))
    assert table[("ViT-B-32@openai", "cifar10")]["delta"] == "+0.17 !"


def test_markdown_without_published_has_no_section(results, capsys):
    assert "### published" not in run_report(capsys, results)


def test_model_not_in_table_gets_nothing(tmp_path, capsys):
    res = tmp_path / "results"
    write_record(res, "hf-b32", "hf:openai/clip-vit-base-patch32", "imagenet1k", "zeroshot", {"acc1": 0.63})
    table = pd.read_csv(io.StringIO(run_report(capsys, res, "--published", "--format", "csv")))
    assert not table.metric.str.startswith("published").any()
    assert "No record of an open_clip" in run_report(capsys, res, "--published")


def test_html_flags_the_delta_cell(results, capsys):
    page = run_report(capsys, results, "--published", "--format", "html")
    section = page[page.index('<section id="published">'):]
    section = section[:section.index("</section>")]
    rows = {r.split("</th>")[0].split(">")[-1] + "|" + r.split("<td>")[1].split("</td>")[0]: r
            for r in section.split("<tr data-model=")[1:]}
    assert 'class="flag"' in rows["ViT-B-32@openai|imagenet1k"] and "+0.80 !" in rows["ViT-B-32@openai|imagenet1k"]
    assert 'class="flag"' not in rows["ViT-B-32@openai|cifar10"]
    assert "63.32" in rows["ViT-B-32@openai|imagenet1k"]


def test_json_published_rows(results, capsys):
    data = json.loads(run_report(capsys, results, "--published", "--format", "json"))
    rows = {(r["model"], r["task"]): r for r in data["published"]["rows"]}
    row = rows[("ViT-B-32@openai", "imagenet1k")]
    assert (row["published"], row["value"], row["flagged"]) == (0.6332, 0.6412, True)
    assert row["delta"] == pytest.approx(0.0080, abs=1e-12)
    assert data["published"]["tolerance_points"] == 0.5
    assert "published" not in json.loads(run_report(capsys, results, "--format", "json"))


def test_negative_tolerance_is_one_error_line(results, capsys):
    capsys.readouterr()
    assert main(["report", "--results-dir", str(results), "--published-tolerance", "-1"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--published-tolerance" in err and "Traceback" not in err


def test_latex_published_table_is_escaped(results, capsys):
    text = run_report(capsys, results, "--published", "--format", "latex")
    table = text[text.index("published figures"):]
    line = next(x for x in table.splitlines() if "flickr30k" in x)
    assert "mean\\_recall@1" in line and "68.84" in line and "-2.00 !" in line
