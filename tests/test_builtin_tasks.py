"""Every built-in task file against the published facts it claims to encode.

The expected values here are typed in from the publications (the CLIP paper and its
data/prompts.md, the ImageNet-A/R releases, the mirrors' classnames.txt), not computed from the
task files, so a wrong or reordered list in a YAML file fails a test. Offline and fast: nothing
is downloaded and no model is built.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evalbench.cli import main
from evalbench.data import normalise_name
from evalbench.matching import task_parts
from evalbench.tasks.loader import BUILTIN_TASKS_DIR, TaskRegistry
from evalbench.tasks.spec import MATCHING_METRICS

REGISTRY = TaskRegistry()
NAMES = REGISTRY.names()
SUITES = REGISTRY.suites()

# Class counts as published (CLIP paper Table 9 / data/prompts.md, dataset papers).
PUBLISHED_COUNTS = {
    "food101": 101, "cifar10": 10, "cifar100": 100, "birdsnap": 500, "sun397": 397, "cars": 196,
    "fgvc-aircraft": 100, "voc2007": 20, "dtd": 47, "pets": 37,
    "caltech101": 102,  # CLIP's 102 includes the BACKGROUND_Google class
    "flowers102": 102, "mnist": 10, "fer2013": 7, "stl10": 10, "eurosat": 10, "resisc45": 45,
    "gtsrb": 43, "kitti-distance": 4, "country211": 211, "pcam": 2, "ucf101": 101,
    "kinetics700": 700, "clevr-count": 8, "hateful-memes": 2, "rendered-sst2": 2,
    "imagenet1k": 1000, "imagenetv2": 1000, "imagenet-sketch": 1000,
}
SUBSET_COUNTS = {"imagenet-a": 200, "imagenet-r": 200, "imagenet-o": 200}
# Tasks whose class names come from the data at run time, with the reason.
NAMES_FROM_DATA = {"objectnet": 113}  # 9 of the 113 ObjectNet names could not be verified offline
# DataComp's WILDS and fairness tasks: class names *and* templates are those DataComp's mirror
# ships (classnames.txt, zeroshot_classification_templates.txt), which DataComp itself reads.
# Still exempt: CLIP_benchmark's en_classnames.json / en_zeroshot_classification_templates.json
# and DataComp's repository have no entry for them, and the mirrors' files could not be read
# offline. Class counts from DataComp's tasklist.yml (num_classes).
FROM_DATACOMP_MIRROR = {"iwildcam": 182, "camelyon17": 2, "fmow": 62, "dollar-street": 58, "geode": 40}

MAIN_METRIC = {
    "fgvc-aircraft": "mean_per_class_recall", "pets": "mean_per_class_recall",
    "caltech101": "mean_per_class_recall", "flowers102": "mean_per_class_recall",
    "hateful-memes": "roc_auc", "voc2007": "map_11pt", "voc2007-datacomp": "acc1", "pcam": "acc1", "cifar10": "acc1",
    "imagenet1k": "acc1", "imagenet-a": "acc1", "kinetics700": "acc1",
    # DataComp's tasklist.yml main_metric, under evalbench's names (aliases in the YAML files)
    "iwildcam": "f1_macro", "fmow": "worst_group_acc1", "dollar-street": "worst_group_acc5",
    "geode": "worst_group_acc1", "camelyon17": "acc1", "svhn": "acc1", "imagenet-o": "acc1",
    "clevr-distance": "acc1", "winogavil": "jaccard_score_10-12",
}
# DataComp's group fields (eval_utils/wilds_eval.py and fairness_eval.py evaluators).
GROUP_BY = {"fmow": "region", "dollar-street": "income_ds", "geode": "region", "camelyon17": "slide"}

IMAGENET_FAMILY = {"imagenet1k", "imagenetv2", "imagenet-sketch", "imagenet-a", "imagenet-r", "imagenet-o"}
# The only repeated names in CLIP's published ImageNet list (index -> WordNet synset):
# 657 n03773504 missile / 744 n04008634 projectile, missile;
# 836 n04355933 sunglass / 837 n04356056 sunglasses, dark glasses, shades.
IMAGENET_DUPLICATES = {"missile": [657, 744], "sunglasses": [836, 837]}

# Revisions that are a branch, not a commit: no full sha for these mirrors was found offline.
UNPINNED = {
    "food101", "cifar10", "cifar100", "sun397", "cars", "fgvc-aircraft", "dtd", "caltech101",
    "flowers102", "mnist", "stl10", "resisc45", "kitti-distance", "eurosat", "voc2007",
    "voc2007-datacomp",  # DataComp reads branch main of its mirror and pins nothing
    "flickr30k", "mscoco-5k", "sugarcrepe", "winoground",
}
SHA = re.compile(r"^[0-9a-f]{40}$")


def _task(name):
    return REGISTRY.get(name)


def _norm(names):
    return [normalise_name(n) for n in names]


def test_builtin_tasks_are_found():
    expected = set(PUBLISHED_COUNTS) | set(SUBSET_COUNTS) | set(NAMES_FROM_DATA)
    assert expected <= set(NAMES), sorted(expected - set(NAMES))


def test_cli_validate_exits_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "evalbench", "tasks", "validate", str(BUILTIN_TASKS_DIR)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_task_is_well_formed(name):
    spec = _task(name).spec
    assert spec.name == name
    if spec.type == "association":
        assert spec.classnames is None and spec.templates is None, "association tasks take cues from the data"
        return
    if name in FROM_DATACOMP_MIRROR:
        assert spec.classnames is None and spec.templates is None
        assert spec.dataset["path"].startswith("hf://datasets/djghosh/wds_")
        return
    if spec.type == "retrieval":
        assert spec.classnames is None and spec.templates is None, "retrieval tasks take captions from the data"
        assert spec.main_metric == "mean_recall@1"
        return
    if spec.type == "matching":
        assert spec.classnames is None and spec.templates is None, "matching tasks take captions from the data"
        assert spec.main_metric in MATCHING_METRICS
        return
    assert spec.templates, "every task names its own templates"
    assert all("{c}" in t for t in spec.templates)
    assert len(set(spec.templates)) == len(spec.templates), "repeated template"
    if spec.classnames is not None:
        duplicates = {}
        for i, n in enumerate(_norm(spec.classnames)):
            duplicates.setdefault(n, []).append(i)
        duplicates = {n: ix for n, ix in duplicates.items() if len(ix) > 1}
        if name in IMAGENET_FAMILY:
            assert duplicates == IMAGENET_DUPLICATES
            assert spec.label_match == "index" or spec.class_subset is not None
        else:
            assert duplicates == {}
    if spec.label_names is not None:
        assert len(set(_norm(spec.label_names))) == len(spec.label_names), "label_names not distinct"


@pytest.mark.parametrize("name", NAMES)
def test_hub_sources_have_a_revision(name):
    for _, ds in task_parts(_task(name)):  # the dataset, or each subset's merged over it
        on_hub = ds["source"] == "hf" or (ds["source"] == "webdataset" and str(ds["path"]).startswith("hf://"))
        if not on_hub:
            continue
        assert ds.get("revision"), "hub source without a revision"
        if name in UNPINNED:
            assert ds["revision"] == "main"
        else:
            assert SHA.match(ds["revision"]), f"revision {ds['revision']!r} is not a commit sha"


@pytest.mark.parametrize("name", sorted(PUBLISHED_COUNTS))
def test_class_counts_match_publication(name):
    spec = _task(name).spec
    assert spec.classnames is not None
    assert len(spec.classnames) == PUBLISHED_COUNTS[name]
    assert spec.class_subset is None


@pytest.mark.parametrize("name", sorted(SUBSET_COUNTS))
def test_subset_counts(name):
    spec = _task(name).spec
    assert len(spec.classnames) == 1000
    assert len(spec.class_subset) == SUBSET_COUNTS[name]
    assert spec.class_subset == sorted(spec.class_subset)
    subset_names = _norm(spec.classnames[i] for i in spec.class_subset)
    assert len(set(subset_names)) == len(subset_names), "names must be unique within the subset"


@pytest.mark.parametrize("name", sorted(NAMES_FROM_DATA))
def test_names_from_data(name):
    spec = _task(name).spec
    assert spec.classnames is None and spec.class_subset is None
    assert spec.templates and len(spec.templates) == 80


@pytest.mark.parametrize("name", sorted(MAIN_METRIC))
def test_main_metric(name):
    assert _task(name).spec.main_metric == MAIN_METRIC[name]


@pytest.mark.parametrize("name", sorted(GROUP_BY))
def test_group_fields_as_datacomp(name):
    spec = _task(name).spec
    assert spec.group_by == GROUP_BY[name]
    assert spec.group_by in spec.dataset["metadata_fields"]


def test_datacomp_metadata_fields():
    # The order of WILDS' metadata arrays, as DataComp's evaluators name them.
    assert _task("fmow").spec.dataset["metadata_fields"] == ["region", "year", "y"]
    assert _task("geode").spec.dataset["metadata_fields"] == ["region", "country"]
    assert _task("dollar-street").spec.dataset["metadata_fields"] == ["income_ds", "income_meta", "region"]
    assert _task("camelyon17").spec.dataset["metadata_fields"] == ["hospital", "slide", "y"]
    assert _task("iwildcam").spec.dataset["metadata_fields"][0] == "location"


def test_datacomp_new_tasks_as_published():
    # CLIP_benchmark's en_classnames.json / en_zeroshot_classification_templates.json entries.
    svhn = _task("svhn").spec
    assert svhn.classnames == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert svhn.templates[0] == "a photo of the number {c} written on a sign" and len(svhn.templates) == 6
    clevr = _task("clevr-distance").spec
    assert clevr.classnames == ["very nearby", "nearby", "near", "", "distant", "very distant"]
    assert clevr.templates == ["{c} shapes."] and clevr.label_match == "index"
    # ImageNet-O: CLIP_benchmark's imagenet_o_wnids, first and last, against timm's synset order.
    o = _task("imagenet-o").spec
    assert o.classnames[o.class_subset[0]] == "goldfish" and o.class_subset[-1] == 996
    timm_info = Path(pytest.importorskip("timm").__file__).parent / "data" / "_info"
    synsets = (timm_info / "imagenet_synsets.txt").read_text().split()
    assert [synsets[i] for i in (o.class_subset[0], o.class_subset[1], o.class_subset[-1])] == [
        "n01443537", "n01704323", "n13052670"]
    wino = _task("winogavil").spec
    assert wino.type == "association" and wino.dataset["path"] == "nlphuji/winogavil"


def test_multilabel_and_unavailable():
    assert _task("voc2007").spec.type == "multilabel"
    for name in ("birdsnap", "kinetics700", "hateful-memes", "voc2007"):
        assert _task(name).spec.unavailable
    for name in ("cifar10", "imagenet1k", "pets", "ucf101", "voc2007-datacomp"):
        assert _task(name).spec.unavailable is None


# clip_benchmark/datasets/voc2007.py, object_categories (CLIP_benchmark's order, which its
# voc2007 dataset and DataComp's mirror use).
CLIP_BENCHMARK_VOC = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]


def test_voc2007_as_datacomp_scores_it():
    dc = _task("voc2007-datacomp").spec
    assert dc.type == "classification" and dc.main_metric == "acc1"
    assert dc.classnames == CLIP_BENCHMARK_VOC and dc.label_match == "name"
    # en_zeroshot_classification_templates.json, key voc2007
    assert dc.templates == ["a photo of a {c}."]
    assert dc.dataset["path"] == "hf://datasets/djghosh/wds_voc2007_test"
    assert dc.splits.test == "test" and dc.splits.train is None
    clip = _task("voc2007").spec  # the CLIP paper's task: same names and prompt, another order
    assert sorted(clip.classnames) == sorted(dc.classnames) and clip.classnames != dc.classnames
    assert clip.templates == dc.templates


# ---- published names and orders --------------------------------------------------------------


def test_imagenet_names_and_templates():
    spec = _task("imagenet1k").spec
    c = spec.classnames
    assert (c[0], c[1], c[21], c[134], c[517], c[999]) == (
        "tench", "goldfish", "kite (bird of prey)", "crane bird", "construction crane", "toilet paper")
    assert len(spec.templates) == 80
    assert spec.templates[0] == "a bad photo of a {c}."
    assert spec.templates[-1] == "a tattoo of the {c}."
    assert {"itap of a {c}.", "a origami {c}.", "a {c} in a video game."} <= set(spec.templates)
    for name in IMAGENET_FAMILY | {"objectnet"}:
        assert _task(name).spec.templates == spec.templates


def test_imagenet_duplicates_against_wordnet_order():
    timm_info = Path(pytest.importorskip("timm").__file__).parent / "data" / "_info"
    synsets = (timm_info / "imagenet_synsets.txt").read_text().split()
    assert synsets == sorted(synsets) and len(synsets) == 1000
    assert [synsets[i] for i in (657, 744, 836, 837)] == ["n03773504", "n04008634", "n04355933", "n04356056"]


@pytest.mark.parametrize("name,first,names_at", [
    ("imagenet-a", [6, 11, 13, 15, 17, 22, 23, 27, 30, 37], {6: "stingray", 11: "goldfinch"}),
    ("imagenet-r", [1, 2, 4, 6, 8, 9, 11, 13, 22, 23], {1: "goldfish", 2: "great white shark"}),
])
def test_imagenet_subsets_as_published(name, first, names_at):
    spec = _task(name).spec
    assert spec.class_subset[:10] == first
    for i, n in names_at.items():
        assert i in spec.class_subset and spec.classnames[i] == n
    # The same indices as timm ships (an independent copy of the authors' lists), if installed.
    timm = pytest.importorskip("timm")
    letter = name[-1]
    path = Path(timm.__file__).parent / "data" / "_info" / f"imagenet_{letter}_indices.txt"
    assert spec.class_subset == [int(x) for x in path.read_text().split()]


def test_cifar10_and_cifar100():
    assert _task("cifar10").spec.classnames == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    c100 = _task("cifar100").spec.classnames
    assert (c100[0], c100[1], c100[41], c100[99]) == ("apple", "aquarium fish", "lawn mower", "worm")


def test_small_lists_as_published():
    assert _task("stl10").spec.classnames[7] == "monkey"
    assert _task("mnist").spec.classnames == [str(i) for i in range(10)]
    assert _task("pcam").spec.classnames == ["lymph node", "lymph node containing metastatic tumor tissue"]
    assert _task("hateful-memes").spec.classnames == ["meme", "hatespeech meme"]
    assert _task("rendered-sst2").spec.classnames == ["negative", "positive"]
    assert _task("kitti-distance").spec.templates == ["{c}"]
    assert _task("fer2013").spec.classnames == [
        "angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral"]
    assert _task("caltech101").spec.classnames[:3] == ["background", "off-center face", "centered face"]
    assert _task("country211").spec.classnames[:3] == ["Andorra", "United Arab Emirates", "Afghanistan"]
    assert _task("gtsrb").spec.classnames[14] == "stop"
    assert _task("sun397").spec.classnames[0] == "abbey" and _task("sun397").spec.classnames[-1] == "youth hostel"
    assert _task("cars").spec.classnames[0] == "AM General Hummer SUV 2000"
    assert _task("fgvc-aircraft").spec.classnames[0] == "707-320"
    kin = _task("kinetics700").spec.classnames
    assert kin[0] == "abseiling" and kin[-1] == "zumba" and kin == sorted(kin, key=str.lower)


# Data orders of the mirrors' classnames.txt (CLIP_benchmark's names, the datasets' own label order).
EUROSAT_DATA = [
    "annual crop land", "forest", "brushland or shrubland", "highway or road",
    "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
    "residential buildings or homes or apartments", "river", "lake or sea",
]
PETS_DATA = [
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle", "Bengal",
    "Birman", "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau", "English Cocker Spaniel",
    "English Setter", "German Shorthaired", "Great Pyrenees", "Havanese", "Japanese Chin", "Keeshond",
    "Leonberger", "Maine Coon", "Miniature Pinscher", "Newfoundland", "Persian", "Pomeranian", "Pug",
    "Ragdoll", "Russian Blue", "Saint Bernard", "Samoyed", "Scottish Terrier", "Shiba Inu", "Siamese",
    "Sphynx", "Staffordshire Bull Terrier", "Wheaten Terrier", "Yorkshire Terrier",
]
CLEVR_DATA = ["three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _data_to_task(spec, data_names):
    """Where each data label lands among the task's classes, matching by label_names."""
    where = {n: i for i, n in enumerate(_norm(spec.label_names))}
    return [where[n] for n in _norm(data_names)]


@pytest.mark.parametrize("name,data_names,expected", [
    # data label -> CLIP class index, read off the two published lists
    ("eurosat", EUROSAT_DATA, [7, 0, 6, 9, 8, 4, 1, 2, 3, 5]),
    ("clevr-count", CLEVR_DATA, [1, 2, 3, 4, 5, 6, 7, 0]),
    ("pets", PETS_DATA, [0, 12, 13, 14, 15, 1, 2, 3, 16, 4, 17, 5, 18, 19, 20, 21, 22, 23, 24, 25,
                         6, 26, 27, 7, 28, 29, 8, 9, 30, 31, 32, 33, 10, 11, 34, 35, 36]),
])
def test_label_names_map_published_orders(name, data_names, expected):
    spec = _task(name).spec
    assert spec.label_names is not None, "the mapping must be explicit"
    assert spec.label_match == "name"
    assert _data_to_task(spec, data_names) == expected


def test_clip_orders_differ_from_data_orders():
    # Guards the reason label_names exist: CLIP's published orders are not the data's.
    assert _task("eurosat").spec.classnames[0] == "forest"
    assert _task("clevr-count").spec.classnames[0] == "10"
    assert _task("pets").spec.classnames[12] == "american bulldog"


# ---- compositionality benchmarks (matching tasks) -----------------------------------------------

# Subsets as the publications name them: SugarCrepe's Table 2 (replace/swap/add x obj/att/rel),
# ARO's four datasets; the hub copies each subset reads, and the commits MTEB pins for ARO.
SUGARCREPE_PARTS = {
    "replace-obj": "HuggingFaceM4/SugarCrepe_replace_obj", "replace-att": "HuggingFaceM4/SugarCrepe_replace_att",
    "replace-rel": "HuggingFaceM4/SugarCrepe_replace_rel", "swap-obj": "HuggingFaceM4/SugarCrepe_swap_obj",
    "swap-att": "HuggingFaceM4/SugarCrepe_swap_att", "add-obj": "HuggingFaceM4/SugarCrepe_add_obj",
    "add-att": "HuggingFaceM4/SugarCrepe_add_att",
}
ARO_PARTS = {
    "vg-relation": ("gowitheflow/ARO-Visual-Relation", "3867ad4f46a1ac2e63be034d1fc77dd8c2ef7209"),
    "vg-attribution": ("gowitheflow/ARO-Visual-Attribution", "18f7e01358d91df599d723f00e16a18640e19398"),
    "coco-order": ("gowitheflow/ARO-COCO-order", "853ec8757226585a38a80886c51fe0f3f268787c"),
    "flickr-order": ("gowitheflow/ARO-Flickr-Order", "1f9485f69c87947812378a1aedf86410c86a0aa8"),
}


def test_compositionality_tasks_as_published():
    sugar = dict(task_parts(_task("sugarcrepe")))
    assert {k: v["path"] for k, v in sugar.items()} == SUGARCREPE_PARTS
    assert all(v["caption_column"] == "tested_labels" and v["label_column"] is None for v in sugar.values())
    aro = dict(task_parts(_task("aro")))
    assert {k: (v["path"], v["revision"]) for k, v in aro.items()} == ARO_PARTS
    assert len(aro["coco-order"]["caption_columns"]) == 5 and len(aro["vg-relation"]["caption_columns"]) == 2
    wino = _task("winoground").spec
    assert wino.unavailable and wino.main_metric == "group_score" and wino.subsets is None
    assert wino.dataset["image_columns"] == ["image_0", "image_1"]
    assert wino.dataset["caption_columns"] == ["caption_0", "caption_1"]
    assert set(SUITES["compositionality"].tasks) == {"sugarcrepe", "winoground", "aro"}


# ---- suites -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suite_tasks_exist(suite):
    tasks = SUITES[suite].tasks
    assert len(set(tasks)) == len(tasks)
    assert set(tasks) <= set(NAMES), sorted(set(tasks) - set(NAMES))


DATACOMP_38 = {
    "caltech101", "cifar10", "cifar100", "clevr-count", "clevr-distance", "country211", "dtd", "eurosat",
    "fgvc-aircraft", "food101", "gtsrb", "imagenet1k", "imagenet-sketch", "imagenetv2", "imagenet-a",
    "imagenet-o", "imagenet-r", "kitti-distance", "mnist", "objectnet", "flowers102", "pets", "voc2007-datacomp",
    "pcam", "rendered-sst2", "resisc45", "cars", "stl10", "sun397", "svhn", "flickr30k", "mscoco-5k",
    "winogavil", "iwildcam", "camelyon17", "fmow", "dollar-street", "geode",
}


def test_datacomp_suite_and_aggregates():
    suite = SUITES["datacomp"]
    assert len(suite.tasks) == 38 and set(suite.tasks) == DATACOMP_38
    agg = suite.aggregate_tasks()
    assert list(agg) == ["ImageNet", "ImageNet dist. shifts", "VTAB", "Retrieval", "Average"]
    assert agg["ImageNet"] == ["imagenet1k"]
    # aggregate_scores.py's DATASET_GROUPS, under evalbench's task names
    assert set(agg["ImageNet dist. shifts"]) == {
        "imagenet-sketch", "imagenetv2", "imagenet-a", "imagenet-o", "imagenet-r", "objectnet"}
    assert set(agg["VTAB"]) == {
        "caltech101", "cifar100", "clevr-count", "clevr-distance", "dtd", "eurosat", "kitti-distance",
        "flowers102", "pets", "pcam", "resisc45", "svhn", "sun397"}
    assert set(agg["Retrieval"]) == {"flickr30k", "mscoco-5k", "winogavil"}
    assert set(agg["Average"]) == DATACOMP_38


def test_suite_contents():
    assert len(SUITES["clip-27"].tasks) == 27
    assert set(SUITES["clip-27"].tasks) == set(PUBLISHED_COUNTS) - {"imagenetv2", "imagenet-sketch"}
    assert set(SUITES["imagenet-robustness"].tasks) == (IMAGENET_FAMILY - {"imagenet-o"}) | {"objectnet"}
    quick = SUITES["quick"].tasks
    assert 4 <= len(quick) <= 5
    assert not any(_task(n).spec.unavailable for n in quick)


# ---- the DataComp aggregates from hand-made records --------------------------------------------

# Flickr, MSCOCO and WinoGAViL are scored by retrieval-style runs (mode `retrieval`).
DATACOMP_RETRIEVAL_MODE = {"flickr30k", "mscoco-5k", "winogavil"}
VTAB_13 = {"caltech101", "cifar100", "clevr-count", "clevr-distance", "dtd", "eurosat", "kitti-distance",
           "flowers102", "pets", "pcam", "resisc45", "svhn", "sun397"}


def _write_datacomp_records(results: Path, scores: dict[str, float]) -> None:
    for task, score in scores.items():
        metric = _task(task).spec.main_metric
        mode = "retrieval" if task in DATACOMP_RETRIEVAL_MODE else "zeroshot"
        record = {
            "schema_version": 2,
            "model": {"name": "m", "spec": "m"},
            "task": {"name": task, "version": "1", "hash": f"h-{task}", "main_metric": metric},
            "results": {mode: {metric: score, "main_score": score, "n": 100}},
        }
        (results / "m").mkdir(parents=True, exist_ok=True)
        (results / "m" / f"{task}.json").write_text(json.dumps(record))


def _aggregates(results: Path, capsys) -> dict[str, float]:
    capsys.readouterr()
    assert main(["report", "--results-dir", str(results), "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    rows = table[table.metric == "aggregate"]
    return {r.task: r.value for r in rows.itertuples()}


def test_datacomp_average_over_38_fills_from_records(tmp_path, capsys):
    rng = np.random.default_rng(17)
    scores = {task: round(float(rng.uniform(0.05, 0.95)), 4) for task in sorted(DATACOMP_38)}
    _write_datacomp_records(tmp_path / "results", scores)
    agg = _aggregates(tmp_path / "results", capsys)
    assert agg["datacomp:Average"] == pytest.approx(sum(scores.values()) / 38, abs=1e-12)
    assert agg["datacomp:ImageNet"] == pytest.approx(scores["imagenet1k"], abs=1e-12)
    assert agg["datacomp:VTAB"] == pytest.approx(sum(scores[t] for t in VTAB_13) / 13, abs=1e-12)
    retrieval = [scores["flickr30k"], scores["mscoco-5k"], scores["winogavil"]]
    assert agg["datacomp:Retrieval"] == pytest.approx(sum(retrieval) / 3, abs=1e-12)


def test_datacomp_average_needs_the_datacomp_voc(tmp_path, capsys):
    # With the CLIP paper's multi-label VOC 2007 in place of DataComp's, 37 of 38: no average.
    rng = np.random.default_rng(17)
    scores = {task: round(float(rng.uniform(0.05, 0.95)), 4) for task in sorted(DATACOMP_38 - {"voc2007-datacomp"})}
    scores["voc2007"] = 0.5
    _write_datacomp_records(tmp_path / "results", scores)
    agg = _aggregates(tmp_path / "results", capsys)
    assert "datacomp:Average" not in agg
    assert agg["datacomp:ImageNet"] == pytest.approx(scores["imagenet1k"], abs=1e-12)
