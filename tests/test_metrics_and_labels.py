"""Metrics against scikit-learn or hand-computed cases; class subsets; multi-label tasks; leaks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from evalbench.cli import main
from evalbench.metrics import acc1, classification_metrics, map_11pt, mean_per_class_recall, roc_auc
from evalbench.records import read_record, unpack_predictions

from conftest import CLASSES, colour_samples, write_task


def test_map_11pt_hand_computed():
    # One class, ranking: pos, neg, pos, neg, pos -> precision at recall 1/3, 2/3, 1 is 1, 2/3, 3/5.
    y = np.array([[1], [0], [1], [0], [1]])
    s = np.array([[0.9], [0.8], [0.7], [0.6], [0.5]])
    # Interpolated precision for recall >= t: t=0..0.3 -> 1; t=0.4..0.6 -> 2/3; t=0.7..1.0 -> 3/5.
    expected = (4 * 1 + 3 * (2 / 3) + 4 * (3 / 5)) / 11
    assert map_11pt(y, s) == pytest.approx(expected)
    # A class without positives is left out of the mean, not counted as zero.
    y2 = np.hstack([y, np.zeros((5, 1), dtype=int)])
    assert map_11pt(y2, np.hstack([s, s])) == pytest.approx(expected)


def test_single_label_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    scores = rng.normal(size=(300, 7)) + 1.5 * np.eye(7)[y]
    assert acc1(y, scores) == pytest.approx(np.mean(scores.argmax(1) == y))
    assert mean_per_class_recall(y, scores) == pytest.approx(recall_score(y, scores.argmax(1), average="macro"))
    y2 = rng.integers(0, 2, 200)
    s2 = rng.normal(size=(200, 2)) + np.eye(2)[y2]
    assert roc_auc(y2, s2) == pytest.approx(roc_auc_score(y2, s2[:, 1] - s2[:, 0]))
    out = classification_metrics(y2, s2, "roc_auc")
    assert out["main_score"] == out["roc_auc"] and "acc5" not in out


def _colour_task(tmp_path, imagefolder_root, **fields):
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    return write_task(folder, fields.pop("name", "subset"), {"source": "imagefolder", "path": str(imagefolder_root)},
                      **fields)


def test_class_subset_restricts_logits(tmp_path, imagefolder_root, tiny_arch):
    """Five published classes, data and subset of three: the scores have three columns, and equal
    those of a task that lists only the three classes."""
    full = ["yellow", *CLASSES, "purple"]
    subset = _colour_task(tmp_path, imagefolder_root, name="subset", classnames=full, class_subset=[1, 2, 3])
    plain = _colour_task(tmp_path, imagefolder_root, name="plain")
    args = ["--model", f"tiny={tiny_arch}", "--results-dir", str(tmp_path / "r"), "--no-cache", "--no-progress"]
    assert main(["run", "--tasks", f"{subset},{plain}", *args]) == 0
    a = read_record(tmp_path / "r" / "tiny" / "subset.json")["results"]
    b = read_record(tmp_path / "r" / "tiny" / "plain.json")["results"]
    pred_a, _ = unpack_predictions(a["zeroshot"]["per_sample"])
    pred_b, _ = unpack_predictions(b["zeroshot"]["per_sample"])
    assert pred_a.max() < 3 and (pred_a == pred_b).all()
    assert a["zeroshot"]["acc1"] == b["zeroshot"]["acc1"]
    assert a["linear_probe"]["acc1"] == b["linear_probe"]["acc1"]


def test_data_outside_the_subset_is_an_error(tmp_path, imagefolder_root, tiny_arch, capsys):
    full = ["yellow", *CLASSES]
    task = _colour_task(tmp_path, imagefolder_root, classnames=full, class_subset=[0, 1, 2])
    rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks", str(task), "--results-dir", str(tmp_path / "r"),
               "--no-cache", "--no-progress", "--mode", "zeroshot"])
    assert rc == 2 and "class_subset" in capsys.readouterr().err


def test_duplicate_names_match_by_position_or_not_at_all(tmp_path, imagefolder_root, tiny_arch, capsys):
    """ImageNet publishes two classes named "missile": a repeated name can only be matched when the
    data's names equal the task's in order; by name it is ambiguous, and an error says so."""
    args = ["--model", f"tiny={tiny_arch}", "--results-dir", str(tmp_path / "r"), "--no-cache", "--no-progress",
            "--mode", "zeroshot"]
    # The folder's classes sorted: blue, green, red.
    in_order = _colour_task(tmp_path, imagefolder_root, name="in-order", classnames=["blue", "green", "red", "red"],
                            class_subset=[0, 1, 2])
    assert main(["run", "--tasks", str(in_order), *args]) == 0
    other_order = _colour_task(tmp_path, imagefolder_root, name="other-order",
                               classnames=["red", "green", "blue", "red"], class_subset=[0, 1, 2])
    assert main(["run", "--tasks", str(other_order), *args]) == 2
    assert "'red' names more than one class" in capsys.readouterr().err


def test_multilabel_task_runs_zeroshot_and_one_vs_rest_probe(tmp_path, tiny_arch):
    """An HF dataset whose label column is a list of ClassLabel: zero-shot and the probe report
    11-point mAP, and the zero-shot value equals a direct computation from the scores."""
    import datasets

    names = ["red", "green", "blue"]
    features = datasets.Features({"image": datasets.Image(), "labels": datasets.Sequence(datasets.ClassLabel(names=names))})
    splits = {}
    for split in ("train", "test"):
        rows = {"image": [], "labels": []}
        for i, (_, name, image) in enumerate(colour_samples(split)):
            rows["image"].append(image)
            rows["labels"].append(sorted({names.index(name), (names.index(name) + 1) % 3} if i % 2 else {names.index(name)}))
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    root = tmp_path / "ml"
    datasets.DatasetDict(splits).save_to_disk(str(root))
    folder = tmp_path / "tasks"
    folder.mkdir()
    write_task(folder, "multi", {"source": "hf", "path": str(root), "label_column": "labels"}, type="multilabel",
               main_metric="map_11pt", splits={"train": "train", "test": "test"})

    import evalbench.runners as runners

    seen = {}
    original = runners.classification_metrics
    runners.classification_metrics = lambda y, s, m, *rest: seen.setdefault("zs", (y, s)) and original(y, s, m, *rest)
    try:
        rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks-dir", str(folder), "--tasks", "multi",
                   "--results-dir", str(tmp_path / "r"), "--no-cache", "--no-progress"])
    finally:
        runners.classification_metrics = original
    assert rc == 0
    results = read_record(tmp_path / "r" / "tiny" / "multi.json")["results"]
    y, s = seen["zs"]
    assert y.shape == (12, 3) and y.sum() == 12 + 6
    assert results["zeroshot"]["main_score"] == pytest.approx(map_11pt(y, s))
    assert "map_11pt" in results["linear_probe"] and "acc1" not in results["linear_probe"]


def test_test_split_shared_with_train_is_a_leak(tmp_path, imagefolder_root, tiny_arch, capsys):
    task = _colour_task(tmp_path, imagefolder_root, splits={"train": "test", "test": "test"})
    rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks", str(task), "--results-dir", str(tmp_path / "r"),
               "--no-cache", "--no-progress"])
    assert rc == 2 and "shares images with splits.test" in capsys.readouterr().err


def test_builtin_tasks_never_test_on_training_data():
    """Every built-in task tests on a split of its own: test is never the train or val split, and
    a val fraction is carved out of train only."""
    from evalbench.tasks.loader import TaskRegistry

    registry = TaskRegistry()
    for name in registry.names():
        splits = registry.get(name).spec.splits
        assert splits.test not in {splits.train, splits.val}, name
