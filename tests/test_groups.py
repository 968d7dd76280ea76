"""Per-sample metadata, group metrics (macro F1, worst-group accuracy), WinoGAViL's Jaccard
scoring, suite aggregates and worst-group intervals in reports.

Metric values are checked against scikit-learn and against counts made by hand in the test;
end-to-end runs use the tiny open_clip model on small datasets written here.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CLASSES, colour_samples, write_task
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, top_k_accuracy_score

from evalbench.cli import main
from evalbench.metrics import (
    classification_metrics,
    f1_macro,
    jaccard_index,
    jaccard_metrics,
    per_group,
    worst_group_acc1,
    worst_group_acc5,
)
from evalbench.records import pack_groups, pack_predictions, unpack_groups
from evalbench.tasks.loader import SuiteSpec, load_task_file

# The test split of conftest's colour data has 12 images (classes red, green, blue in turn).
# Groups: uneven on purpose, so a mean over groups differs from a mean over images.
TEST_GROUPS = ["north"] * 2 + ["south"] * 7 + ["east"] * 3


def group_of(key: str) -> str:
    split, i = key.split("-")
    return TEST_GROUPS[int(i)] if split == "test" else ["north", "south", "east"][int(i) % 3]


# ---- metrics against scikit-learn and hand counts --------------------------------------------


def test_f1_macro_against_sklearn_and_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 3])  # class 3 predicted once, never true
    scores = np.eye(4)[pred]
    # By hand, over the classes present in y (0, 1, 2): class 0 P=1 R=1/2 F1=2/3; class 1 P=2/3
    # R=1 F1=4/5; class 2 P=1 R=1/2 F1=2/3. Mean = (2/3 + 4/5 + 2/3) / 3.
    assert f1_macro(y, scores) == pytest.approx((2 / 3 + 4 / 5 + 2 / 3) / 3)
    assert f1_macro(y, scores) == pytest.approx(f1_score(y, pred, average="macro", labels=[0, 1, 2]))
    # scikit-learn's default would also average class 3 (F1 = 0): WILDS/DataComp do not.
    assert f1_macro(y, scores) > f1_score(y, pred, average="macro")


def test_worst_group_accuracy_by_hand_and_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 40)
    scores = rng.normal(size=(40, 6))
    groups = np.array(["a"] * 5 + ["b"] * 20 + ["c"] * 15)
    pred = scores.argmax(axis=1)
    by_hand = {g: sum(int(p == t) for p, t, h in zip(pred, y, groups) if h == g) / list(groups).count(g) for g in "abc"}
    assert worst_group_acc1(y, scores, groups) == pytest.approx(min(by_hand.values()))
    top5 = {g: top_k_accuracy_score(y[groups == g], scores[groups == g], k=5, labels=range(6)) for g in "abc"}
    assert worst_group_acc5(y, scores, groups) == pytest.approx(min(top5.values()))
    table = per_group(y, scores, groups)
    assert {g: v["n"] for g, v in table.items()} == {"a": 5, "b": 20, "c": 15}
    for g in "abc":
        assert table[g]["acc1"] == pytest.approx(accuracy_score(y[groups == g], pred[groups == g]))


def test_classification_metrics_with_groups():
    y = np.array([0, 1, 2, 0, 1, 2])
    scores = np.eye(3)[[0, 1, 2, 1, 1, 2]]  # one mistake, in group "y"
    out = classification_metrics(y, scores, "worst_group_acc1", np.array(["x", "x", "x", "y", "y", "y"]))
    assert out["per_group"] == {"x": {"acc1": 1.0, "n": 3}, "y": {"acc1": pytest.approx(2 / 3), "n": 3}}
    assert out["main_score"] == out["worst_group_acc1"] == pytest.approx(2 / 3)
    assert out["acc1"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="groups"):
        classification_metrics(y, scores, "worst_group_acc1")


def test_jaccard_hand_computed():
    # 10 candidates, true associations {1, 4, 7}; the 3 highest scores are candidates 9, 4, 1.
    answers = np.zeros(10, dtype=bool)
    answers[[1, 4, 7]] = True
    scores = np.array([0.1, 0.8, 0.0, 0.2, 0.85, 0.3, 0.4, 0.5, 0.05, 0.9])
    # chosen {9, 4, 1}: intersection {1, 4} = 2, union {1, 4, 7, 9} = 4 -> 0.5
    assert jaccard_index(answers, scores) == 0.5
    chosen = np.isin(np.arange(10), [1, 4, 9])
    assert jaccard_index(answers, scores) == jaccard_score(answers, chosen)
    # all right, and all wrong
    assert jaccard_index(answers, answers.astype(float)) == 1.0
    assert jaccard_index(answers, (~answers).astype(float)) == 0.0


def test_jaccard_buckets_as_datacomp():
    jac = np.array([0.5, 1.0, 0.0, 0.25, 0.75])
    sizes = np.array([5, 6, 10, 12, 12])
    out = jaccard_metrics(jac, sizes)
    assert out["jaccard_score_10-12"] == pytest.approx((0.0 + 0.25 + 0.75) / 3)
    assert out["jaccard_score_5-6"] == pytest.approx(0.75)
    assert out["jaccard_score_12"] == pytest.approx(0.5)
    assert out["avg_jaccard_score"] == pytest.approx(0.5)


# ---- the task schema --------------------------------------------------------------------------


def _spec(tmp_path, **overrides):
    return load_task_file(write_task(tmp_path, "g", {"source": "imagefolder", "path": "."}, **overrides)).spec


def test_datacomp_metric_names_are_aliases(tmp_path):
    assert _spec(tmp_path, main_metric="acc_wg", group_by="region").main_metric == "worst_group_acc1"
    assert _spec(tmp_path, main_metric="acc_worst_region", group_by="region").main_metric == "worst_group_acc1"
    assert _spec(tmp_path, main_metric="acc_top5_wg", group_by="region").main_metric == "worst_group_acc5"
    assert _spec(tmp_path, main_metric="F1-macro_all").main_metric == "f1_macro"


def test_group_metric_needs_group_by(tmp_path, capsys):
    path = write_task(tmp_path, "g", {"source": "imagefolder", "path": "."}, main_metric="acc_wg")
    assert main(["tasks", "validate", str(path)]) == 2
    err = capsys.readouterr()
    # model-level checks print "(top)" before the field, like every cross-field rule of the schema
    assert f"{path.resolve()}: (top): main_metric: worst_group_acc1 needs group_by" in err.out + err.err


def test_suite_aggregates_must_name_suite_tasks():
    with pytest.raises(ValueError, match="aggregates.B: task 'z' is not in the suite"):
        SuiteSpec(name="s", tasks=["x", "y"], aggregates={"A": ["x"], "B": ["z"]})
    assert SuiteSpec(name="s", tasks=["x", "y"], aggregates={"all": "all"}).aggregate_tasks() == {"all": ["x", "y"]}


# ---- sources carrying metadata -----------------------------------------------------------------


def write_group_wds(root: Path, ext: str = "json", drop: str | None = None) -> Path:
    """conftest's colour webdataset with a metadata member per sample: .json {"region": ...} or
    .npy [region code, year] (region codes 0/1/2 for north/south/east). ``drop``: a key whose
    sample gets no metadata."""
    root.mkdir(parents=True)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    codes = {"north": 0, "south": 1, "east": 2}
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        with tarfile.open(root / split / "0.tar", "w") as tar:
            for key, name, image in colour_samples(split):
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                members = [("png", buf.getvalue()), ("cls", str(CLASSES.index(name)).encode())]
                if key != drop:
                    if ext == "json":
                        members.append(("json", json.dumps({"region": group_of(key), "id": key}).encode()))
                    else:
                        npy = io.BytesIO()
                        np.save(npy, np.array([codes[group_of(key)], 2016]))
                        members.append(("npy", npy.getvalue()))
                for e, data in members:
                    info = tarfile.TarInfo(f"{key}.{e}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture(scope="module")
def checkpoint(tiny_arch, tmp_path_factory) -> Path:
    import open_clip

    open_clip.add_model_config(tiny_arch)
    torch.manual_seed(5)
    model, _, _ = open_clip.create_model_and_transforms(tiny_arch.stem, pretrained=None)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


def run(capsys, tmp_path: Path, task: Path, model: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["run", "--no-progress", "--model", model, "--tasks", str(task), "--mode", "zeroshot",
               "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])
    return rc, capsys.readouterr().err


def group_task(tmp_path: Path, data: Path, source: str = "webdataset", **overrides) -> Path:
    dataset = {"source": source, "path": str(data), **overrides.pop("dataset", {})}
    return write_task(tmp_path, "grouped", dataset, splits={"test": "test"}, group_by="region",
                      main_metric="acc_wg", **overrides)


def _record(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "results" / "tiny" / "grouped.json").read_text())


def _check_group_record(result: dict, regions=("east", "north", "south")):
    """The record's group values against a count made from the per-sample predictions and the
    groups the test wrote (independent of evalbench's grouping)."""
    from evalbench.records import unpack_labels, unpack_predictions

    pred, correct = unpack_predictions(result["per_sample"])
    labels = unpack_labels(result["per_sample"])
    assert list(labels) == [i % 3 for i in range(12)]  # the colour data's labels, in test-row order
    groups = np.array(TEST_GROUPS)
    expected = {g: accuracy_score(labels[groups == g], pred[groups == g]) for g in set(TEST_GROUPS)}
    assert set(result["per_group"]) == set(regions)
    assert {g: v["n"] for g, v in result["per_group"].items()} == {"north": 2, "south": 7, "east": 3}
    for g, v in result["per_group"].items():
        assert v["acc1"] == pytest.approx(expected[g])
    assert result["main_score"] == result["worst_group_acc1"] == pytest.approx(min(expected.values()))
    assert result["f1_macro"] == pytest.approx(f1_score(labels, pred, average="macro", labels=np.unique(labels)))
    assert list(unpack_groups(result["per_sample"])[0]) == TEST_GROUPS


def test_webdataset_json_metadata_groups(tmp_path, tiny_arch, checkpoint, capsys):
    task = group_task(tmp_path, write_group_wds(tmp_path / "wds"))
    rc, err = run(capsys, tmp_path, task, f"tiny={tiny_arch}@{checkpoint}")
    assert rc == 0, err
    record = _record(tmp_path)
    assert record["task"]["main_metric"] == "worst_group_acc1"
    _check_group_record(record["results"]["zeroshot"])


def test_webdataset_npy_metadata_named_by_metadata_fields(tmp_path, tiny_arch, checkpoint, capsys):
    from evalbench.data import load_task_data

    root = write_group_wds(tmp_path / "wds", ext="npy")
    task = load_task_file(group_task(tmp_path, root, dataset={"metadata_fields": ["region", "year"]}))
    view = load_task_data(task, ["test"], tmp_path / "cache").views["test"]
    codes = {"north": "0", "south": "1", "east": "2"}
    assert list(view.groups) == [codes[g] for g in TEST_GROUPS]
    # Without names for the .npy entries, the error names the field to set.
    bare = load_task_file(group_task(tmp_path, root))
    with pytest.raises(Exception, match=r"grouped.yaml: dataset.metadata_fields: needed to read"):
        load_task_data(bare, ["test"], tmp_path / "cache")


def write_metadata_folder(root: Path, rows: list[tuple[str, str]] | None = None) -> Path:
    """conftest's image-folder layout (test split) and a metadata.csv of file_name, region."""
    for key, name, image in colour_samples("test"):
        (root / "test" / name).mkdir(parents=True, exist_ok=True)
        image.save(root / "test" / name / f"{key}.png")
    if rows is None:
        rows = [(f"test/{name}/{key}.png", group_of(key)) for key, name, _ in colour_samples("test")]
    lines = ["file_name,region"] + [f"{f},{g}" for f, g in rows]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_imagefolder_metadata_csv_groups(tmp_path, tiny_arch, checkpoint, capsys):
    task = group_task(tmp_path, write_metadata_folder(tmp_path / "images"), source="imagefolder")
    rc, err = run(capsys, tmp_path, task, f"tiny={tiny_arch}@{checkpoint}")
    assert rc == 0, err
    # The image folder lists files by class folder (blue, green, red), not by key: compare per
    # group through the ids the test wrote.
    result = _record(tmp_path)["results"]["zeroshot"]
    assert {g: v["n"] for g, v in result["per_group"].items()} == {"north": 2, "south": 7, "east": 3}
    assert result["main_score"] == min(v["acc1"] for v in result["per_group"].values())


def test_hf_columns_are_metadata(tmp_path):
    import datasets

    from evalbench.data import load_task_data

    rows = {"image": [], "label": [], "region": [], "year": []}
    for key, name, image in colour_samples("test"):
        rows["image"].append(image)
        rows["label"].append(CLASSES.index(name))
        rows["region"].append(group_of(key))
        rows["year"].append(2020)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES),
                                  "region": datasets.Value("string"), "year": datasets.Value("int32")})
    root = tmp_path / "hf"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(root))
    task = load_task_file(group_task(tmp_path, root, source="hf"))
    data = load_task_data(task, ["test"], tmp_path / "cache")
    assert list(data.views["test"].groups) == TEST_GROUPS
    assert data.sources["test"].metadata[0] == {"region": "north", "year": 2020}


# ---- bad input: one line naming the task file and field ---------------------------------------


def _one_error(capsys, tmp_path, task, model) -> str:
    rc, err = run(capsys, tmp_path, task, model)
    assert rc == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("evalbench: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_group_by_field_a_sample_lacks(tmp_path, tiny_arch, checkpoint, capsys):
    task = group_task(tmp_path, write_group_wds(tmp_path / "wds", drop="test-004"))
    line = _one_error(capsys, tmp_path, task, f"tiny={tiny_arch}@{checkpoint}")
    assert line.startswith(f"evalbench: error: {task.resolve()}: group_by: sample 'test/test-004'"), line
    assert "no field 'region'" in line


def test_metadata_naming_an_unknown_file(tmp_path, tiny_arch, checkpoint, capsys):
    rows = [(f"test/{name}/{key}.png", group_of(key)) for key, name, _ in colour_samples("test")]
    rows[3] = ("test/red/nope.png", "north")
    task = group_task(tmp_path, write_metadata_folder(tmp_path / "images", rows), source="imagefolder")
    line = _one_error(capsys, tmp_path, task, f"tiny={tiny_arch}@{checkpoint}")
    assert line.startswith(f"evalbench: error: {task.resolve()}: dataset.path: "), line
    assert "line 5: no image 'test/red/nope.png'" in line


def test_declared_group_with_no_samples(tmp_path, tiny_arch, checkpoint, capsys):
    task = group_task(tmp_path, write_group_wds(tmp_path / "wds"), groups=["north", "south", "east", "west"])
    line = _one_error(capsys, tmp_path, task, f"tiny={tiny_arch}@{checkpoint}")
    assert line == f"evalbench: error: {task.resolve()}: groups: group 'west' has no samples in split 'test'"


# ---- image association (WinoGAViL's layout) ---------------------------------------------------


def test_association_task_end_to_end(tmp_path, tiny_arch, checkpoint, capsys):
    import datasets

    from evalbench.association import cue_prompt

    rng = np.random.default_rng(3)
    images = [img for _, _, img in colour_samples("test")]
    rows = {"cue": [], "candidates": [], "candidate_images": [], "associations": []}
    for q, n in enumerate([5, 6, 10, 12]):
        names = [f"c{q}-{j}" for j in range(n)]
        rows["cue"].append(["Apple", "tree", "Ocean", "sun"][q])
        rows["candidates"].append(names)
        rows["candidate_images"].append([images[(q + j) % len(images)] for j in range(n)])
        rows["associations"].append(list(rng.choice(names, size=2 + q % 2, replace=False)))
    features = datasets.Features({"cue": datasets.Value("string"), "candidates": datasets.List(datasets.Value("string")),
                                  "candidate_images": datasets.List(datasets.Image()),
                                  "associations": datasets.List(datasets.Value("string"))})
    root = tmp_path / "wino"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(root))
    task = tmp_path / "wino.yaml"
    task.write_text(yaml.safe_dump({
        "name": "wino", "version": 1, "description": "association", "type": "association",
        "dataset": {"source": "hf", "path": str(root), "image_column": "candidate_images", "cue_column": "cue",
                    "candidates_column": "candidates", "answers_column": "associations"},
        "splits": {"test": "test"}, "main_metric": "jaccard_score_10-12"}))
    rc, err = run(capsys, tmp_path, task, f"tiny={tiny_arch}@{checkpoint}")
    assert rc == 0, err
    result = json.loads((tmp_path / "results" / "tiny" / "wino.json").read_text())["results"]["retrieval"]
    assert result["n"] == 4 and result["n_images"] == 5 + 6 + 10 + 12

    # The same scores computed here with open_clip alone.
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(tiny_arch.stem, pretrained=None)
    model.load_state_dict(torch.load(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer(tiny_arch.stem)
    jac = []
    with torch.no_grad():
        for q in range(4):
            img = model.encode_image(torch.stack([preprocess(i.convert("RGB")) for i in rows["candidate_images"][q]]),
                                     normalize=True)
            txt = model.encode_text(tokenizer([cue_prompt(rows["cue"][q])]), normalize=True)
            sims = (img @ txt.T).squeeze(1).numpy()
            truth = np.isin(rows["candidates"][q], rows["associations"][q])
            top = np.argsort(sims)[-truth.sum():]
            jac.append(jaccard_score(truth, np.isin(np.arange(len(truth)), top)))
    assert result["jaccard_score_10-12"] == pytest.approx((jac[2] + jac[3]) / 2, abs=1e-6)
    assert result["jaccard_score_5-6"] == pytest.approx((jac[0] + jac[1]) / 2, abs=1e-6)
    assert result["main_score"] == result["jaccard_score_10-12"]
    assert cue_prompt("Apple") == "An apple" and cue_prompt("tree") == "A tree"


# ---- reports ------------------------------------------------------------------------------------


def _fake_record(model: str, task: str, score: float, mode: str = "zeroshot", **result) -> dict:
    return {"schema_version": 2, "model": {"name": model, "spec": model}, "task": {"name": task, "hash": "h", "main_metric": "acc1"},
            "results": {mode: {"main_score": score, **result}}}


def test_suite_aggregates_only_for_complete_models():
    from evalbench.report import build_report

    suite = SuiteSpec(name="dc", tasks=["a", "b", "r"], aggregates={"AB": ["a", "b"], "Average": "all"})
    records = [
        _fake_record("m1", "a", 0.2), _fake_record("m1", "b", 0.4), _fake_record("m1", "r", 0.9, mode="retrieval"),
        _fake_record("m2", "a", 0.6), _fake_record("m2", "b", 0.8),
    ]
    table = build_report(records, {"dc": suite}).aggregates["dc"]
    assert table.at["m1", "AB"] == pytest.approx(0.3)
    assert table.at["m1", "Average"] == pytest.approx(0.5)  # retrieval pooled with zero-shot
    assert table.at["m2", "AB"] == pytest.approx(0.7)
    assert np.isnan(table.at["m2", "Average"])  # m2 lacks r: never a mean over a subset


def test_worst_group_interval_resamples_within_groups():
    from evalbench.report.stats import worst_group_bootstrap

    # Perfect groups stay perfect in every within-group resample: the interval is exact.
    groups = np.array(["a"] * 10 + ["b"] * 3)
    assert worst_group_bootstrap(np.ones(13, bool), groups).low == 1.0
    # A group of one wrong image stays at 0 in every within-group resample, so the interval is
    # [0, 0]; resampling all images together would often leave that image out and report group
    # "a"'s accuracy instead.
    correct = np.array([True] * 9 + [False] + [False])
    ci = worst_group_bootstrap(correct, np.array(["a"] * 10 + ["b"]), resamples=2000)
    assert (ci.low, ci.high) == (0.0, 0.0)
    # A group of 2 with 1 right draws 0, 1 or 2 right; both groups are perfect in a resample
    # with probability 0.9**10 * 0.25 = 0.087 > 2.5%, so the 95% interval reaches 1.0.
    correct = np.array([True] * 9 + [False] + [True, False])
    ci = worst_group_bootstrap(correct, np.array(["a"] * 10 + ["b"] * 2), resamples=2000)
    assert (ci.low, ci.high) == (0.0, 1.0)


def test_report_shows_worst_group_interval_and_per_group(tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 30)
    scores = rng.normal(size=(30, 6))
    groups = np.array(["g1"] * 10 + ["g2"] * 20)
    result = classification_metrics(y, scores, "worst_group_acc1", groups)
    result["per_sample"] = {**pack_predictions(scores, y), **pack_groups(scores, y, groups)}
    record = _fake_record("m", "t", result.pop("main_score"), **result)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "t.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["report", "--results-dir", str(tmp_path), "--per-group"]) == 0
    out = capsys.readouterr().out
    value = f"{result['worst_group_acc1'] * 100:.2f} ["
    assert value in out
    assert "per group" in out and "|      g1 |" in out and "|      g2 |" in out
    capsys.readouterr()
    assert main(["report", "--results-dir", str(tmp_path)]) == 0
    assert "g1" not in capsys.readouterr().out  # per-group table only on request
