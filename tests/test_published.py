"""Published figures: the shipped tables and ``evalbench.published.lookup``.

Every expected figure here was read by hand from ``evalbench/published/openclip_results.csv``
(and its two companions), not computed by the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evalbench.published import DATA_DIR, columns, lookup, openclip_checkpoint
from evalbench.tasks.loader import TaskRegistry

# ViT-B-32 + openai in openclip_results.csv, read by hand.
B32_OPENAI = {"imagenet1k": 0.6332, "caltech101": 0.8758, "cifar10": 0.8983, "pets": 0.8700,
              "voc2007-datacomp": 0.7640, "flickr30k": 0.6884, "mscoco-5k": 0.4028, "winogavil": 0.4125, "geode": 0.8217}

# The DataComp task names the table maps to (the brief's list of 38).
DATACOMP_TASKS = {
    "imagenet1k", "imagenetv2", "imagenet-sketch", "imagenet-a", "imagenet-r", "objectnet", "caltech101", "cifar10",
    "cifar100", "clevr-count", "country211", "dtd", "eurosat", "fgvc-aircraft", "food101", "gtsrb", "kitti-distance",
    "mnist", "flowers102", "pets", "voc2007-datacomp", "pcam", "rendered-sst2", "resisc45", "cars", "stl10", "sun397",
    "flickr30k", "mscoco-5k", "svhn", "imagenet-o", "clevr-distance", "iwildcam", "camelyon17", "fmow",
    "dollar-street", "geode", "winogavil",
}


# --- lookup --------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,figure", sorted(B32_OPENAI.items()))
def test_lookup_reads_the_published_figure(task, figure):
    assert lookup("ViT-B-32", "openai", task) == figure


def test_lookup_other_checkpoints():
    assert lookup("ViT-B-32", "laion2b_s34b_b79k", "imagenet1k") == 0.6656
    # QuickGELU and GELU builds of the laion400m weights are separate rows with different figures.
    assert lookup("ViT-B-32-quickgelu", "laion400m_e32", "imagenet1k") == 0.6293
    assert lookup("ViT-B-32", "laion400m_e32", "imagenet1k") == 0.6024


def test_lookup_compares_tags_as_open_clip_does():
    assert lookup("ViT-B-32", "OpenAI", "imagenet1k") == 0.6332
    assert lookup("ViT-B-32", "laion2b-s34b-b79k", "imagenet1k") == 0.6656


@pytest.mark.parametrize("arch,tag,task", [
    ("vit-b-32", "openai", "imagenet1k"),  # architecture names are case sensitive
    ("ViT-B-32", "no_such_tag", "imagenet1k"),
    ("no-such-arch", "openai", "imagenet1k"),
    ("ViT-B-32", "openai", "digits"),  # an evalbench task the table does not have
    ("ViT-B-32", "openai", "birdsnap"),
    ("ViT-B-32", "openai", "voc2007"),  # the CLIP paper's multi-label task: not DataComp's column
])
def test_lookup_unknown_is_none(arch, tag, task):
    assert lookup(arch, tag, task) is None


@pytest.mark.parametrize("spec,expected", [
    ("ViT-B-32@openai", ("ViT-B-32", "openai")),
    ("ViT-B-32-quickgelu@laion400m_e32", ("ViT-B-32-quickgelu", "laion400m_e32")),
    ("hf:openai/clip-vit-base-patch32", None),
    ("hf:openai/clip-vit-base-patch32@/ckpt/ft.pth", None),
    ("hf-hub:timm/ViT-B-16-SigLIP", None),
    ("ViT-B-32@/ckpt/epoch_32.pt", None),
    ("ViT-B-32@epoch_32.safetensors", None),
    ("my-arch.json@openai", None),
    ("ViT-B-32", None),
    ("py:mypkg.models:make", None),
])
def test_openclip_checkpoint_parses_only_arch_at_tag(spec, expected):
    assert openclip_checkpoint(spec) == expected


# --- the shipped data ----------------------------------------------------------------------------

def test_every_dataset_column_maps_to_one_datacomp_task():
    header = pd.read_csv(DATA_DIR / "openclip_results.csv", nrows=0).columns
    mapped = {c.column for c in columns().values()}
    assert len(header) - 5 == len(mapped) == 38  # name, pretrained, params, FLOPs, average
    assert mapped <= set(header)
    assert set(columns()) == DATACOMP_TASKS
    assert set(columns()) == set(TaskRegistry().suites()["datacomp"].tasks), "the table's columns are the suite"


def test_builtin_tasks_main_metric_is_the_published_metric():
    """The report compares a record's value of the published metric; for every built-in task
    the table maps to, that metric is its main score (VOC 2007 maps to voc2007-datacomp, acc1,
    not to the CLIP paper's multi-label voc2007)."""
    registry = TaskRegistry()
    differ = {}
    for task, column in columns().items():
        if task in registry.names():
            main_metric = registry.get(task).spec.main_metric
            if main_metric != column.metric:
                differ[task] = (main_metric, column.metric)
    assert set(columns()) <= set(registry.names())
    assert differ == {}


def test_the_three_tables_agree():
    """The classification table repeats the 38-dataset figures, and the Flickr and MSCOCO
    columns are the mean of the retrieval table's two recall@1 (the figure the report compares
    with mean_recall@1), and WinoGAViL its Jaccard score over 10-12 candidates."""
    key = ["name", "pretrained"]
    main_t = pd.read_csv(DATA_DIR / "openclip_results.csv").set_index(key)
    cls = pd.read_csv(DATA_DIR / "openclip_classification_results.csv").set_index(key)
    ret = pd.read_csv(DATA_DIR / "openclip_retrieval_results.csv").set_index(key)
    assert len(main_t) == len(cls) == len(ret) == 121
    shared = [c for c in cls.columns if c in main_t.columns and c not in ("params (M)", "FLOPs (B)")]
    assert len(shared) == 35
    pd.testing.assert_frame_equal(cls.loc[main_t.index, shared], main_t[shared])
    for name in ("Flickr", "MSCOCO"):
        mean_r1 = (ret[f"{name} image retr. R@1"] + ret[f"{name} text retr. R@1"]) / 2
        assert ((mean_r1.loc[main_t.index] - main_t[name]).abs() <= 0.0001 + 1e-9).all(), name
    assert (ret.loc[main_t.index, "WinoGAViL jaccard score 10-12"] == main_t["WinoGAViL"]).all()


def test_tables_ship_as_package_data():
    text = Path(__file__).resolve().parent.parent.joinpath("pyproject.toml").read_text()
    for pattern in ("published/*.csv", "published/*.yaml", "published/*.md", "published/LICENSE"):
        assert f'"{pattern}"' in text
    for name in ("openclip_results.csv", "openclip_classification_results.csv", "openclip_retrieval_results.csv",
                 "columns.yaml", "README.md", "LICENSE"):
        assert (DATA_DIR / name).is_file(), name
    assert "MIT" in (DATA_DIR / "README.md").read_text()
