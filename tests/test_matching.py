"""Matching tasks (compositionality): metrics on hand-computed cases, the jsonl, webdataset and
HF layouts, end-to-end runs, one-line errors for bad items, and reports on the records."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from evalbench.cli import main
from evalbench.errors import EvalbenchError
from evalbench.metrics import caption_choice, macro_average, per_subset, winoground_outcomes
from evalbench.records import read_record, unpack_correct, unpack_subsets
from evalbench.sources.generated import render_shape
from evalbench.sources.jsonl import JsonlConfig, JsonlSource
from evalbench.tasks.loader import TaskFileError, load_task_file

# --- metrics, against hand-computed cases ---------------------------------------------------


def test_caption_choice_strict_with_a_tie_and_padding():
    ninf = -np.inf
    scores = np.array([
        [0.9, 0.1, ninf],  # right caption first and highest: correct
        [0.2, 0.5, ninf],  # the negative wins: wrong
        [0.4, 0.4, ninf],  # tie between the right caption and the negative: wrong, and a tie
        [0.1, 0.3, 0.2],   # three candidates, the right one (index 1) strictly highest: correct
        [0.3, 0.3, 0.5],   # right one (index 0) ties with another but a third wins: wrong, no tie
    ])
    label = np.array([0, 0, 1, 1, 0])
    correct, tie = caption_choice(scores, label)
    assert correct.tolist() == [True, False, False, True, False]
    assert tie.tolist() == [False, False, True, False, False]


def test_winoground_scores_as_the_paper_defines_them():
    # s[g, c, i]: caption c against image i; caption j belongs to image j.
    s = np.array([
        [[0.9, 0.1], [0.2, 0.8]],  # both diagonals win both ways: text, image, group
        [[0.5, 0.6], [0.4, 0.7]],  # image 0 prefers c0 (0.5 > 0.4), image 1 prefers c1 (0.7 > 0.6): text;
                                   # caption 0 prefers image 1 (0.6 > 0.5): not image
        [[0.5, 0.3], [0.6, 0.7]],  # caption 0 prefers image 0, caption 1 prefers image 1: image;
                                   # image 0 prefers c1 (0.6 > 0.5): not text
        [[0.5, 0.5], [0.1, 0.9]],  # caption 0 ties between the images: not image; text holds
    ])
    out = winoground_outcomes(s)
    assert out["text_score"].tolist() == [True, True, False, True]
    assert out["image_score"].tolist() == [True, False, True, False]
    assert out["group_score"].tolist() == [True, False, False, False]


def test_per_subset_and_macro_average():
    outcomes = {"acc": np.array([True, False, True, True, False]), "ties": np.array([0, 1, 0, 0, 0])}
    subsets = np.array(["b", "b", "a", "a", "a"])
    got = per_subset(outcomes, subsets)
    assert got == {"a": {"acc": 2 / 3, "ties": 0, "n": 3}, "b": {"acc": 0.5, "ties": 1, "n": 2}}
    assert macro_average(got, "acc") == pytest.approx((2 / 3 + 0.5) / 2)


# --- data in three layouts ------------------------------------------------------------------

COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "star"]
N_PER_SUBSET = 12


def _items(rng):
    """(key, shape, colour, captions, label, subset): a coloured shape against a caption that
    names another colour (replace-att) or another shape (replace-obj). The right caption comes
    first or second in turn, so a model that prefers a position scores 0.5."""
    out = []
    for subset in ("replace-att", "replace-obj"):
        for i in range(N_PER_SUBSET):
            shape, colour = SHAPES[i % 4], COLOURS[(i // 4 + i) % 4]
            if subset == "replace-att":
                wrong = f"a photo of a {COLOURS[(COLOURS.index(colour) + 1) % 4]} {shape}."
            else:
                wrong = f"a photo of a {colour} {SHAPES[(SHAPES.index(shape) + 1) % 4]}."
            right = f"a photo of a {colour} {shape}."
            label = i % 2
            captions = [right, wrong] if label == 0 else [wrong, right]
            out.append((f"{subset}-{i:02d}", shape, colour, captions, label, subset))
    return out


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same 24 items as jsonl, webdataset and HF data, a 2x2-group jsonl, and tasks over them."""
    import datasets

    root = tmp_path_factory.mktemp("matching")
    rng = np.random.default_rng(7)
    items = _items(rng)
    images = {key: render_shape(rng, shape, colour) for key, shape, colour, *_ in items}

    jsonl = root / "jsonl"
    (jsonl / "img").mkdir(parents=True)
    with open(jsonl / "test.jsonl", "w") as f:
        for key, _, _, captions, label, subset in items:
            images[key].save(jsonl / "img" / f"{key}.png")
            f.write(json.dumps({"image": f"img/{key}.png", "captions": captions, "label": label, "subset": subset}) + "\n")

    wds = root / "wds"
    (wds / "test").mkdir(parents=True)
    (wds / "test" / "nshards.txt").write_text("2\n")
    for n in range(2):
        with tarfile.open(wds / "test" / f"{n}.tar", "w") as tar:
            for key, _, _, captions, label, subset in items[n::2]:
                buf = io.BytesIO()
                images[key].save(buf, format="PNG")
                meta = json.dumps({"captions": captions, "label": label, "subset": subset}).encode()
                for name, data in ((f"{key}.png", buf.getvalue()), (f"{key}.json", meta)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    wds_order = [it for n in range(2) for it in items[n::2]]

    hf = root / "hf"
    rows = {"image": [images[it[0]] for it in items], "right": [it[3][it[4]] for it in items],
            "wrong": [it[3][1 - it[4]] for it in items], "kind": [it[5] for it in items]}
    features = datasets.Features({"image": datasets.Image(), "right": datasets.Value("string"),
                                  "wrong": datasets.Value("string"), "kind": datasets.Value("string")})
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(hf))

    groups = root / "groups"
    (groups / "img").mkdir(parents=True)
    with open(groups / "test.jsonl", "w") as f:
        for g in range(6):
            pair = [(SHAPES[g % 4], COLOURS[g % 4]), (SHAPES[(g + 1) % 4], COLOURS[(g + 2) % 4])]
            names = []
            for j, (shape, colour) in enumerate(pair):
                render_shape(rng, shape, colour).save(groups / "img" / f"{g}-{j}.png")
                names.append(f"img/{g}-{j}.png")
            captions = [f"a photo of a {colour} {shape}." for shape, colour in pair]
            f.write(json.dumps({"images": names, "captions": captions}) + "\n")

    tasks = root / "tasks"
    tasks.mkdir()
    base = {"version": 1, "description": "coloured shapes against hard negatives", "type": "matching",
            "splits": {"test": "test"}}
    specs = {
        "match-jsonl": {"dataset": {"source": "jsonl", "path": str(jsonl)}},
        "match-wds": {"dataset": {"source": "webdataset", "path": str(wds)}},
        "match-hf": {"dataset": {"source": "hf", "path": str(hf), "caption_columns": ["right", "wrong"],
                                 "label_column": None, "subset_column": "kind"}},
        "match-groups": {"dataset": {"source": "jsonl", "path": str(groups)}, "main_metric": "group_score"},
        # Two parts as subsets, each its own dataset (as SugarCrepe's seven hub copies).
        "match-parts": {"dataset": {"source": "jsonl", "path": str(jsonl)},
                        "subsets": {"first": {}, "second": {"path": str(groups)}}},
    }
    for name, spec in specs.items():
        (tasks / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **base, **spec}))
    return {"root": root, "tasks": tasks, "items": items, "wds_order": wds_order, "jsonl": jsonl, "groups": groups}


def run(layouts, tmp_path, models: list[str], tasks: str, *extra: str) -> int:
    args = ["run", "--tasks", tasks, "--tasks-dir", str(layouts["tasks"]), "--results-dir", str(tmp_path / "r"),
            "--cache-dir", str(tmp_path / "c"), "--no-progress", *extra]
    for m in models:
        args += ["--model", m]
    return main(args)


def test_jsonl_source_reads_items_groups_and_shares_images(layouts, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    render_shape(np.random.default_rng(0), "star", "red").save(folder / "a.png")
    render_shape(np.random.default_rng(1), "circle", "blue").save(folder / "b.png")
    (folder / "test.jsonl").write_text(
        json.dumps({"image": "a.png", "captions": ["x", "y", "z"], "label": 2, "subset": "s1"}) + "\n\n"
        + json.dumps({"image": "a.png", "captions": ["u", "v"], "label": 0}) + "\n"
        + json.dumps({"images": ["b.png", "a.png"], "captions": ["p", "q"]}) + "\n"
    )
    split = JsonlSource(JsonlConfig(source="jsonl", path=str(folder)), tmp_path, tmp_path).load_matching("test")
    assert [(it.images, it.captions, it.label, it.subset) for it in split.items] == [
        ((0,), ("x", "y", "z"), 2, "s1"),
        ((0,), ("u", "v"), 0, None),
        ((1, 0), ("p", "q"), None, None),
    ]
    assert split.ids == ["a.png", "b.png"] and len(split.dataset) == 2  # a.png is read once


def test_demo_model_on_hard_negatives(layouts, tmp_path):
    """The bundled trained checkpoint tells a coloured shape's caption from one with another colour
    or shape far above chance (0.5), per subset; the macro average is the main score."""
    assert run(layouts, tmp_path, ["demo-final"], "match-jsonl") == 0
    record = read_record(tmp_path / "r" / "demo-final" / "match-jsonl.json")
    assert set(record["results"]) == {"zeroshot"}  # no probe for matching tasks
    result = record["results"]["zeroshot"]
    per = result["per_subset"]
    assert set(per) == {"replace-att", "replace-obj"}
    assert all(per[s]["n"] == N_PER_SUBSET for s in per)
    assert result["main_score"] == pytest.approx((per["replace-att"]["acc"] + per["replace-obj"]["acc"]) / 2)
    distinct = {c for it in layouts["items"] for c in it[3]}
    assert result["n"] == 2 * N_PER_SUBSET and result["n_images"] == 2 * N_PER_SUBSET
    assert result["n_texts"] == len(distinct)  # each distinct caption is encoded once
    assert per["replace-att"]["acc"] >= 0.9, per
    assert per["replace-obj"]["acc"] >= 0.75, per
    correct = unpack_correct(result["per_sample"])
    assert correct.mean() == pytest.approx(result["acc"])
    subsets = np.array(result["per_sample"]["subsets"])[unpack_subsets(result["per_sample"])]
    assert subsets.tolist() == [it[5] for it in layouts["items"]]


def test_three_layouts_agree_and_a_rerun_reads_the_caches(layouts, tiny_arch, tmp_path):
    assert run(layouts, tmp_path, [f"tiny={tiny_arch}"], "match-jsonl,match-wds,match-hf") == 0
    results = {n: read_record(tmp_path / "r" / "tiny" / f"{n}.json")["results"]["zeroshot"]
               for n in ("match-jsonl", "match-wds", "match-hf")}
    first = results["match-jsonl"]
    for other in ("match-wds", "match-hf"):
        assert results[other]["per_subset"].keys() == first["per_subset"].keys()
        for s, values in first["per_subset"].items():
            assert results[other]["per_subset"][s]["acc"] == pytest.approx(values["acc"])
            assert results[other]["per_subset"][s]["n"] == values["n"]
    # The webdataset holds the items shard by shard: its per-item outcomes are a permutation.
    order = [layouts["items"].index(it) for it in layouts["wds_order"]]
    np.testing.assert_array_equal(unpack_correct(results["match-wds"]["per_sample"]),
                                  unpack_correct(first["per_sample"])[order])
    # Image features and caption embeddings are cached: a rerun never loads the model.
    assert run(layouts, tmp_path, [f"tiny={tiny_arch}"], "match-jsonl", "--overwrite") == 0
    again = read_record(tmp_path / "r" / "tiny" / "match-jsonl.json")
    assert again["provenance"]["model_loaded"] is False
    assert again["results"]["zeroshot"]["per_subset"] == first["per_subset"]


def test_winoground_groups_and_subsets_from_parts(layouts, tmp_path):
    assert run(layouts, tmp_path, ["demo-final"], "match-groups") == 0
    result = read_record(tmp_path / "r" / "demo-final" / "match-groups.json")["results"]["zeroshot"]
    assert set(result["per_subset"]) == {"all"} and result["per_subset"]["all"]["n"] == 6
    assert {"text_score", "image_score", "group_score"} <= set(result)
    assert result["main_score"] == result["group_score"]
    assert result["group_score"] <= min(result["text_score"], result["image_score"])
    assert result["text_score"] >= 0.8  # distinct colours and shapes: easy for the trained model


def test_a_part_per_subset_must_hold_one_kind_of_item(layouts, tmp_path, capsys):
    # "match-parts" merges a single-image part and a part of 2x2 groups: refused, one line.
    assert run(layouts, tmp_path, ["demo-final"], "match-parts") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "match-parts.yaml: dataset:" in errors[0] and "mix" in errors[0]


def test_subsets_name_the_parts(layouts, tmp_path):
    task = {"name": "two-parts", "version": 1, "description": "x", "type": "matching", "splits": {"test": "test"},
            "dataset": {"source": "jsonl", "path": str(layouts["jsonl"])},
            "subsets": {"part-a": {}, "part-b": {}}}
    path = tmp_path / "two-parts.yaml"
    path.write_text(yaml.safe_dump(task))
    assert main(["run", "--model", "demo-final", "--tasks", str(path), "--results-dir", str(tmp_path / "r"),
                 "--cache-dir", str(tmp_path / "c"), "--no-progress", "--limit", "5"]) == 0
    result = read_record(tmp_path / "r" / "demo-final" / "two-parts.json")["results"]["zeroshot"]
    assert {s: v["n"] for s, v in result["per_subset"].items()} == {"part-a": 5, "part-b": 5}
    # The same data twice with the same seeded --limit: the same items, the same scores.
    assert result["per_subset"]["part-a"]["acc"] == result["per_subset"]["part-b"]["acc"]


def test_builtin_tasks_read_local_copies_in_their_hub_layouts(tiny_arch, tmp_path):
    """sugarcrepe.yaml and aro.yaml, with each subset's path pointed at a local copy in the
    column layout of its hub dataset (HuggingFaceM4's SugarCrepe_*, gowitheflow's ARO-*)."""
    import datasets

    from evalbench.tasks.loader import BUILTIN_TASKS_DIR

    rng = np.random.default_rng(3)
    imgs = [render_shape(rng, "star", "red"), render_shape(rng, "circle", "blue")]
    right, wrong = ["a red star.", "a blue circle."], ["a blue star.", "a red circle."]
    sugar = {"image": imgs, "tested_labels": [[r, w] for r, w in zip(right, wrong)], "true_label": [0, 1]}
    sugar_features = datasets.Features({"image": datasets.Image(),
                                        "tested_labels": datasets.Sequence(datasets.Value("string")),
                                        "true_label": datasets.ClassLabel(names=sorted(right))})
    vg = {"image": imgs, "true_caption": right, "false_caption": wrong, "relation_name": ["on", "in"]}
    order = {"images": imgs, "correct_caption": right,
             **{f"hard_text_{k}": [f"{c} {k}" for c in wrong] for k in range(1, 5)}}
    layouts = {
        "sugarcrepe": {s: (sugar, sugar_features) for s in ("replace-obj", "replace-att", "replace-rel", "swap-obj",
                                                            "swap-att", "add-obj", "add-att")},
        "aro": {"vg-relation": (vg, None), "vg-attribution": (vg, None), "coco-order": (order, None),
                "flickr-order": (order, None)},
    }
    for task, parts in layouts.items():
        subsets = {}
        for subset, (rows, features) in parts.items():
            folder = tmp_path / task / subset
            datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(folder))
            subsets[subset] = {"path": str(folder)}
        (tmp_path / f"local-{task}.yaml").write_text(yaml.safe_dump(
            {"include": str(BUILTIN_TASKS_DIR / f"{task}.yaml"), "name": f"local-{task}", "subsets": subsets}))
    assert main(["run", "--model", f"tiny={tiny_arch}", "--tasks",
                 f"{tmp_path / 'local-sugarcrepe.yaml'},{tmp_path / 'local-aro.yaml'}",
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    for task, parts in layouts.items():
        result = read_record(tmp_path / "r" / "tiny" / f"local-{task}.json")["results"]["zeroshot"]
        assert {s: v["n"] for s, v in result["per_subset"].items()} == {s: 2 for s in parts}
        assert result["main_score"] == pytest.approx(np.mean([v["acc"] for v in result["per_subset"].values()]))
    aro = read_record(tmp_path / "r" / "tiny" / "local-aro.json")["results"]["zeroshot"]
    # 2 images per part (the same two pictures, in four parts) and every distinct caption once.
    assert aro["n_images"] == 8 and aro["n_texts"] == len(set(right + wrong) | {f"{c} {k}" for c in wrong
                                                                                 for k in range(1, 5)})


# --- bad input: one line naming the file and the field -----------------------------------------

BAD_LINES = {
    "no-candidates": ({"image": "a.png", "captions": [], "label": 0}, "captions"),
    "label-out-of-range": ({"image": "a.png", "captions": ["x", "y"], "label": 2}, "label"),
    "group-not-2x2": ({"images": ["a.png", "a.png"], "captions": ["x", "y", "z"]}, "images"),
    "missing-image": ({"image": "nope.png", "captions": ["x", "y"], "label": 0}, "image"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_items_are_one_line_errors(case, tmp_path, capsys):
    bad, field = BAD_LINES[case]
    folder = tmp_path / "data"
    folder.mkdir()
    render_shape(np.random.default_rng(0), "star", "red").save(folder / "a.png")
    good = {"image": "a.png", "captions": ["x", "y"], "label": 1}
    (folder / "test.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    task = tmp_path / "bad.yaml"
    task.write_text(yaml.safe_dump({"name": "bad", "version": 1, "description": "x", "type": "matching",
                                    "dataset": {"source": "jsonl", "path": "data"}, "splits": {"test": "test"}}))
    rc = main(["run", "--model", "demo-final", "--tasks", str(task), "--results-dir", str(tmp_path / "r"),
               "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert f"{folder / 'test.jsonl'}: line 2: {field}:" in errors[0]


def test_hf_items_name_dataset_and_row(tmp_path):
    import datasets

    from evalbench.sources.hf import HFConfig, HFSource

    img = render_shape(np.random.default_rng(0), "star", "red")
    table = datasets.Dataset.from_dict({"image": [img, img], "caps": [["a", "b"], []], "label": [0, 0]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "caps": datasets.Sequence(datasets.Value("string")),
                                                                   "label": datasets.Value("int64")}))
    datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "hf"))
    source = HFSource(HFConfig(source="hf", path="hf", caption_column="caps"), tmp_path, tmp_path)
    with pytest.raises(EvalbenchError, match=r"hf: row 1: captions: the item has no candidate captions"):
        source.load_matching("test")


def test_a_source_without_items_is_named(imagefolder_root, tmp_path, capsys):
    task = tmp_path / "folder.yaml"
    task.write_text(yaml.safe_dump({"name": "folder", "version": 1, "description": "x", "type": "matching",
                                    "dataset": {"source": "imagefolder", "path": str(imagefolder_root)},
                                    "splits": {"test": "test"}}))
    assert main(["run", "--model", "demo-final", "--tasks", str(task), "--results-dir", str(tmp_path / "r"),
                 "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "dataset.source: 'imagefolder' cannot hold matching items" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    ({"classnames": ["a", "b"]}, "take captions from the data"),
    ({"main_metric": "acc1"}, "main_metric: acc1 does not apply to a matching task"),
    ({"subsets": {"bad name": {}}}, "not a valid subset name"),
    ({"subsets": {"x": {"revision": 3}}}, "subsets.x"),
])
def test_spec_rejects(extra, message, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "version": 1, "description": "x", "type": "matching",
                                    "dataset": {"source": "jsonl", "path": "."}, "splits": {"test": "test"}, **extra}))
    with pytest.raises(TaskFileError, match=message):
        load_task_file(path)


def test_subsets_belong_to_matching_tasks(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "version": 1, "description": "x", "classnames": ["a", "b"],
                                    "templates": ["{c}"], "dataset": {"source": "jsonl", "path": "."},
                                    "splits": {"test": "test"}, "subsets": {"x": {}}}))
    with pytest.raises(TaskFileError, match="only matching tasks have subsets"):
        load_task_file(path)


# --- reports ----------------------------------------------------------------------------------


def test_report_shows_matching_results_with_paired_intervals(layouts, tiny_arch, tmp_path, capsys):
    assert run(layouts, tmp_path, ["demo-final", f"tiny={tiny_arch}"], "match-jsonl") == 0
    capsys.readouterr()
    assert main(["report", "--results-dir", str(tmp_path / "r"), "--format", "md"]) == 0
    md = capsys.readouterr().out
    demo = read_record(tmp_path / "r" / "demo-final" / "match-jsonl.json")["results"]["zeroshot"]
    assert "match-jsonl" in md and f"{demo['main_score'] * 100:.2f}" in md

    assert main(["report", "--results-dir", str(tmp_path / "r"), "--format", "csv"]) == 0
    long = pd.read_csv(io.StringIO(capsys.readouterr().out))
    demo_rows = long[(long.model == "demo-final") & (long.task == "match-jsonl")].set_index("metric")["value"]
    assert demo_rows["main_score"] == pytest.approx(demo["main_score"])
    assert demo_rows["replace-att/acc"] == pytest.approx(demo["per_subset"]["replace-att"]["acc"])

    assert main(["report", "--results-dir", str(tmp_path / "r"), "--format", "json", "--baseline", "tiny"]) == 0
    deltas = json.loads(capsys.readouterr().out)["modes"]["zeroshot"]["deltas"]
    row = next(d for d in deltas if d["task"] == "match-jsonl")
    tiny = read_record(tmp_path / "r" / "tiny" / "match-jsonl.json")["results"]["zeroshot"]
    assert row["delta"] == pytest.approx(demo["main_score"] - tiny["main_score"])
    # Two subsets: the interval is the bootstrap of the macro average, and it contains the delta.
    assert row["test"] == "bootstrap" and row["ci_low"] <= row["delta"] <= row["ci_high"]
